"""The executed letter is assembled by a background job after the last signature: the signer's
request answers at once, the job makes it once however often it runs, and a failed assembly
is retried by staff from the letter page.

Most tests here hold the queue (tests/held_jobs.py), as a server with workers would: the
request has answered and the job waits until the test runs it.
"""

from __future__ import annotations

import hashlib

import pytest
from held_jobs import held_jobs
from sqlalchemy import func, select

from web.database import get_db
from web.testing import csrf_token
from workflow import envelopes
from workflow.errors import CounterpartError
from workflow.models import Document, Envelope, Event, Letter


def path_of(link: str) -> str:
    return link.removeprefix("http://localhost")


def sign_on_page(app, link: str):
    """Sign a link's counterpart through the signing page, in a browser of its own."""
    signer = app.test_client()
    page = signer.get(path_of(link))
    assert page.status_code == 200, page.text
    answer = signer.post(path_of(link), data={
        "csrf_token": csrf_token(page.text), "consent": "yes", "signature_type": "typed",
        "signature_text": "Signed by me"})
    return signer, answer


def executed_copy(signer, link: str):
    """POST the signer's "executed letter" download, with the page's CSRF token."""
    page = signer.get(path_of(link))
    return signer.post(f"{path_of(link)}/executed.pdf",
                       data={"csrf_token": csrf_token(page.text)})


def state(app, letter_id):
    """(letter status, envelope status, assembly state, executed PDFs, "executed" events)."""
    with app.app_context(), get_db().transaction() as session:
        envelope = session.scalar(select(Envelope).where(Envelope.letter_id == letter_id))
        documents = session.scalar(select(func.count()).select_from(Document).where(
            Document.letter_id == letter_id, Document.kind == "executed_pdf"))
        events = session.scalar(select(func.count()).select_from(Event).where(
            Event.letter_id == letter_id, Event.type == "executed"))
        return (session.get(Letter, letter_id).status, envelope.status,
                envelope.assembly_state, documents, events)


def assembly_jobs(queue) -> list[str]:
    return [name for name in queue.names() if "assemble_envelope_job" in name]


def test_the_sign_request_answers_before_the_executed_letter_is_assembled(app, staff, sent):
    letter_id = sent["letter_id"]
    company, executive = (s["link"] for s in sent["signers"])
    with held_jobs() as queue:
        sign_on_page(app, company)
        assert assembly_jobs(queue) == []
        signer, answer = sign_on_page(app, executive)
        assert answer.status_code == 303  # answered: the assembly waits in the queue
        envelope_id = sent["envelope_id"]
        assert assembly_jobs(queue) == [
            f"workflow.envelopes.assemble_envelope_job({envelope_id!r},)"]
        assert state(app, letter_id) == ("partially_executed", "out", "running", 0, 0)
        done = signer.get(answer.headers["Location"]).text
        assert "You signed this letter" in done
        assert "the executed letter is being put together" in done
        assert "The executed letter (PDF)" not in done  # no download until it exists
        early = executed_copy(signer, executive)
        assert early.status_code == 409 and "being put together" in early.text
        page = staff.get(f"/letters/{letter_id}").text
        assert "Assembling the executed PDF…" in page

        queue.run()  # a worker takes the job

    assert state(app, letter_id) == ("fully_executed", "completed", "done", 1, 1)
    done = signer.get(path_of(executive)).text
    assert "The letter is fully executed." in done
    copy = executed_copy(signer, executive)
    assert copy.status_code == 200 and copy.data.startswith(b"%PDF-")
    assert "Fully executed" in staff.get(f"/letters/{letter_id}").text


def test_a_second_assembly_run_adds_no_second_executed_letter(app, client, api, sent):
    letter_id = sent["letter_id"]
    with held_jobs() as queue:
        for signer in sent["signers"]:
            client.post(f"/api/sign/{signer['token']}",
                        json={"consent": True, "signature": {"type": "typed", "text": "Me"}})
        envelope_id = sent["envelope_id"]
        assert len(assembly_jobs(queue)) == 1
        envelopes.assemble_envelope_job(envelope_id)  # enqueued again: a retry, a takeover
        assert len(assembly_jobs(queue)) == 2
        queue.run()
        envelopes.assemble_envelope_job.call_local(envelope_id)  # and once more, here
    assert state(app, letter_id) == ("fully_executed", "completed", "done", 1, 1)
    download = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert download.status_code == 200
    with app.app_context(), get_db().transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        executed = session.get(Document, envelope.executed_document_id)
    assert hashlib.sha256(download.data).hexdigest() == executed.blob_sha256


def test_the_api_signature_says_the_assembly_is_under_way(app, client, api, sent):
    with held_jobs() as queue:
        first, last = (client.post(f"/api/sign/{s['token']}", json={
            "consent": True, "signature": {"type": "typed", "text": "Me"}})
            for s in sent["signers"])
        assert first.json["assembly"] is None and first.json["all_signed"] is False
        assert last.json["all_signed"] is True and last.json["assembly"] == "running"
        assert last.json["fully_executed"] is False
        envelope = client.get(f"/api/letters/{sent['letter_id']}/envelope", headers=api).json
        assert envelope["assembly"]["state"] == "running" and envelope["executed_pdf"] is None
        # Nothing failed, so there is nothing to retry while it waits for a worker.
        retry = client.post(f"/api/letters/{sent['letter_id']}/assembly/retry", headers=api)
        assert retry.status_code == 409 and "being assembled" in retry.json["error"]
        queue.run()
    envelope = client.get(f"/api/letters/{sent['letter_id']}/envelope", headers=api).json
    assert envelope["assembly"]["state"] == "done" and envelope["status"] == "completed"


def test_a_failed_assembly_is_retried_by_staff(app, client, api, staff, sent, monkeypatch):
    letter_id = sent["letter_id"]

    def broken_seal(pdf, sealer, **options):
        raise CounterpartError("The time-stamp server did not answer.")

    monkeypatch.setattr(envelopes, "seal_pdf", broken_seal)
    with held_jobs() as queue:
        for signer in sent["signers"]:
            client.post(f"/api/sign/{signer['token']}",
                        json={"consent": True, "signature": {"type": "typed", "text": "Me"}})
        queue.run()  # the first try fails: retried with backoff
        assert state(app, letter_id)[2] == "running"
        assert queue.run_retries() >= envelopes.ASSEMBLY_RETRIES
        assert state(app, letter_id) == ("partially_executed", "out", "failed", 0, 0)
        page = staff.get(f"/letters/{letter_id}").text
        assert "the executed PDF could not be assembled" in page
        assert "The time-stamp server did not answer." in page

        monkeypatch.undo()  # the time-stamp server answers again
        retried = staff.post(f"/letters/{letter_id}/assembly/retry",
                             data={"csrf_token": csrf_token(page)})
        assert retried.status_code == 303
        page = staff.get(retried.headers["Location"]).text
        assert "Assembling the executed PDF again" in page  # queued for a worker
        assert "Assembling the executed PDF…" in page
        assert state(app, letter_id)[2] == "running"
        queue.run()
    assert state(app, letter_id) == ("fully_executed", "completed", "done", 1, 1)
    assert "Fully executed" in staff.get(f"/letters/{letter_id}").text


@pytest.mark.parametrize("signed", [0, 1])
def test_retry_is_refused_until_every_counterpart_is_signed(client, api, sent, signed):
    for signer in sent["signers"][:signed]:
        client.post(f"/api/sign/{signer['token']}",
                    json={"consent": True, "signature": {"type": "typed", "text": "Me"}})
    retry = client.post(f"/api/letters/{sent['letter_id']}/assembly/retry", headers=api)
    assert retry.status_code == 409
    assert f"{signed} of 2 counterparts are signed" in retry.json["error"]
