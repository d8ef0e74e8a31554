"""Two app server processes on one database: signers of one letter on different servers, staff
working on one while the other assembles. Exactly one executed PDF with every signature, no lost
event, a valid audit chain.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving import ServerProcess
from sqlalchemy import func, select

from workflow.accounts import create_api_token
from workflow.audit import events_of, verify_chain
from workflow.models import Document, Envelope
from workflow.seal import check_seal, load_or_create_sealer

LETTERS = 4
SIGNATURE = {"consent": True, "signature": {"type": "typed", "text": "Signed on a server"}}


@pytest.fixture()
def servers(data_dir, database_url):
    first = ServerProcess(data_dir, database_url)
    second = ServerProcess(data_dir, database_url)
    try:
        yield first.wait_until_up(), second.wait_until_up()
    finally:
        first.stop()
        second.stop()


def test_two_servers_execute_each_letter_exactly_once(servers, shared_database, data_dir,
                                                      credentials, reference_terms):
    first, second = servers
    database = shared_database
    with database.transaction() as session:
        token = create_api_token(session, credentials["staff"][0], "two servers")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=120) as a, \
            httpx.Client(headers=headers, timeout=120) as b:
        letter_ids, links = [], []
        for index in range(LETTERS):
            terms = {**reference_terms, "company_name": f"Company {index}"}
            created = (a if index % 2 else b).post(f"{first.url if index % 2 else second.url}"
                                                   "/api/letters",
                                                   json={"template": "separation_letter",
                                                         "terms": terms})
            assert created.status_code == 201, created.text
            letter_id = created.json()["id"]
            sent = b.post(f"{second.url}/api/letters/{letter_id}/envelope", json={})
            assert sent.status_code == 201, sent.text
            letter_ids.append(letter_id)
            links.append([s["link"] for s in sent.json()["signers"]])

        start = threading.Barrier(2 * LETTERS + 1)

        def sign(base: str, link: str) -> int:
            token_part = link.rsplit("/sign/", 1)[1]
            with httpx.Client(timeout=120) as signer:
                start.wait()
                return signer.post(f"{base}/api/sign/{token_part}", json=SIGNATURE).status_code

        def staff_edits() -> list[int]:
            start.wait()
            answers = []
            for letter_id in letter_ids:  # locked while out for signature: refused, not lost
                answers.append(a.put(f"{first.url}/api/letters/{letter_id}/terms",
                                     json={"terms": reference_terms}).status_code)
            other = a.post(f"{first.url}/api/letters", json={"template": "separation_letter",
                                                              "terms": reference_terms})
            answers.append(other.status_code)
            return answers

        with ThreadPoolExecutor(max_workers=2 * LETTERS + 1) as pool:
            signatures = [pool.submit(sign, first.url if i % 2 == 0 else second.url, link)
                          for pair in links for i, link in enumerate(pair)]
            edits = pool.submit(staff_edits)
            assert [f.result() for f in signatures] == [200] * (2 * LETTERS)
            assert all(code in (409, 201) for code in edits.result())

        executed = {}
        for letter_id in letter_ids:
            from_a = a.post(f"{first.url}/api/letters/{letter_id}/executed.pdf")
            from_b = b.post(f"{second.url}/api/letters/{letter_id}/executed.pdf")
            assert from_a.status_code == from_b.status_code == 200
            assert from_a.content == from_b.content
            executed[letter_id] = from_a.content

    sealer = load_or_create_sealer(data_dir)
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == LETTERS
        for letter_id in letter_ids:
            assert verify_chain(session, letter_id).ok
            types = [e.type for e in events_of(session, letter_id)]
            assert types.count("signed") == 2 and types.count("consented") == 2
            assert types.count("executed") == 1
            assert types.count("sent") == 2
            envelope = session.scalar(select(Envelope).where(Envelope.letter_id == letter_id))
            assert envelope.status == "completed"
            assert [c.status for c in envelope.counterparts] == ["signed", "signed"]
    for pdf in executed.values():
        check = check_seal(pdf, sealer.certificate)
        assert check.intact and check.signed_by_us
