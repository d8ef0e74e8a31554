"""Execution in counterparts through the JSON API: sending, the signer API, paper uploads,
voiding, the executed PDF, the zip and the audit record; every bad signing link; emails to
signers through a real SMTP server; two signers at the same moment.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import hashlib
import io
import json
import re
import threading
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pypdf
import pytest
from held_jobs import run_retries
from mailing import html_of, text_of, use_mail
from scans import scan_of
from serving import free_port
from sqlalchemy import func, select, update
from support import acknowledged, letter_words, pdftotext

from web.database import get_db
from web.execution import get_sealer
from web.testing import csrf_token
from workflow import jobs
from workflow.errors import CounterpartError
from workflow.models import Counterpart, Document, Envelope, Event, utcnow
from workflow.pdfs import extract_pages
from workflow.render import ordinal_day
from workflow.seal import check_seal

TYPED = {"consent": True, "signature": {"type": "typed", "text": "Eliot Protsch"}}
CASES = Path(__file__).resolve().parents[1] / "data" / "cases"


def sign(client, token, body=None):
    return client.post(f"/api/sign/{token}", json=body or TYPED)


def pdf_reader(data: bytes) -> pypdf.PdfReader:
    return pypdf.PdfReader(io.BytesIO(data))


def count(app, model, **where) -> int:
    with app.app_context(), get_db().transaction() as session:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return session.scalar(query)


# --- sending -----------------------------------------------------------------------------------

def test_send_with_the_signers_of_the_terms(client, api, make_letter, reference_terms):
    letter_id = make_letter(reference_terms)
    response = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={})
    assert response.status_code == 201, response.text
    answer = response.json
    assert response.headers["Location"].endswith(f"/api/letters/{letter_id}/envelope")
    assert answer["status"] == "out"
    assert [(s["name"], s["role"], s["status"], s["email"]) for s in answer["signers"]] == [
        ("Eliot Protsch", "company", "ready", None),
        ("John R. Tucker", "executive", "ready", None)]
    # No mail server took an invitation: the links are ready to be handed over, not "sent".
    assert [s["status_label"] for s in answer["signers"]] == ["Link ready", "Link ready"]
    assert answer["emails"] == {"sent": [], "failed": [], "queued": [], "error": None}
    links = [s["link"] for s in answer["signers"]]
    assert all(link.startswith("http://localhost/sign/") for link in links)
    assert all(len(link.rsplit("/", 1)[1]) >= 43 for link in links)  # 256 random bits
    assert len(set(links)) == 2
    expires = dt.datetime.fromisoformat(answer["expires_at"])
    assert dt.timedelta(days=29, hours=23) < expires - utcnow() <= dt.timedelta(days=30)

    # Following the envelope shows where each signer stands, never the links.
    followed = client.get(f"/api/letters/{letter_id}/envelope", headers=api)
    assert followed.status_code == 200
    assert all("link" not in s for s in followed.json["signers"])
    assert followed.json["signed"] == 0 and followed.json["total"] == 2
    letter = client.get(f"/api/letters/{letter_id}", headers=api).json
    assert letter["status"] == "out_for_signature"
    assert letter["signatures"] == {"signed": 0, "total": 2, "envelope_status": "out",
                                    "ready": 2, "expired": 0}
    assert letter["envelope"] == f"http://localhost/api/letters/{letter_id}/envelope"
    (listed,) = client.get("/api/letters", headers=api).json["letters"]
    assert listed["signatures"] == letter["signatures"]


def test_send_with_signers_an_order_and_a_lifetime(client, api, make_letter, reference_terms):
    letter_id = make_letter(reference_terms)
    response = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
        "signers": [{"role": "company", "name": "Eliot Protsch", "email": "Eliot@Capstone.test"},
                    {"role": "executive", "name": "John R. Tucker", "email": "jt@home.test"}],
        "signing_order": True, "link_days": 5})
    assert response.status_code == 201, response.text
    answer = response.json
    assert answer["signing_order"] is True
    assert [(s["email"], s["status"]) for s in answer["signers"]] == [
        ("eliot@capstone.test", "ready"), ("jt@home.test", "created")]
    expires = dt.datetime.fromisoformat(answer["expires_at"])
    assert dt.timedelta(days=4, hours=23) < expires - utcnow() <= dt.timedelta(days=5)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"signers": [{"role": "company", "name": "Eliot Protsch", "email": "not-an-email"}]},
     400, "signers[0].email"),
    ({"signers": [{"role": "company", "name": "Eliot Protsch"},
                  {"role": "company", "name": "Somebody Else"}]}, 400, "signers[1].role"),
    ({"signers": [{"role": "company", "name": "Eliot Protsch"}]}, 400,
     "give a signer for executive"),
    ({"signers": [{"role": "boss", "name": "Eliot Protsch"}]}, 400, "signers[0].role"),
    ({"signers": [{"role": "Boss!", "name": "Eliot Protsch"}]}, 400, "signers[0].role"),
    ({"signers": "Eliot"}, 400, "signers"),
    ({"link_days": 0}, 400, "link_days"),
    ({"link_days": "30"}, 400, "link_days"),
    ({"signing_order": "yes"}, 400, "signing_order"),
])
def test_send_refusals_name_the_field_and_change_nothing(client, api, make_letter,
                                                         reference_terms, execution_state,
                                                         body, status, message):
    letter_id = make_letter(reference_terms)
    before = execution_state(letter_id)
    response = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json=body)
    assert response.status_code == status, response.text
    assert message in response.json["error"]
    assert execution_state(letter_id) == before


def test_a_letter_out_for_signature_cannot_be_sent_again(client, api, sent, execution_state):
    before = execution_state(sent["letter_id"])
    response = client.post(f"/api/letters/{sent['letter_id']}/envelope", headers=api, json={})
    assert response.status_code == 409
    assert "cannot be sent again" in response.json["error"]
    assert execution_state(sent["letter_id"]) == before
    assert client.post("/api/letters/999/envelope", headers=api, json={}).status_code == 404
    assert client.get("/api/letters/999/envelope", headers=api).status_code == 404


def test_a_letter_never_sent_has_no_envelope_and_nothing_executed(client, api, make_letter,
                                                                  reference_terms):
    letter_id = make_letter(reference_terms)
    response = client.get(f"/api/letters/{letter_id}/envelope", headers=api)
    assert response.status_code == 404
    assert "has not been sent" in response.json["error"]
    assert client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api).status_code == 409
    assert client.post(f"/api/letters/{letter_id}/counterparts.zip",
                      headers=api).status_code == 409
    assert client.post(f"/api/letters/{letter_id}/envelope/void", headers=api,
                       json={"reason": "x"}).status_code == 409


def test_sending_waits_for_a_pdf_being_generated(app, client, api, make_letter,
                                                 reference_terms):
    from workflow.letters import generate_pdf_job

    letter_id = make_letter(reference_terms, generate=False)
    with app.app_context(), get_db().transaction() as session:
        (pdf_id,) = session.scalars(select(Document.id).where(
            Document.letter_id == letter_id, Document.kind == "letter_pdf"))
    worker = threading.Timer(0.3, generate_pdf_job.call_local, (pdf_id,))  # a worker makes it
    worker.start()
    response = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={})
    worker.join()
    assert response.status_code == 201, response.text


# --- signing -----------------------------------------------------------------------------------

def test_signing_through_the_api_until_executed(app, client, api, sent, reference_words,
                                                drawn_signature):
    letter_id = sent["letter_id"]
    company, executive = (s["token"] for s in sent["signers"])

    opened = client.get(f"/api/sign/{company}")
    assert opened.status_code == 200
    assert opened.json["letter"]["title"] == \
        "Separation letter of John R. Tucker, Capstone Turbine Corporation"
    assert opened.json["letter"]["page_count"] == 3
    assert opened.json["signer"] == {"name": "Eliot Protsch", "role": "company",
                                     "status": "viewed", "status_label": "Viewed",
                                     "method": None, "signed_at": None, "time_zone": None}
    assert opened.json["signed_pdf"] is None and opened.json["executed_pdf"] is None
    assert opened.json["can_sign"] and opened.json["waiting_for"] == []
    page = client.get(opened.json["letter"]["pages"][0].removeprefix("http://localhost"))
    assert page.status_code == 200 and page.mimetype == "image/png"

    signed = sign(client, company)
    assert signed.status_code == 200, signed.text
    assert signed.json["status"] == "signed" and signed.json["method"] == "typed"
    assert signed.json["letter_status"] == "partially_executed"
    assert signed.json["fully_executed"] is False
    not_yet = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert not_yet.status_code == 409
    assert "1 of 2 counterparts are signed" in not_yet.json["error"]
    assert client.post(f"/api/letters/{letter_id}/counterparts.zip",
                      headers=api).status_code == 409

    last = sign(client, executive, {"consent": True, "time_zone": "Pacific/Auckland",
                                    "signature": {"type": "drawn", "png": drawn_signature}})
    assert last.status_code == 200, last.text
    assert last.json["fully_executed"] is True and last.json["letter_status"] == "fully_executed"
    # The date of signing is the signer's own calendar date, where they are.
    assert last.json["time_zone"] == "Pacific/Auckland"
    signed_on = dt.date.fromisoformat(last.json["signed_on"])
    signed_at = dt.datetime.fromisoformat(last.json["signed_at"])
    assert signed_on == signed_at.astimezone(ZoneInfo("Pacific/Auckland")).date()
    assert signed.json["time_zone"] == "UTC"  # no zone given

    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    assert envelope["status"] == "completed" and envelope["signed"] == 2
    assert [s["method"] for s in envelope["signers"]] == ["typed", "drawn"]

    executed = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert executed.status_code == 200
    assert executed.headers["Content-Disposition"].startswith("attachment;")
    reader = pdf_reader(executed.data)
    assert len(reader.pages) >= 6  # 3 letter pages, 2 signature pages, the certificate
    # The conformed copy: the model letter, its acknowledgement dated, each signature noted.
    conformed = "\n".join(p.extract_text() for p in reader.pages[:3])
    assert letter_words(re.sub(r"Signed electronically on \w+ \d+, \d{4}", "", conformed)) == \
        acknowledged(reference_words, signed_on)
    assert reader.pages[3].images and reader.pages[4].images  # both signatures
    with app.app_context():
        check = check_seal(executed.data, get_sealer().certificate)
    assert check.sealed and check.intact and check.signed_by_us

    signed_copy = client.post(envelope["signers"][0]["signed_pdf"]
                             .removeprefix("http://localhost"), headers=api)
    assert signed_copy.status_code == 200 and len(pdf_reader(signed_copy.data).pages) == 3

    archive = client.post(f"/api/letters/{letter_id}/counterparts.zip", headers=api)
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.data)) as opened_zip:
        names = opened_zip.namelist()
        assert opened_zip.read(names[0]) == executed.data
        assert opened_zip.read(names[1]) == signed_copy.data
    assert names == ["john-r-tucker-separation-letter-executed.pdf",
                     "counterpart-1-eliot-protsch-signed.pdf",
                     "counterpart-2-john-r-tucker-signed.pdf", "audit.json"]

    audit = client.get(f"/api/letters/{letter_id}/audit", headers=api)
    assert audit.status_code == 200
    record = audit.json
    assert record["chain"]["ok"] is True
    types = [e["type"] for e in record["events"]]
    for expected in ("created", "generated", "sent", "viewed", "consented", "signed",
                     "executed", "downloaded"):
        assert expected in types, expected
    downloads = [e for e in record["events"] if e["type"] == "downloaded"]
    assert [d["detail"]["document"] for d in downloads] == [
        "john-r-tucker-separation-letter-executed.pdf", "counterpart-1-eliot-protsch-signed.pdf",
        "john-r-tucker-separation-letter-counterparts.zip"]
    assert all(d["actor"] == "counsel@example.com" and d["ip"] == "127.0.0.1"
               for d in downloads)
    viewed = next(e for e in record["events"] if e["type"] == "viewed")
    assert viewed["actor"] == "Eliot Protsch" and viewed["ip"] == "127.0.0.1"
    assert viewed["user_agent"].startswith("Werkzeug/")


def test_consent_and_a_usable_signature_are_required(client, sent, execution_state):
    token = sent["signers"][0]["token"]
    client.get(f"/api/sign/{token}")
    before = execution_state(sent["letter_id"])
    for body, message in (
        ({"signature": TYPED["signature"]}, "consent"),
        ({"consent": "yes", "signature": TYPED["signature"]}, "consent"),
        ({"consent": True}, "signature"),
        ({"consent": True, "signature": {"type": "typed", "text": "  "}}, "signature.text"),
        ({"consent": True, "signature": {"type": "drawn", "png": "%%%"}}, "base64"),
        ({"consent": True, "signature": {"type": "stamp"}}, "signature.type"),
    ):
        response = sign(client, token, body)
        assert response.status_code == 400, body
        assert message in response.json["error"], (body, response.json)
    assert client.post(f"/api/sign/{token}", data="not json").status_code == 400
    assert execution_state(sent["letter_id"]) == before


def test_a_tap_is_not_a_signature_and_a_time_zone_must_exist(client, sent, execution_state):
    token = sent["signers"][0]["token"]
    client.get(f"/api/sign/{token}")
    before = execution_state(sent["letter_id"])
    dot = base64.b64encode((CASES / "drawn-single-tap-dot.png").read_bytes()).decode()
    tapped = sign(client, token, {"consent": True, "signature": {"type": "drawn", "png": dot}})
    assert tapped.status_code == 400
    assert tapped.json["error"].startswith(
        "signature.png: The drawing is too small to be a signature")
    for zone in ("Atlantis/Capital", "America/../Europe/Paris", 5):
        refused = sign(client, token, {**TYPED, "time_zone": zone})
        assert refused.status_code == 400, zone
        assert refused.json["error"].startswith("time_zone:"), refused.json
    assert execution_state(sent["letter_id"]) == before
    drawing = base64.b64encode((CASES / "drawn-signature.png").read_bytes()).decode()
    accepted = sign(client, token, {"consent": True, "time_zone": "Europe/Paris", "signature": {
        "type": "drawn", "png": drawing, "pixel_ratio": 2}})
    assert accepted.status_code == 200 and accepted.json["method"] == "drawn"


def test_a_letter_dated_february_reads_the_true_date_of_signing(client, api, send_letter):
    body = json.loads((CASES / "acknowledgement-february-letter.json").read_text("utf-8"))
    created = client.post("/api/letters", headers=api, json=body)
    assert created.status_code == 201, created.text
    letter_id = created.json["id"]
    company, executive = (s["token"] for s in send_letter(letter_id)["signers"])
    blank = client.get(f"/sign/{executive}/letter.pdf")
    assert "this ___ day of February, 2026" in pdftotext(blank.data)
    assert sign(client, company, {**TYPED, "time_zone": "Asia/Tokyo"}).status_code == 200
    last = sign(client, executive, {"consent": True, "time_zone": "America/Los_Angeles",
                                    "signature": {"type": "typed", "text": "John R. Tucker"}})
    assert last.status_code == 200 and last.json["fully_executed"] is True
    on = dt.date.fromisoformat(last.json["signed_on"])

    executed = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api).data
    conformed = pdftotext(extract_pages(executed, [0, 1, 2]))
    assert f"this {ordinal_day(on.day)} day of {on:%B}, {on.year}" in conformed
    assert "day of February" not in conformed
    assert "this ___ day" not in conformed
    text = pdftotext(executed)
    assert f"date of signing {on:%B} {on.day}, {on.year} (America/Los_Angeles)" in text
    assert "(Asia/Tokyo)" in text


def test_decline_with_a_reason_through_the_api(client, api, sent, execution_state):
    token = sent["signers"][1]["token"]
    before = execution_state(sent["letter_id"])
    empty = client.post(f"/api/sign/{token}/decline", json={"reason": " "})
    assert empty.status_code == 400 and "reason" in empty.json["error"]
    assert execution_state(sent["letter_id"]) == before
    declined = client.post(f"/api/sign/{token}/decline", json={"reason": "The rate is wrong"})
    assert declined.status_code == 200
    assert declined.json["status"] == "declined"
    envelope = client.get(f"/api/letters/{sent['letter_id']}/envelope", headers=api).json
    assert envelope["status"] == "declined"
    assert envelope["signers"][1]["decline_reason"] == "The rate is wrong"
    # The other signer's link no longer works either.
    other = sign(client, sent["signers"][0]["token"])
    assert other.status_code == 410 and other.json["reason"] == "declined"


def test_signing_order_makes_later_signers_wait(client, api, make_letter, send_letter,
                                                reference_terms, execution_state):
    letter_id = make_letter(reference_terms)
    answer = send_letter(letter_id, signing_order=True)
    company, executive = (s["token"] for s in answer["signers"])
    before = execution_state(letter_id)
    waiting = client.get(f"/api/sign/{executive}")
    assert waiting.status_code == 200
    assert waiting.json["waiting_for"] == ["Eliot Protsch"] and not waiting.json["can_sign"]
    assert waiting.json["letter"]["pages"] == []
    early = sign(client, executive)
    assert early.status_code == 409 and early.json["reason"] == "waiting"
    assert "Eliot Protsch must sign first" in early.json["error"]
    assert client.get(f"/sign/{executive}/pages/1.png").status_code == 410
    assert execution_state(letter_id) == before
    assert sign(client, company).status_code == 200
    # Their turn has come, but nobody emailed them: the link is ready to be handed over.
    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    assert [(s["status"], s["status_label"]) for s in envelope["signers"]] == [
        ("signed", "Signed"), ("ready", "Link ready")]
    record = client.get(f"/api/letters/{letter_id}/audit", headers=api).json
    assert [e["counterpart_id"] for e in record["events"] if e["type"] == "link_ready"] == [
        envelope["signers"][1]["counterpart_id"]]
    assert [s["status"] for s in record["envelope"]["signers"]] == ["signed", "ready"]
    turn = client.get(f"/api/sign/{executive}")
    assert turn.json["can_sign"] and turn.json["signer"]["status"] == "viewed"


# --- bad links ---------------------------------------------------------------------------------

def _expire(app, letter_id) -> None:
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Envelope).where(Envelope.letter_id == letter_id)
                        .values(expires_at=utcnow() - dt.timedelta(minutes=1)))


def _tampered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]


BAD_LINKS = {
    # case: (what to do to the envelope, which token to use, status, reason)
    "expired": 410, "voided": 410, "used": 410, "declined": 410, "tampered": 404,
    "unknown": 404, "previous envelope": 410,
}


@pytest.mark.parametrize("case", list(BAD_LINKS))
def test_a_bad_link_is_refused_everywhere_and_changes_nothing(app, client, api, sent,
                                                              send_letter, execution_state,
                                                              case):
    letter_id = sent["letter_id"]
    company, executive = (s["token"] for s in sent["signers"])
    token = company
    if case == "expired":
        _expire(app, letter_id)
    elif case == "voided":
        assert client.post(f"/api/letters/{letter_id}/envelope/void", headers=api,
                           json={"reason": "Wrong hourly rate"}).status_code == 200
    elif case == "used":
        assert sign(client, company).status_code == 200
    elif case == "declined":
        assert client.post(f"/api/sign/{executive}/decline",
                           json={"reason": "No"}).status_code == 200
    elif case == "tampered":
        token = _tampered(company)
    elif case == "unknown":
        token = "x" * 43
    elif case == "previous envelope":
        # The letter was voided and sent again: the first envelope's links stay dead, and do
        # not reach the new envelope.
        client.post(f"/api/letters/{letter_id}/envelope/void", headers=api, json={"reason": "x"})
        send_letter(letter_id)
    status = BAD_LINKS[case]
    # A used link still reads: its page and the API show what was signed (200).
    reads = 200 if case == "used" else status
    before = execution_state(letter_id)
    browser = app.test_client()
    form_token = csrf_token(browser.get("/verify").text)

    answers = {
        "page": browser.get(f"/sign/{token}"),
        "picture": browser.get(f"/sign/{token}/pages/1.png"),
        "pdf": browser.get(f"/sign/{token}/letter.pdf"),
        "sign form": browser.post(f"/sign/{token}", data={
            "csrf_token": form_token, "consent": "yes", "signature_type": "typed",
            "signature_text": "Eliot Protsch"}),
        "decline form": browser.post(f"/sign/{token}/decline", data={
            "csrf_token": form_token, "reason": "Changed my mind"}),
        "api": browser.get(f"/api/sign/{token}"),
        "api sign": browser.post(f"/api/sign/{token}", json=TYPED),
        "api decline": browser.post(f"/api/sign/{token}/decline", json={"reason": "No"}),
    }
    for what, response in answers.items():
        expected = reads if what in ("page", "api") else status
        assert response.status_code == expected, (what, response.status_code)
    assert execution_state(letter_id) == before
    page = answers["page"].text
    if status == 404:
        assert "This signing link is not valid" in page
    elif case == "used":
        assert "You signed this letter" in page
        assert answers["api"].json["can_sign"] is False
        assert answers["api sign"].json["reason"] == "signed"
        assert "already been signed" in answers["sign form"].text
    else:
        reason = {"previous envelope": "voided"}.get(case, case)
        assert answers["api"].json["reason"] == reason
        assert answers["api sign"].json["reason"] == reason
        assert {"expired": "has expired", "voided": "withdrawn",
                "declined": "declined"}[reason] in page
    assert "Sign the letter" not in page


def test_expired_links_read_expired_at_once_and_the_sweep_records_them(
        app, client, api, staff, sent, execution_state):
    letter_id = sent["letter_id"]
    _expire(app, letter_id)
    before = execution_state(letter_id)
    page = staff.get(f"/letters/{letter_id}")
    assert "The signing links expired" in page.text
    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    assert [s["status"] for s in envelope["signers"]] == ["expired", "expired"]
    for record in (client.get(f"/api/letters/{letter_id}/audit", headers=api).json,
                   staff.get(f"/letters/{letter_id}/audit.json").json):
        assert [s["status"] for s in record["envelope"]["signers"]] == ["expired", "expired"]
    # Looking wrote nothing: the counterparts are stored as they were, and no event was added.
    assert execution_state(letter_id) == before
    assert count(app, Event, type="expired") == 0
    assert all(c[1] != "expired" for c in before["counterparts"])

    with app.app_context():
        assert jobs.expire_signing_links.call_local() == 2  # the sweep, every minute
    assert count(app, Event, type="expired") == 2
    assert {c[1] for c in execution_state(letter_id)["counterparts"]} == {"expired"}
    page = staff.get(f"/letters/{letter_id}")
    assert "The signing links expired" in page.text


# --- void --------------------------------------------------------------------------------------

def test_void_stops_the_links_and_the_letter_can_be_sent_again(client, api, sent,
                                                               send_letter, reference_terms):
    letter_id = sent["letter_id"]
    url = f"/api/letters/{letter_id}/envelope/void"
    missing = client.post(url, headers=api, json={})
    assert missing.status_code == 400 and "reason" in missing.json["error"]
    voided = client.post(url, headers=api, json={"reason": "Wrong hourly rate"})
    assert voided.status_code == 200
    assert voided.json["status"] == "voided" and voided.json["void_reason"] == "Wrong hourly rate"
    assert [s["status"] for s in voided.json["signers"]] == ["voided", "voided"]
    assert client.post(url, headers=api, json={"reason": "again"}).status_code == 409
    assert client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api).status_code == 409

    # The terms may change again, and the new version is sent with new links.
    changed = client.put(f"/api/letters/{letter_id}/terms", headers=api,
                         json={"terms": {**reference_terms, "hourly_rate": "650"}})
    assert changed.status_code == 200 and changed.json["current_version"] == 2
    again = send_letter(letter_id)
    assert {s["token"] for s in again["signers"]}.isdisjoint(
        s["token"] for s in sent["signers"])
    assert sign(client, again["signers"][0]["token"]).status_code == 200


def test_an_executed_letter_cannot_be_voided(client, api, sent):
    for signer in sent["signers"]:
        assert sign(client, signer["token"]).status_code == 200
    response = client.post(f"/api/letters/{sent['letter_id']}/envelope/void", headers=api,
                           json={"reason": "too late"})
    assert response.status_code == 409


# --- paper -------------------------------------------------------------------------------------

def today() -> str:
    return utcnow().date().isoformat()


def upload(client, api, letter_id, counterpart_id, data: bytes, name: str = "scan.pdf",
           **fields: str):
    fields.setdefault("signed_on", today())
    return client.post(f"/api/letters/{letter_id}/counterparts/{counterpart_id}/upload",
                       headers=api, data={"file": (io.BytesIO(data), name), **fields},
                       content_type="multipart/form-data")


def blank_of(client, api, letter_id, counterpart_id) -> bytes:
    blank = client.post(f"/api/letters/{letter_id}/counterparts/{counterpart_id}/blank.pdf",
                        headers=api)
    assert blank.status_code == 200
    return blank.data


def test_paper_counterparts(app, client, api, sent, make_letter, reference_terms,
                            execution_state):
    letter_id = sent["letter_id"]
    company, executive = (s["counterpart_id"] for s in sent["signers"])
    blank = client.post(f"/api/letters/{letter_id}/counterparts/{executive}/blank.pdf",
                        headers=api)
    assert blank.status_code == 200
    assert blank.headers["Content-Disposition"].startswith("attachment;")
    assert "john-r-tucker-separation-letter-counterpart-2-john-r-tucker-to-sign.pdf" in \
        blank.headers["Content-Disposition"]
    assert len(pdf_reader(blank.data).pages) == 3
    scan = scan_of(blank.data, signed_by=["executive"], angle=2.2, paper="a4")

    before = execution_state(letter_id)
    for data, fields, status, message in (
            (b"GIF89a", {}, 400, "not a PDF"),
            (extract_pages(blank.data, [0, 1]), {}, 400, "2 pages"),
            (scan, {"signed_on": ""}, 400, "signed_on: give the date the signer signed"),
            (scan, {"signed_on": "2999-01-01"}, 400, "signed_on: 2999-01-01 is in the future"),
            (scan, {"confirm": "perhaps"}, 400, "confirm must be true or false")):
        refused = upload(client, api, letter_id, executive, data, **fields)
        assert refused.status_code == status and message in refused.json["error"], refused.text
    # The blank itself, its signature page, or a scan of it with nothing written: unsigned.
    for data, name, message in (
            (blank.data, "blank.pdf", "blank.pdf is the letter's PDF (the blank counterpart)"),
            (extract_pages(blank.data, [2]), "page.pdf", "page.pdf is the unsigned counterpart"),
            (scan_of(blank.data, angle=-1.0, noise=16), "plain.pdf",
             "plain.pdf is the unsigned counterpart")):
        refused = upload(client, api, letter_id, executive, data, name)
        assert refused.status_code == 422, refused.text
        assert refused.json["code"] == "unsigned_copy" and message in refused.json["error"]
    no_file = client.post(f"/api/letters/{letter_id}/counterparts/{executive}/upload",
                          headers=api, data={}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "'file'" in no_file.json["error"]
    other_letter = make_letter(reference_terms)
    assert upload(client, api, other_letter, executive, scan).status_code == 404
    # The download of the blank is on the record; nothing else changed.
    assert execution_state(letter_id) == before

    first = upload(client, api, letter_id, executive, scan, "tucker-signed.pdf",
                   signed_on=today())
    assert first.status_code == 201, first.text
    assert first.json["new"] is True
    counterpart = first.json["counterpart"]
    assert (counterpart["status"], counterpart["method"]) == ("signed", "paper")
    assert counterpart["signed_on"] == today() and counterpart["uploaded_at"]
    assert counterpart["can_undo_upload"] is True and counterpart["pending_upload"] is False
    assert counterpart["paper"]["filename"] == "tucker-signed.pdf"
    assert counterpart["paper"]["ink"] == "found"
    assert counterpart["paper"]["recorded_by"] == "counsel@example.com"
    assert counterpart["paper"]["signature_page"] == 0
    assert len(counterpart["paper"]["crop_box"]) == 4
    again = upload(client, api, letter_id, executive, scan, "scan-again.pdf")
    assert again.status_code == 200 and again.json["new"] is False
    different = upload(client, api, letter_id, executive,
                       scan_of(blank.data, signed_by=["executive"], seed=5))
    assert different.status_code == 409 and "already signed" in different.json["error"]
    assert count(app, Document, kind="scanned_counterpart") == 1

    stored = client.post(f"/api/letters/{letter_id}/counterparts/{executive}/signed.pdf",
                         headers=api)
    assert stored.data == scan  # byte for byte
    unsigned = client.post(f"/api/letters/{letter_id}/counterparts/{company}/signed.pdf",
                           headers=api)
    assert unsigned.status_code == 409

    assert sign(client, sent["signers"][0]["token"]).json["fully_executed"] is True
    executed = pdf_reader(client.post(f"/api/letters/{letter_id}/executed.pdf",
                                      headers=api).data)
    certificate = " ".join(" ".join(p.extract_text() for p in executed.pages[5:]).split())
    assert "paper" in certificate and "typed" in certificate


def test_no_signature_on_the_line_is_422_until_confirmed(app, client, api, sent):
    letter_id = sent["letter_id"]
    executive = sent["signers"][1]["counterpart_id"]
    blank = blank_of(client, api, letter_id, executive)
    # Signed by the chair on the chair's line; the executive's line is empty.
    scan = scan_of(blank, signed_by=["company"], paper="letter", angle=-1.4)
    refused = upload(client, api, letter_id, executive, scan, "chair-only.pdf")
    assert refused.status_code == 422 and refused.json["code"] == "ink_not_found"
    assert ("No signature was found on John R. Tucker's signature line in chair-only.pdf"
            in refused.json["error"])
    assert "accept it anyway" in refused.json["error"]
    assert count(app, Document, kind="scanned_counterpart") == 0
    accepted = upload(client, api, letter_id, executive, scan, "chair-only.pdf",
                      confirm="true")
    assert accepted.status_code == 201, accepted.text
    paper = accepted.json["counterpart"]["paper"]
    assert paper["ink"] == "accepted_without_ink"
    assert paper["ink_accepted_by"] == "counsel@example.com"
    events = client.get(f"/api/letters/{letter_id}/audit", headers=api).json["events"]
    signed = [e for e in events if e["type"] == "signed"][-1]
    assert signed["detail"]["ink"] == "accepted_without_ink"
    assert signed["detail"]["ink_accepted_by"] == "counsel@example.com"


def test_the_a4_case_keeps_the_signing_order_unless_overridden_on_the_record(
        app, client, api, make_letter, send_letter, reference_terms, execution_state):
    letter_id = make_letter(reference_terms)
    answer = send_letter(letter_id, signing_order=True)
    executive = answer["signers"][1]["counterpart_id"]
    case = (CASES / "scan-a4-executive.pdf").read_bytes()
    before = execution_state(letter_id)
    refused = upload(client, api, letter_id, executive, case, "scan-a4-executive.pdf")
    assert refused.status_code == 409 and refused.json["code"] == "signing_order"
    assert "Eliot Protsch must sign before John R. Tucker" in refused.json["error"]
    assert execution_state(letter_id) == before  # the refused scan changed nothing
    no_reason = upload(client, api, letter_id, executive, case, override_order="true")
    assert no_reason.status_code == 400 and "reason" in no_reason.json["error"]
    # Overridden with a reason, the scan counts at once: the executive's ink is on it.
    reason = "The chair signs at the next board meeting; the executive leaves today"
    accepted = upload(client, api, letter_id, executive, case, override_order="true",
                      reason=reason)
    assert accepted.status_code == 201, accepted.text
    paper = accepted.json["counterpart"]["paper"]
    assert paper["order_override_reason"] == reason
    assert paper["order_override_by"] == "counsel@example.com"
    assert paper["ink"] == "found"
    record = client.get(f"/api/letters/{letter_id}/audit", headers=api).json
    signed = [e for e in record["events"] if e["type"] == "signed"][-1]
    assert signed["detail"]["order_override_reason"] == reason
    assert record["letter"]["status"] == "partially_executed"


@pytest.mark.parametrize("case", ["scan-bytes-before-header.pdf",
                                  "scan-owner-password-only.pdf"])
def test_pdfs_that_viewers_open_are_accepted(app, client, api, sent, case):
    letter_id = sent["letter_id"]
    company = sent["signers"][0]["counterpart_id"]
    original = (CASES / case).read_bytes()
    response = upload(client, api, letter_id, company, original, case)
    assert response.status_code == 201, response.text
    paper = response.json["counterpart"]["paper"]
    assert paper["ink"] == "found" and paper["filename"] == case
    assert paper["sha256"] == hashlib.sha256(original).hexdigest()
    with app.app_context(), get_db().transaction() as session:
        kept = session.scalar(select(Document).where(
            Document.kind == "scanned_counterpart",
            Document.blob_sha256 == hashlib.sha256(original).hexdigest()))
        assert kept is not None  # the upload as it came, kept as evidence
    signed = client.post(f"/api/letters/{letter_id}/counterparts/{company}/signed.pdf",
                         headers=api)
    reader = pdf_reader(signed.data)
    assert not reader.is_encrypted and len(reader.pages) == 1


def test_a_paper_upload_is_undone_through_the_api(app, client, api, sent):
    letter_id = sent["letter_id"]
    company, executive = (s["counterpart_id"] for s in sent["signers"])
    url = f"/api/letters/{letter_id}/counterparts/{executive}/upload"
    blank = blank_of(client, api, letter_id, executive)
    scan = scan_of(blank, signed_by=["executive"])
    assert upload(client, api, letter_id, executive, scan, "tucker.pdf").status_code == 201
    undone = client.delete(url, headers=api)
    assert undone.status_code == 200, undone.text
    assert undone.json["counterpart"]["status"] == "ready"
    assert undone.json["counterpart"]["paper"] is None
    assert undone.json["signed"] == 0
    assert client.get(f"/api/letters/{letter_id}", headers=api).json["status"] == \
        "out_for_signature"
    again = client.delete(url, headers=api)
    assert again.status_code == 409 and "not signed on paper" in again.json["error"]
    events = client.get(f"/api/letters/{letter_id}/audit", headers=api).json["events"]
    undo = [e for e in events if e["type"] == "upload_undone"]
    assert len(undo) == 1 and undo[0]["actor"] == "counsel@example.com"
    assert undo[0]["detail"]["file"] == "tucker.pdf" and undo[0]["detail"]["document_id"]
    assert count(app, Document, kind="scanned_counterpart") == 1  # kept

    # Counted again, then the chair signs: executed, and no longer undone.
    assert upload(client, api, letter_id, executive, scan, "tucker.pdf").status_code == 201
    assert sign(client, sent["signers"][0]["token"]).json["fully_executed"] is True
    late = client.delete(url, headers=api)
    assert late.status_code == 409 and "no longer be undone" in late.json["error"]
    assert client.delete(f"/api/letters/{letter_id}/counterparts/{company}/upload",
                         headers=api).status_code == 409


def test_uploads_over_the_size_limit_are_413(app, client, api, sent, execution_state):
    letter_id, executive = sent["letter_id"], sent["signers"][1]["counterpart_id"]
    app.config["MAX_CONTENT_LENGTH"] = 100 * 1024
    before = execution_state(letter_id)
    response = upload(client, api, letter_id, executive, b"%PDF-1.4\n" + b"0" * 200_000)
    assert response.status_code == 413
    assert "too large" in response.json["error"]
    assert execution_state(letter_id) == before


# --- assembly ------------------------------------------------------------------------------

def test_a_failed_assembly_does_not_fail_the_signer_and_can_be_retried(app, client, api,
                                                                       staff, sent,
                                                                       monkeypatch):
    from workflow import envelopes

    letter_id = sent["letter_id"]

    def broken_seal(pdf, sealer, **options):
        raise CounterpartError("The seal's key cannot sign (a PKCS#12 file replaced with a "
                               "bad one).")

    monkeypatch.setattr(envelopes, "seal_pdf", broken_seal)
    assert sign(client, sent["signers"][0]["token"]).status_code == 200
    last = sign(client, sent["signers"][1]["token"])
    assert last.status_code == 200  # the signature stands
    assert last.json["all_signed"] is True and last.json["fully_executed"] is False
    assert last.json["assembly"] == "running"  # failed once; its retries are queued
    assert run_retries() == envelopes.ASSEMBLY_RETRIES
    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    assert envelope["assembly"]["state"] == "failed"
    assert "cannot sign" in envelope["assembly"]["error"]
    assert count(app, Document, kind="executed_pdf") == 0
    page = staff.get(f"/letters/{letter_id}")
    assert "the executed PDF could not be assembled" in page.text
    assert "Partially executed" in page.text
    assert "Void this envelope" not in page.text  # every counterpart is signed

    refused = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert refused.status_code == 503
    assert "could not be assembled" in refused.json["error"]

    monkeypatch.undo()  # the seal is fixed
    retried = staff.post(f"/letters/{letter_id}/assembly/retry",
                         data={"csrf_token": csrf_token(page.text)})
    assert retried.status_code == 303
    page = staff.get(retried.headers["Location"])
    assert "The executed PDF is assembled and sealed." in page.text
    assert "Fully executed" in page.text
    assert count(app, Document, kind="executed_pdf") == 1
    assert client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api).status_code == 200


def test_retry_through_the_api_is_refused_when_nothing_failed(client, api, sent):
    for signer in sent["signers"]:
        sign(client, signer["token"])
    response = client.post(f"/api/letters/{sent['letter_id']}/assembly/retry", headers=api)
    assert response.status_code == 409 and "already made" in response.json["error"]


# --- at the same moment ----------------------------------------------------------------------

def _at_once(app, requests):
    """Run each (token, body) POST to the signer API in its own thread, all at once."""
    barrier = threading.Barrier(len(requests))
    answers: list = [None] * len(requests)

    def post(index, token, body):
        client = app.test_client()
        barrier.wait()
        answers[index] = client.post(f"/api/sign/{token}", json=body)

    threads = [threading.Thread(target=post, args=(i, token, body))
               for i, (token, body) in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_two_signers_at_the_same_moment_make_one_executed_pdf(app, client, api, sent,
                                                              drawn_signature):
    drawn = {"consent": True, "signature": {"type": "drawn", "png": drawn_signature}}
    answers = _at_once(app, [(sent["signers"][0]["token"], TYPED),
                             (sent["signers"][1]["token"], drawn)])
    assert [a.status_code for a in answers] == [200, 200]
    assert sorted(a.json["all_signed"] for a in answers) == [False, True]
    assert count(app, Document, kind="executed_pdf") == 1
    assert count(app, Event, type="executed") == 1
    executed = client.post(f"/api/letters/{sent['letter_id']}/executed.pdf", headers=api)
    reader = pdf_reader(executed.data)
    assert reader.pages[3].images and reader.pages[4].images  # both signatures


def test_one_link_used_twice_at_the_same_moment_signs_once(app, sent):
    token = sent["signers"][0]["token"]
    answers = _at_once(app, [(token, TYPED), (token, TYPED)])
    assert sorted(a.status_code for a in answers) == [200, 410]
    refused = next(a for a in answers if a.status_code == 410)
    assert refused.json["reason"] == "signed"
    assert count(app, Document, kind="signed_counterpart") == 1
    assert count(app, Event, type="signed") == 1
    with app.app_context(), get_db().transaction() as session:
        statuses = list(session.scalars(select(Counterpart.status).order_by(Counterpart.id)))
    assert statuses == ["signed", "ready"]


# --- email -------------------------------------------------------------------------------------

def test_each_signer_is_emailed_their_own_link(app, client, api, staff, make_letter,
                                               reference_terms, smtp_inbox):
    port, inbox = smtp_inbox
    use_mail(app, port, SMTP_FROM="legal@capstone.test")
    letter_id = make_letter(reference_terms)
    response = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
        "signers": [{"role": "company", "name": "Eliot Protsch", "email": "eliot@capstone.test"},
                    {"role": "executive", "name": "John R. Tucker", "email": "jt@home.test"}]})
    assert response.status_code == 201, response.text
    assert response.json["emails"] == {
        "sent": ["Eliot Protsch <eliot@capstone.test>", "John R. Tucker <jt@home.test>"],
        "failed": [], "queued": [], "error": None}
    # The mail server accepted both invitations: now, and only now, they are "sent".
    assert [(s["status"], s["status_label"]) for s in response.json["signers"]] == [
        ("sent", "Sent"), ("sent", "Sent")]
    assert all(s["emailed_at"] for s in response.json["signers"])
    record = client.get(f"/api/letters/{letter_id}/audit", headers=api).json
    emailed = [e for e in record["events"] if e["type"] == "emailed"]
    assert [e["detail"]["to"] for e in emailed] == ["eliot@capstone.test", "jt@home.test"]
    assert all(e["detail"]["answer"] == "250 OK" and e["detail"]["at"] for e in emailed)
    assert [s["status"] for s in record["envelope"]["signers"]] == ["sent", "sent"]
    page = staff.get(f"/letters/{letter_id}").text
    assert page.count('counterpart-sent">Sent</span>') == 2 and "Link ready" not in page
    assert "Invitation to jt@home.test accepted by the mail server" in page  # the timeline
    assert "the link goes by email to eliot@capstone.test" in page
    # Emailed by a job, outside any request: the links are on the app's BASE_URL.
    links = {s["email"]: "http://127.0.0.1:5000/sign/" + s["link"].rsplit("/", 1)[1]
             for s in response.json["signers"]}
    assert [email.utils.parseaddr(m["To"]) for m in inbox.messages] == [
        ("Eliot Protsch", "eliot@capstone.test"), ("John R. Tucker", "jt@home.test")]
    for message in inbox.messages:
        body = text_of(message)
        address = email.utils.parseaddr(message["To"])[1]
        assert links[address] in html_of(message)  # the HTML part carries the same link
        assert links[address] in body
        assert all(link not in body for other, link in links.items() if other != address)
        assert message["From"] == "Counterpart <legal@capstone.test>"
        assert " ".join(message["Subject"].split()) == (
            "Please sign: Separation letter of John R. Tucker, Capstone Turbine Corporation")


def test_a_mail_failure_keeps_the_envelope_and_its_links(app, client, api, staff, make_letter,
                                                        reference_terms):
    # Nothing listens on that port.
    use_mail(app, free_port())
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    response = staff.post(f"/letters/{letter_id}/envelope", data={
        "csrf_token": csrf_token(page.text), "link_days": "30",
        "signers-0-role": "company", "signers-0-name": "Eliot Protsch",
        "signers-0-email": "eliot@capstone.test",
        "signers-1-role": "executive", "signers-1-name": "John R. Tucker",
        "signers-1-email": ""})
    assert response.status_code == 303
    page = staff.get(response.headers["Location"])
    assert "The mail server did not take every signing email" in page.text
    assert "could not be reached" in page.text and "127.0.0.1" in page.text
    assert page.text.count('data-signing-link') == 2
    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    assert envelope["status"] == "out"
    # Nothing was handed to a mail server: both links are still to be handed over.
    assert [s["status"] for s in envelope["signers"]] == ["ready", "ready"]
    assert [s["emailed_at"] for s in envelope["signers"]] == [None, None]
    record = client.get(f"/api/letters/{letter_id}/audit", headers=api).json
    failed = [e for e in record["events"] if e["type"] == "email_failed"]
    assert [e["detail"]["to"] for e in failed] == ["eliot@capstone.test"]
    assert "could not be reached" in failed[0]["detail"]["error"]
    assert not [e for e in record["events"] if e["type"] == "emailed"]
    timeline = staff.get(f"/letters/{letter_id}").text
    assert "Email not accepted" in timeline
    assert "link ready to be handed over: not emailed" in timeline


# --- verify ------------------------------------------------------------------------------------

def executed_pdf(client, api, sent) -> bytes:
    for signer in sent["signers"]:
        assert sign(client, signer["token"]).status_code == 200
    return client.post(f"/api/letters/{sent['letter_id']}/executed.pdf", headers=api).data


def verify(client, data: bytes):
    return client.post("/api/verify", data={"file": (io.BytesIO(data), "letter.pdf")},
                       content_type="multipart/form-data")


def test_verify_tells_intact_from_modified(app, client, api, sent):
    executed = executed_pdf(client, api, sent)
    stranger = app.test_client()  # no account, no token

    good = verify(stranger, executed)
    assert good.status_code == 200
    assert good.json["known"] is True and good.json["intact"] is True
    assert good.json["sealed"] and good.json["signed_by_this_system"]
    assert [s["name"] for s in good.json["signers"]] == ["Eliot Protsch", "John R. Tucker"]

    middle = len(executed) // 3
    flipped = executed[:middle] + bytes([executed[middle] ^ 0x01]) + executed[middle + 1:]
    changed = verify(stranger, flipped).json
    assert changed["intact"] is False and changed["modified"] is True

    writer = pypdf.PdfWriter(io.BytesIO(executed), incremental=True)
    writer.add_metadata({"/Note": "amended after execution"})
    buffer = io.BytesIO()
    writer.write(buffer)
    appended = verify(stranger, buffer.getvalue()).json
    assert appended["known"] is True
    assert appended["intact"] is False and appended["modified"] is True

    blank = client.get(f"/api/letters/{sent['letter_id']}/document.pdf", headers=api).data
    unknown = verify(stranger, blank).json
    assert unknown["known"] is False and unknown["intact"] is False

    missing = stranger.post("/api/verify", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "'file'" in missing.json["error"]
