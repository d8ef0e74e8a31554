"""Races decided by the database: a double submit signs once, a void during signing leaves one
consistent outcome, whichever request the database lets through first, and two runs of the
assembly job at once attach one executed PDF.
"""

from __future__ import annotations

import threading

import pytest
from held_jobs import held_jobs
from sqlalchemy import func, select

from workflow import envelopes as env
from workflow import jobs
from workflow.errors import LinkError, StateError
from workflow.letters import create_letter, generate_document, pending_documents
from workflow.models import Counterpart, Document, Envelope, Event, Letter
from workflow.seal import load_or_create_sealer

ACTOR = env.Actor("racer", "127.0.0.1", "pytest")
SIGNATURE = {"type": "typed", "text": "Racing"}


@pytest.fixture(scope="module")
def sealer(tmp_path_factory):
    return load_or_create_sealer(tmp_path_factory.mktemp("seal"))


@pytest.fixture(autouse=True)
def queue(database, converter, sealer):
    """Jobs wait in the queue until a test runs them, as they wait for a worker."""
    with held_jobs(jobs.Runtime(database, converter=converter, sealer=sealer)) as held:
        yield held


@pytest.fixture()
def sent(database, converter, reference_terms):
    with database.transaction() as session:
        letter_id = create_letter(session, "separation_letter", reference_terms, None).id
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)
    with database.transaction() as session:
        envelope, links = env.send_envelope(session, letter_id, None, ACTOR)
        return letter_id, envelope.id, [link.token for link in links]


def race(*actions):
    """Start the actions at the same moment; return each one's result or exception."""
    barrier = threading.Barrier(len(actions))
    results: list = [None] * len(actions)

    def run(index, action):
        barrier.wait()
        try:
            results[index] = action()
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def sign(database, token):
    with database.transaction() as session:
        return env.sign_counterpart(session, token, consent=True, signature=SIGNATURE,
                                    actor=ACTOR)[0].status


def void(database, letter_id):
    with database.transaction() as session:
        return env.void_envelope(session, letter_id, "withdrawn", ACTOR).status


def count(database, model, *where) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_a_double_submit_signs_once(database, sent):
    letter_id, _, (company, _) = sent
    results = race(lambda: sign(database, company), lambda: sign(database, company))
    assert sorted(type(r).__name__ if isinstance(r, Exception) else r for r in results) == \
        ["LinkError", "signed"]
    assert count(database, Document, Document.kind == "signed_counterpart") == 1
    assert count(database, Event, Event.type == "signed") == 1


def test_a_void_during_signing_has_one_consistent_outcome(database, sent):
    letter_id, _, (company, executive) = sent
    sign(database, company)
    results = race(lambda: sign(database, executive), lambda: void(database, letter_id))
    signed, voided = results
    with database.transaction() as session:
        letter = session.get(Letter, letter_id)
        statuses = [c.status for c in session.scalars(select(Counterpart)
                                                      .order_by(Counterpart.position))]
    if voided == "voided":
        # The void went first: the signature was refused and the letter is voided.
        assert isinstance(signed, LinkError) and signed.reason == "voided"
        assert letter.status == "voided" and statuses == ["signed", "voided"]
    else:
        # The signature went first: every counterpart is signed, so voiding is refused.
        assert signed == "signed" and isinstance(voided, StateError)
        assert statuses == ["signed", "signed"] and letter.status == "partially_executed"
    assert count(database, Event, Event.type == "voided") == (1 if voided == "voided" else 0)


def test_two_assembly_jobs_at_once_attach_one_executed_pdf(database, sent, queue):
    letter_id, envelope_id, (company, executive) = sent
    sign(database, company)
    sign(database, executive)
    assert [n for n in queue.names() if "assemble" in n] == [
        f"workflow.envelopes.assemble_envelope_job({envelope_id!r},)"]
    # The queued job and a second copy of it (a retry, a worker's job taken over) at once.
    results = race(lambda: env.assemble_envelope_job.call_local(envelope_id),
                   lambda: env.assemble_envelope_job.call_local(envelope_id))
    assert results == [None, None]  # neither failed
    queue.run()  # and the queued one, afterwards: nothing left to do
    assert count(database, Document, Document.kind == "executed_pdf") == 1
    assert count(database, Event, Event.type == "executed") == 1
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        executed = session.get(Document, envelope.executed_document_id)
        assert (envelope.status, envelope.assembly_state) == ("completed", "done")
        assert executed.kind == "executed_pdf"
        assert session.get(Letter, letter_id).status == "fully_executed"
