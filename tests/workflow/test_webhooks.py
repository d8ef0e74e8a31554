"""Webhooks in the domain: signatures, the retry schedule, the address checks, and deliveries
to a real HTTP receiver on loopback (the queue in immediate mode, retries stepped through)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from scans import scan_of
from sqlalchemy import select
from webhook_receiver import webhook_receiver

from workflow import convert, jobs
from workflow import envelopes as env
from workflow import webhooks as wh
from workflow.accounts import create_user
from workflow.letters import create_letter, generate_document, pending_documents
from workflow.models import Envelope, User
from workflow.seal import load_or_create_sealer

SECRET_KEY = "a test secret key that is long enough for webhooks"
KEY = SECRET_KEY.encode()
SECRET = "whsec_test_0123456789abcdef"
STAFF = env.Actor("ann@example.com", "10.0.0.1", "pytest staff browser")
SIGNER = env.Actor("signer", "203.0.113.7", "pytest signer browser")
BASE_URL = "https://sign.example.com"


@pytest.fixture(autouse=True)
def _one_libreoffice(converter, monkeypatch):
    monkeypatch.setattr(convert, "_default", converter)


@pytest.fixture(scope="module")
def sealer(tmp_path_factory):
    return load_or_create_sealer(tmp_path_factory.mktemp("seal"))


@pytest.fixture()
def runtime(database, converter, sealer):
    """The queue in immediate mode with a runtime whose webhooks may reach loopback and give
    up after half a second."""
    rt = jobs.Runtime(database, converter=converter, sealer=sealer, base_url=BASE_URL,
                      settings={"SECRET_KEY": SECRET_KEY, wh.ALLOW_PRIVATE_SETTING: True,
                                wh.TIMEOUT_SETTING: 0.5})
    with jobs.immediate(rt):
        yield rt


def register(database, url, events, *, secret=SECRET, allow_private=True, resolve=None):
    with database.transaction() as session:
        endpoint, _ = wh.create_endpoint(session, url, events, secret, key=KEY,
                                         by="admin@example.com", allow_private=allow_private,
                                         resolve=resolve)
        return endpoint.id


def deliveries(database, endpoint_id=None):
    with database.transaction() as session:
        query = select(wh.WebhookDelivery).order_by(wh.WebhookDelivery.id)
        if endpoint_id is not None:
            query = query.where(wh.WebhookDelivery.endpoint_id == endpoint_id)
        return [wh.delivery_record(session, d, with_body=True) for d in session.scalars(query)]


def new_letter(database, terms, *, generate=False, converter=None):
    with database.transaction() as session:
        user = session.scalar(select(User).where(User.email == "ann@example.com")) or \
            create_user(session, "ann@example.com", "a long password")
        letter_id = create_letter(session, "separation_letter", terms, user).id
        pending = pending_documents(session) if generate else []
    for document_id in pending:
        generate_document(database, document_id, converter)
    return letter_id


# --- signatures ------------------------------------------------------------------------------

def test_a_signature_verifies_only_with_its_secret_body_and_a_recent_time():
    body = '{"id":"e1","type":"letter.created"}'
    now = 1_800_000_000
    header = wh.signature_header(SECRET, now, body)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert wh.verify_signature(SECRET, header, body, now)
    assert wh.verify_signature(SECRET, header, body.encode(), now + 300)
    assert wh.verify_signature(SECRET, header, body, now - 300)  # a receiver's clock behind
    assert not wh.verify_signature(SECRET, header, body, now + 301)  # too old: a replay
    assert not wh.verify_signature(SECRET, header, body, now - 301)
    assert not wh.verify_signature("whsec_another_secret_0000", header, body, now)
    assert not wh.verify_signature(SECRET, header, body.replace("created", "executed"), now)
    assert not wh.verify_signature(SECRET, header.replace(f"t={now}", f"t={now + 1}"), body,
                                   now)
    for broken in ("", "garbage", f"t={now}", header.split(",")[1], f"t=x,{header[13:]}"):
        assert not wh.verify_signature(SECRET, broken, body, now)
    # Two v1 values (a secret being changed): one matching is enough.
    assert wh.verify_signature(SECRET, f"{header},v1={'0' * 64}", body, now)
    assert wh.verify_signature(SECRET, header, body, now + 600, tolerance=600)


def test_the_retry_schedule_starts_within_a_minute_doubles_to_two_hours_and_stops_at_24():
    assert [wh.retry_delay(n) for n in range(1, 11)] == [
        30, 60, 120, 240, 480, 960, 1920, 3840, 7200, 7200]
    offsets = wh.retry_schedule()
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert offsets[:4] == [0, 30, 90, 210]
    assert gaps[:9] == [30, 60, 120, 240, 480, 960, 1920, 3840, 7200]
    assert set(gaps[8:]) == {7200}
    assert offsets[-1] <= 24 * 3600 < offsets[-1] + 7200
    assert len(offsets) == 19
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert wh.next_attempt_at(start, start + dt.timedelta(hours=23), 12) is None
    assert wh.next_attempt_at(start, start, 1) == start + dt.timedelta(seconds=30)


# --- addresses -------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:8080/hook", "a loopback address"),
    ("https://10.1.2.3/hook", "a private address"),
    ("http://192.168.1.20/", "a private address"),
    ("http://169.254.169.254/latest/meta-data", "a link-local address"),
    ("http://[::1]:9000/", "a loopback address"),
    ("http://[fe80::1]/", "a link-local address"),
    ("http://[fc00::5]/", "a private address"),
    ("http://0.0.0.0/", "an unspecified address"),
    ("http://224.0.0.9/", "a multicast address"),
    ("http://240.0.0.1/", "a reserved address"),
    ("http://[::ffff:10.0.0.1]/", "a private address inside an IPv6 address"),
    ("http://[::ffff:127.0.0.1]/", "a loopback address inside an IPv6 address"),
    ("http://[2002:a00:1::1]/", "a private address inside an IPv6 address"),
    ("http://100.64.0.1/", "not a public address"),
    ("http://2130706433/", "a loopback address"),  # 127.0.0.1 written as one number
    ("http://localhost:5000/hook", "localhost resolves to"),
])
def test_endpoints_on_non_public_addresses_are_refused_naming_the_url(database, url, words):
    with database.transaction() as session, pytest.raises(wh.WebhookError) as caught:
        wh.create_endpoint(session, url, ["*"], SECRET, key=KEY, by="a", allow_private=False)
    assert caught.value.field == "url" and words in caught.value.errors["url"]
    assert "COUNTERPART_WEBHOOK_ALLOW_PRIVATE" in caught.value.errors["url"]
    with database.transaction() as session:
        assert wh.list_endpoints(session) == []


def test_a_host_name_is_checked_after_resolving_it():
    names = {"hooks.example.test": ["93.184.216.34"],
             "sneaky.example.test": ["93.184.216.34", "10.0.0.7"]}

    def resolve(host, _port):
        return names[host]

    assert wh.check_url("https://hooks.example.test/in", resolve=resolve) == \
        "https://hooks.example.test/in"
    with pytest.raises(wh.WebhookError, match="sneaky.example.test resolves to 10.0.0.7, which "
                                              "is a private address"):
        wh.check_url("https://sneaky.example.test/in", resolve=resolve)
    assert wh.check_url("https://93.184.216.34/in") == "https://93.184.216.34/in"
    # Allowed on purpose: nothing is checked.
    assert wh.check_url("http://127.0.0.1:9/", allow_private=True) == "http://127.0.0.1:9/"


@pytest.mark.parametrize(("url", "events", "secret", "field", "words"), [
    ("ftp://example.com/", ["*"], SECRET, "url", "https:// or http://"),
    ("https://user:pw@93.184.216.34/", ["*"], SECRET, "url", "user name or password"),
    ("", ["*"], SECRET, "url", "is required"),
    ("https://93.184.216.34:99999/", ["*"], SECRET, "url", "port"),
    ("https://93.184.216.34/", [], SECRET, "events", "is required"),
    ("https://93.184.216.34/", ["letter.signed"], SECRET, "events", "'letter.signed' is not"),
    ("https://93.184.216.34/", ["*"], "short", "secret", "at least 16"),
    ("https://93.184.216.34/", ["*"], "has a space in it 123", "secret", "space"),
])
def test_each_refusal_names_its_field(database, url, events, secret, field, words):
    with database.transaction() as session, pytest.raises(wh.WebhookError) as caught:
        wh.create_endpoint(session, url, events, secret, key=KEY, by="a")
    assert caught.value.field == field and words in caught.value.errors[field]


def test_the_secret_is_kept_encrypted_and_shown_only_by_its_last_four_characters(database):
    with database.transaction() as session:
        endpoint, shown = wh.create_endpoint(session, "https://93.184.216.34/", ["*"], SECRET,
                                             key=KEY, by="a")
        assert shown is None  # given by the administrator: not shown back
        assert SECRET not in endpoint.secret_sealed
        assert wh.unseal_secret(endpoint.secret_sealed, KEY) == SECRET
        assert wh.endpoint_record(endpoint)["secret_hint"] == SECRET[-4:]
        assert SECRET not in json.dumps(wh.endpoint_record(endpoint))
        with pytest.raises(Exception, match="secret key"):
            wh.unseal_secret(endpoint.secret_sealed, b"another key entirely, 32+ chars")
        made, shown = wh.create_endpoint(session, "https://93.184.216.34/", ["*"], None,
                                         key=KEY, by="a")
        assert shown and shown.startswith("whsec_") and len(shown) > 40
        assert wh.unseal_secret(made.secret_sealed, KEY) == shown


# --- deliveries ------------------------------------------------------------------------------

def test_a_failing_then_answering_receiver_gets_the_same_event_until_it_answers(
        database, runtime, reference_terms):
    with webhook_receiver([503, "timeout", 200]) as receiver:
        endpoint_id = register(database, f"{receiver.url}/in", ["letter.created"])
        started = time.time()
        letter_id = new_letter(database, reference_terms)
        # The first attempt ran when the event's dispatch committed: 503, retried in 30 s.
        [first] = deliveries(database, endpoint_id)
        assert first["status"] == "pending" and first["attempts"] == 1
        assert [(a["number"], a["status_code"], a["error"], a["outcome"])
                for a in first["log"]] == [(1, 503, "HTTP 503", "failed")]
        retry_at = dt.datetime.fromisoformat(first["next_attempt_at"])
        assert 25 <= retry_at.timestamp() - started <= 40
        assert jobs.run_due(dt.datetime.now(dt.UTC)) == 0  # not due yet
        assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=31)) == 1
        [second] = deliveries(database, endpoint_id)
        assert second["status"] == "pending"
        assert second["log"][1]["error"] == "no answer within 0.5 seconds"
        assert second["log"][1]["status_code"] is None
        assert second["log"][1]["duration_ms"] >= 450
        retry_at = dt.datetime.fromisoformat(second["next_attempt_at"])
        assert 55 <= (retry_at - dt.datetime.fromisoformat(
            second["log"][1]["started_at"])).total_seconds() <= 62
        assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=95)) == 1
        [done] = deliveries(database, endpoint_id)
        assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(days=2)) == 0  # none left
    assert done["status"] == "delivered" and done["attempts"] == 3
    assert done["next_attempt_at"] is None and done["delivered_at"]
    assert [(a["number"], a["status_code"], a["outcome"]) for a in done["log"]] == [
        (1, 503, "failed"), (2, None, "failed"), (3, 200, "delivered")]
    assert [a["retry_at"] is not None for a in done["log"]] == [True, True, False]
    assert len(receiver.requests) == 3
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1 and bodies == {done["body"].encode()}
    payload = receiver.requests[0].json()
    assert payload["id"] == done["event_id"] and payload["type"] == "letter.created"
    assert payload["letter"]["id"] == letter_id
    assert payload["letter"]["url"] == f"{BASE_URL}/api/letters/{letter_id}"
    assert payload["letter"]["terms"]["company_name"] == reference_terms["company_name"]
    assert payload["envelope"] is None and payload["counterpart"] is None
    for request in receiver.requests:
        assert request.path == "/in"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Counterpart-Event-Id"] == payload["id"]
        header = request.headers["Counterpart-Signature"]
        assert wh.verify_signature(SECRET, header, request.body, time.time())
        assert not wh.verify_signature("whsec_not_the_secret_000", header, request.body,
                                       time.time())
        signed_at = int(header.split(",")[0].removeprefix("t="))
        assert abs(signed_at - request.at) < 5  # each attempt signs with its own time
    assert [r.headers["Counterpart-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert not jobs.recent_errors() or all(
        "webhook" not in name for name, _ in jobs.recent_errors())


def test_a_job_run_twice_attempts_once(database, runtime, reference_terms):
    with webhook_receiver([500]) as receiver:
        endpoint_id = register(database, receiver.url, ["*"])
        new_letter(database, reference_terms)
        [delivery] = deliveries(database, endpoint_id)
        settings = wh.delivery_settings(runtime.settings)
        # The job that made attempt 1 runs again (a retry, or a takeover): nothing happens.
        assert wh.attempt_delivery(database, delivery["id"], 0, settings).outcome == "skipped"
        assert len(receiver.requests) == 1
        second = wh.attempt_delivery(database, delivery["id"], 1, settings)
        assert second.outcome == "delivered" and second.number == 2
        assert wh.attempt_delivery(database, delivery["id"], 1, settings).outcome == "skipped"
    assert len(receiver.requests) == 2


def test_attempts_stop_after_24_hours_and_the_delivery_fails(database, runtime,
                                                              reference_terms):
    with webhook_receiver([502] * 5) as receiver:
        endpoint_id = register(database, receiver.url, ["letter.created"])
        new_letter(database, reference_terms)
        [delivery] = deliveries(database, endpoint_id)
        opened = dt.datetime.fromisoformat(delivery["log"][0]["started_at"])
        settings = wh.delivery_settings(runtime.settings)
        # Attempt 2 as if every retry until then had failed: 23 hours in, the next would come
        # two hours later, past the 24 hours.
        with database.transaction() as session:
            row = session.get(wh.WebhookDelivery, delivery["id"])
            row.window_attempts = 12
        late = wh.attempt_delivery(database, delivery["id"], 1, settings,
                                   now=opened + dt.timedelta(hours=23))
        assert late.outcome == "failed" and late.retry_at is None
        # The retry scheduled after attempt 1 finds attempt 2 made: it does nothing.
        jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    [failed] = deliveries(database, endpoint_id)
    assert failed["status"] == "failed" and failed["finished_at"] and failed["attempts"] == 2
    assert failed["log"][-1]["error"] == "HTTP 502" and failed["log"][-1]["retry_at"] is None
    assert len(receiver.requests) == 2


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(database, runtime,
                                                            reference_terms):
    with webhook_receiver([302, 200]) as receiver:
        endpoint_id = register(database, receiver.url, ["*"])
        new_letter(database, reference_terms)
    [delivery] = deliveries(database, endpoint_id)
    assert delivery["status"] == "pending" and delivery["last_status_code"] == 302
    assert "redirects are not followed" in delivery["last_error"]
    assert [r.path for r in receiver.requests] == ["/"]


def test_redelivery_sends_the_same_event_id_again(database, runtime, reference_terms):
    with webhook_receiver([200, 200]) as receiver:
        endpoint_id = register(database, receiver.url, ["*"])
        new_letter(database, reference_terms)
        [delivery] = deliveries(database, endpoint_id)
        assert delivery["status"] == "delivered"
        with database.transaction() as session:
            wh.redeliver(session, endpoint_id, delivery["id"], by="admin@example.com")
        [again] = deliveries(database, endpoint_id)
    assert again["status"] == "delivered" and again["attempts"] == 2
    assert again["redeliveries"] == 1
    assert again["log"][1]["requested_by"] == "admin@example.com"
    assert [r.json()["id"] for r in receiver.requests] == [delivery["event_id"]] * 2
    assert receiver.requests[0].body == receiver.requests[1].body


def test_a_deleted_endpoint_receives_nothing_more(database, runtime, reference_terms):
    with webhook_receiver([500]) as receiver:
        endpoint_id = register(database, receiver.url, ["*"])
        new_letter(database, reference_terms)
        with database.transaction() as session:
            wh.delete_endpoint(session, endpoint_id, by="admin@example.com")
        assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)) == 1
        new_letter(database, reference_terms)
    [delivery] = deliveries(database, endpoint_id)
    assert delivery["status"] == "cancelled" and delivery["attempts"] == 1
    assert len(receiver.requests) == 1
    with database.transaction() as session, pytest.raises(Exception, match="no webhook"):
        wh.get_endpoint(session, endpoint_id)


def test_every_attempt_checks_the_address_it_connects_to(database, runtime, reference_terms,
                                                       monkeypatch):
    """A name that resolved to a public address when registered and to loopback when
    delivered (DNS rebinding) is refused at the attempt; with private addresses allowed, the
    connection goes to the address the check resolved, not to one looked up again."""
    answers = {"hooks.example.test": ["93.184.216.34"]}
    monkeypatch.setattr(wh, "_system_resolver", lambda host, _port: answers[host])
    runtime.settings = {**runtime.settings, wh.ALLOW_PRIVATE_SETTING: False}
    with webhook_receiver([200]) as receiver:
        url = f"http://hooks.example.test:{receiver.port}/in"
        endpoint_id = register(database, url, ["letter.created"], allow_private=False)
        answers["hooks.example.test"] = ["127.0.0.1"]  # the name now points inside
        new_letter(database, reference_terms)
        [delivery] = deliveries(database, endpoint_id)
        [refused] = delivery["log"]
        assert refused["outcome"] == "failed" and refused["status_code"] is None
        assert refused["error"].startswith("refused: hooks.example.test resolves to "
                                           "127.0.0.1, which is a loopback address")
        assert delivery["status"] == "pending"  # tried again later, like any failure
        assert receiver.requests == []
        allowed = wh.DeliverySettings(key=KEY, allow_private=True, timeout=0.5)
        assert wh.attempt_delivery(database, delivery["id"], 1, allowed).outcome == "delivered"
    # The system's resolver does not know hooks.example.test: the connection went to the
    # address this module resolved and checked.
    assert [r.path for r in receiver.requests] == ["/in"]
    assert receiver.requests[0].headers["Host"] == f"hooks.example.test:{receiver.port}"


def test_the_sweep_restarts_a_delivery_whose_job_was_lost(database, runtime, reference_terms):
    with webhook_receiver([500, 200]) as receiver:
        endpoint_id = register(database, receiver.url, ["letter.created"])
        new_letter(database, reference_terms)
        [delivery] = deliveries(database, endpoint_id)
        jobs.huey.storage.flush_schedule()  # the scheduled retry is lost
        due = dt.datetime.fromisoformat(delivery["next_attempt_at"])
        assert wh.resume_deliveries(database, now=due) == 0  # not late yet
        assert wh.resume_deliveries(database, now=due + dt.timedelta(minutes=3)) == 1
    [done] = deliveries(database, endpoint_id)
    assert done["status"] == "delivered" and len(receiver.requests) == 2


def test_an_attempt_cut_short_by_a_dead_worker_is_logged_and_made_again(
        database, runtime, reference_terms):
    with webhook_receiver([500, 200]) as receiver:
        endpoint_id = register(database, receiver.url, ["letter.created"])
        new_letter(database, reference_terms)
        [delivery] = deliveries(database, endpoint_id)
        jobs.huey.storage.flush_schedule()
        # A worker claimed attempt 2, then died before recording anything.
        claimed = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        with database.transaction() as session:
            row = session.get(wh.WebhookDelivery, delivery["id"])
            row.status, row.attempts, row.claimed_at = "delivering", 2, claimed
        assert wh.resume_deliveries(database) == 1
    [done] = deliveries(database, endpoint_id)
    assert done["status"] == "delivered" and done["attempts"] == 3
    assert [(a["number"], a["outcome"]) for a in done["log"]] == [
        (1, "failed"), (2, "interrupted"), (3, "delivered")]
    assert "worker stopped" in done["log"][1]["error"]


# --- which events reach which endpoint ---------------------------------------------------------

def _paper_scan(database, envelope_id, **options):
    with database.transaction() as session:
        letter_pdf = env.letter_pdf_for(session, session.get(Envelope, envelope_id))
    return scan_of(letter_pdf, **options)


def _assembled(database, envelope_id, sealer):
    with database.transaction() as session:
        done = session.get(Envelope, envelope_id).executed_document_id is not None
    if not done:  # assembly not (yet) run by a job in this version: run it here
        env.assemble_envelope(database, envelope_id, sealer)


def test_filters_a_staged_scan_and_the_executed_letter(database, runtime, converter, sealer,
                                                       reference_terms):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    with webhook_receiver() as everything, webhook_receiver() as signatures, \
            webhook_receiver() as executed:
        all_id = register(database, everything.url, ["*"])
        register(database, signatures.url, ["counterpart.signed", "counterpart.viewed"])
        register(database, executed.url, ["letter.executed"])
        letter_id = new_letter(database, reference_terms, generate=True, converter=converter)
        with database.transaction() as session:
            envelope, links = env.send_envelope(session, letter_id, None, STAFF)
            envelope_id = envelope.id
            company_id, executive_id = (c.id for c in envelope.counterparts)
        with database.transaction() as session:
            env.view_signing(session, links[0].token, SIGNER)
        with database.transaction() as session:
            env.sign_counterpart(session, links[0].token, consent=True,
                                 signature={"type": "typed", "text": "Eliot Protsch"},
                                 actor=SIGNER)
        assert signatures.types() == ["counterpart.viewed", "counterpart.signed"]
        # A scan staged on the letter page is not a signature: nothing is sent.
        scan = _paper_scan(database, envelope_id, signed_by=["executive"], seed=4)
        with database.transaction() as session:
            staged = env.stage_paper_counterpart(session, letter_id, executive_id, scan,
                                                 "executive.pdf", STAFF, signed_on=today)
        assert signatures.types() == ["counterpart.viewed", "counterpart.signed"]
        assert everything.types()[-1] == "counterpart.signed"
        # Its confirmation is.
        with database.transaction() as session:
            env.confirm_paper_counterpart(session, letter_id, executive_id, STAFF,
                                          document_id=staged.document_id,
                                          choices=env.PaperChoices(today))
        _assembled(database, envelope_id, sealer)
    assert everything.types() == ["letter.created", "envelope.sent", "counterpart.viewed",
                                  "counterpart.signed", "counterpart.signed",
                                  "letter.executed"]
    assert signatures.types() == ["counterpart.viewed", "counterpart.signed",
                                  "counterpart.signed"]
    assert executed.types() == ["letter.executed"]
    paper = signatures.requests[-1].json()
    assert paper["counterpart"]["counterpart_id"] == executive_id
    assert paper["counterpart"]["method"] == "paper"
    assert paper["counterpart"]["status"] == "signed"
    assert paper["envelope"]["envelope_id"] == envelope_id
    online = signatures.requests[1].json()
    assert online["counterpart"]["counterpart_id"] == company_id
    # The body is the state at its event: the first signature's shows one of two signed.
    assert online["envelope"]["signed"] == 1 and paper["envelope"]["signed"] == 2
    # No signing link, ever: they are the signers' credentials.
    assert all("link" not in signer for signer in online["envelope"]["signers"])
    assert not [r for r in everything.requests for link in links
                if link.token in r.body.decode()]
    done = executed.requests[0].json()
    assert done["letter"]["status"] == "fully_executed"
    assert done["envelope"]["executed_pdf"] == f"{BASE_URL}/api/letters/{letter_id}/executed.pdf"
    assert done["counterpart"] is None
    sent = everything.requests[1].json()
    assert sent["envelope"]["total"] == 2 and sent["counterpart"] is None
    # One delivery per event and endpoint, each delivered once.
    assert {d["status"] for d in deliveries(database, all_id)} == {"delivered"}
    assert len({r.json()["id"] for r in everything.requests}) == 6
