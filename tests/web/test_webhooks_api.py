"""The webhooks API: only administrators (and their tokens) manage webhooks, secrets are never
answered back, private addresses are refused, and a real receiver on loopback gets each event
as the API shows the letter, envelope and counterpart, and a redelivery with the same id."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from serving import ROOT
from sqlalchemy import select
from webhook_receiver import webhook_receiver

from web.database import get_db
from workflow import jobs
from workflow import webhooks as wh
from workflow.accounts import create_api_token, create_user
from workflow.db import open_database
from workflow.letters import create_letter
from workflow.webhooks import verify_signature

SECRET = "whsec_api_tests_0123456789"


@pytest.fixture()
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """Webhooks may reach the receiver on loopback, give up after half a second, and address
    letters under the test client's host, so that webhooks and API answers compare."""
    return {**app_config, "WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_TIMEOUT_SECONDS": 0.5,
            "BASE_URL": "http://localhost"}


@pytest.fixture()
def admin_api(app, credentials) -> dict[str, str]:
    """The headers of an API call with an administrator's token."""
    with app.app_context(), get_db().transaction() as session:
        token = create_api_token(session, credentials["admin"][0], "tests")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def reader_api(app) -> dict[str, str]:
    """The headers of an API call with a read-only account's token."""
    with app.app_context(), get_db().transaction() as session:
        create_user(session, "reader@example.com", "a long reader password", role="read_only")
        token = create_api_token(session, "reader@example.com", "tests")
    return {"Authorization": f"Bearer {token}"}


def register(client, headers, url, events=("*",), secret=SECRET, **extra):
    body = {"url": url, "events": list(events), **extra}
    if secret is not None:
        body["secret"] = secret
    return client.post("/api/webhooks", headers=headers, json=body)


def test_only_administrators_manage_webhooks(client, api, admin_api, reader_api):
    created = register(client, admin_api, "http://127.0.0.1:9/in")
    assert created.status_code == 201, created.text
    webhook_id = created.json["id"]
    for headers in (api, reader_api):  # staff, read-only
        for method, path, body in (
                ("get", "/api/webhooks", None), ("post", "/api/webhooks", {"url": "x"}),
                ("get", f"/api/webhooks/{webhook_id}", None),
                ("delete", f"/api/webhooks/{webhook_id}", None),
                ("post", f"/api/webhooks/{webhook_id}/deliveries/1/redeliver", None)):
            answer = getattr(client, method)(path, headers=headers, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert "Only administrators may manage templates, users, webhooks" in \
                answer.json["error"]
    assert client.get("/api/webhooks").status_code == 401
    listed = client.get("/api/webhooks", headers=admin_api).json["webhooks"]
    assert [w["id"] for w in listed] == [webhook_id]


def test_a_secret_is_never_answered_back(client, admin_api):
    given = register(client, admin_api, "http://127.0.0.1:9/in", description="ERP")
    assert given.status_code == 201
    assert given.json["secret_hint"] == SECRET[-4:] and "secret" not in given.json
    assert given.headers["Location"] == given.json["api_url"]
    made = register(client, admin_api, "http://127.0.0.1:9/other", secret=None,
                    events=["letter.executed"])
    assert made.status_code == 201
    shown = made.json["secret"]  # made here: shown in this answer only
    assert shown.startswith("whsec_") and made.json["secret_hint"] == shown[-4:]
    for path in ("/api/webhooks", f"/api/webhooks/{given.json['id']}",
                 f"/api/webhooks/{made.json['id']}"):
        text = client.get(path, headers=admin_api).text
        assert SECRET not in text and shown not in text
    assert client.get(f"/api/webhooks/{made.json['id']}", headers=admin_api).json[
        "events"] == ["letter.executed"]


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:8080/in", "127.0.0.1 is a loopback address"),
    ("https://10.20.30.40/in", "10.20.30.40 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[::1]:8080/in", "::1 is a loopback address"),
    ("http://localhost:8080/in", "localhost resolves to"),
])
def test_private_addresses_are_refused_unless_allowed(app, client, admin_api, url, words):
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    answer = register(client, admin_api, url)
    assert answer.status_code == 422, answer.text
    assert list(answer.json["errors"]) == ["url"]
    assert words in answer.json["errors"]["url"]
    assert client.get("/api/webhooks", headers=admin_api).json["webhooks"] == []


def test_refusals_name_their_field(client, admin_api):
    for body, field in (({"url": "gopher://x", "events": ["*"]}, "url"),
                        ({"url": "http://127.0.0.1:9/", "events": "letter.signed"}, "events"),
                        ({"url": "http://127.0.0.1:9/", "events": []}, "events"),
                        ({"url": "http://127.0.0.1:9/", "events": ["*"], "secret": "short"},
                         "secret")):
        answer = client.post("/api/webhooks", headers=admin_api, json=body)
        assert answer.status_code == 422 and list(answer.json["errors"]) == [field], answer.text


def _subset(shown: Any, api: Any, where: str = "") -> None:
    """Everything the webhook sent is in the API's answer, the same (the API may say more)."""
    if isinstance(shown, dict):
        assert isinstance(api, dict), where
        for key, value in shown.items():
            assert key in api, f"{where}.{key}"
            _subset(value, api[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(api, list) and len(api) == len(shown), where
        for index, (mine, theirs) in enumerate(zip(shown, api, strict=True)):
            _subset(mine, theirs, f"{where}[{index}]")
    else:
        assert shown == api, where


def test_the_receiver_gets_each_event_as_the_api_shows_it(client, admin_api, api, make_letter,
                                                          send_letter, reference_terms):
    with webhook_receiver() as everything, webhook_receiver() as declines:
        all_id = register(client, admin_api, f"{everything.url}/all").json["id"]
        register(client, admin_api, declines.url, events=["counterpart.declined"])
        letter_id = make_letter(reference_terms)
        sent = send_letter(letter_id)
        token = sent["signers"][1]["token"]
        declined = client.post(f"/api/sign/{token}/decline", json={"reason": "Not this week"})
        assert declined.status_code == 200, declined.text
    assert everything.types() == ["letter.created", "envelope.sent", "counterpart.declined"]
    assert declines.types() == ["counterpart.declined"]
    [request] = declines.requests
    assert verify_signature(SECRET, request.headers["Counterpart-Signature"], request.body,
                            time.time())
    payload = request.json()
    assert payload["id"] == everything.requests[2].json()["id"]  # one id per event
    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    letter = client.get(f"/api/letters/{letter_id}", headers=api).json
    _subset(payload["envelope"], envelope)
    _subset(payload["letter"], letter)
    signer = next(s for s in envelope["signers"] if s["counterpart_id"] ==
                  sent["signers"][1]["counterpart_id"])
    _subset(payload["counterpart"], signer)
    assert payload["counterpart"]["status"] == "declined"
    assert payload["counterpart"]["decline_reason"] == "Not this week"
    assert all(token not in r.body.decode() for r in everything.requests)
    deliveries = client.get(f"/api/webhooks/{all_id}", headers=admin_api).json["deliveries"]
    assert [(d["type"], d["status"], [a["status_code"] for a in d["log"]])
            for d in deliveries] == [("counterpart.declined", "delivered", [200]),
                                     ("envelope.sent", "delivered", [200]),
                                     ("letter.created", "delivered", [200])]


def test_attempts_are_logged_and_a_delivery_can_be_redelivered(client, admin_api,
                                                               make_letter, reference_terms):
    with webhook_receiver([503, 200]) as receiver:
        webhook_id = register(client, admin_api, receiver.url,
                              events=["letter.created"]).json["id"]
        make_letter(reference_terms, generate=False)
        [delivery] = client.get(f"/api/webhooks/{webhook_id}",
                                headers=admin_api).json["deliveries"]
        assert delivery["status"] == "pending" and delivery["next_attempt_at"]
        [attempt] = delivery["log"]
        assert (attempt["number"], attempt["status_code"], attempt["error"],
                attempt["outcome"]) == (1, 503, "HTTP 503", "failed")
        assert attempt["duration_ms"] >= 0 and attempt["retry_at"]
        path = f"/api/webhooks/{webhook_id}/deliveries/{delivery['id']}"
        detail = client.get(path, headers=admin_api).json
        assert detail["body"] == receiver.requests[0].body.decode()
        again = client.post(f"{path}/redeliver", headers=admin_api)
        assert again.status_code == 202, again.text
        assert again.json["status"] == "delivered" and again.json["redeliveries"] == 1
        assert again.json["log"][1]["requested_by"] == "admin@example.com"
        # A delivered delivery may be sent again too, still under its event's id.
        assert client.post(f"{path}/redeliver", headers=admin_api).status_code == 202
        assert client.post(f"/api/webhooks/{webhook_id}/deliveries/999/redeliver",
                           headers=admin_api).status_code == 404
    ids = [r.json()["id"] for r in receiver.requests]
    assert len(ids) == 3 and len(set(ids)) == 1 == len({r.body for r in receiver.requests})


def test_a_deleted_webhook_is_gone_from_the_api_and_receives_nothing(client, admin_api,
                                                                     make_letter,
                                                                     reference_terms):
    with webhook_receiver() as receiver:
        webhook_id = register(client, admin_api, receiver.url).json["id"]
        assert client.delete(f"/api/webhooks/{webhook_id}", headers=admin_api).status_code == 204
        assert client.get(f"/api/webhooks/{webhook_id}", headers=admin_api).status_code == 404
        assert client.delete(f"/api/webhooks/{webhook_id}", headers=admin_api).status_code == 404
        make_letter(reference_terms, generate=False)
    assert receiver.requests == []
    assert client.get("/api/webhooks", headers=admin_api).json["webhooks"] == []


def test_a_real_worker_delivers_and_queues_the_next_attempt(tmp_path, database_url,
                                                            reference_terms):
    """``counterpart worker`` on a durable queue: the event's dispatch writes the delivery, the
    first attempt fails (503) and schedules the next in the queue 30 seconds later; run then,
    the same event arrives and is delivered."""
    data_dir = tmp_path / "data"
    database = open_database(data_dir, database_url)
    jobs.configure(jobs.queue_url_for({"DATA_DIR": data_dir, "DATABASE_URL": database_url}))
    key = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERPART_")}
    env.update(COUNTERPART_DATA_DIR=str(data_dir), COUNTERPART_SECRET_KEY=key,
               COUNTERPART_WEBHOOK_ALLOW_PRIVATE="true", COUNTERPART_QUEUE_POLL_MS="200",
               COUNTERPART_BASE_URL="https://sign.example.com",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    if database_url:
        env["COUNTERPART_DATABASE_URL"] = database_url
    log = data_dir / "worker.log"
    try:
        with webhook_receiver([503, 200]) as receiver, log.open("wb") as output:
            with database.transaction() as session:
                user = create_user(session, "ann@example.com", "a long password")
                endpoint, _ = wh.create_endpoint(session, receiver.url, ["letter.created"],
                                                 SECRET, key=key.encode(), by="admin",
                                                 allow_private=True)
                endpoint_id = endpoint.id
            worker = subprocess.Popen([sys.executable, "-m", "web.cli", "worker"], cwd=ROOT,
                                      env=env, stdout=output, stderr=subprocess.STDOUT)
            try:
                with database.transaction() as session:
                    letter_id = create_letter(session, "separation_letter", reference_terms,
                                              user).id
                _wait(lambda: len(receiver.requests) == 1, log)
                # The failed attempt is recorded, the next one due in 30 seconds.
                _wait(lambda: _delivery(database, endpoint_id).last_status_code == 503, log)
                delivery = _delivery(database, endpoint_id)
                assert (delivery.status, delivery.attempts) == ("pending", 1)
                # The worker took the retry off the queue and keeps it in the schedule.
                _wait(lambda: _retries(), log)
                [retry] = _retries()
                assert retry.args == (delivery.id, 1)
                wait = (retry.eta.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC))
                assert 20 < wait.total_seconds() <= 31
                # Not waiting half a minute: the scheduled run, enqueued now.
                jobs.huey.storage.flush_schedule()
                wh.deliver_webhook(delivery.id, 1)
                _wait(lambda: _delivery(database, endpoint_id).status == "delivered", log)
            finally:
                worker.send_signal(signal.SIGINT)
                worker.wait(20)
    finally:
        jobs.use_immediate()
        database.dispose()
    first, second = receiver.requests
    assert first.body == second.body and first.json()["letter"]["id"] == letter_id
    assert first.json()["letter"]["url"] == f"https://sign.example.com/api/letters/{letter_id}"
    assert verify_signature(SECRET, second.headers["Counterpart-Signature"], second.body,
                            time.time())
    assert [r.headers["Counterpart-Attempt"] for r in receiver.requests] == ["1", "2"]


def _retries() -> list[Any]:
    return [t for t in jobs.huey.scheduled() if t.name.endswith("deliver_webhook")]


def _delivery(database, endpoint_id: int) -> wh.WebhookDelivery:
    with database.transaction() as session:
        row = session.scalar(select(wh.WebhookDelivery).where(
            wh.WebhookDelivery.endpoint_id == endpoint_id))
        if row is not None:
            session.expunge(row)
        return row


def _wait(check, log, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except AttributeError:  # no delivery yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s; the worker said:\n"
                         f"{log.read_text(errors='replace')[-3000:]}")
