"""A bounded load test on loopback: 50 clients for 30 seconds over the main pages and the
signing endpoints of a real server process. No error answers, no lost or doubled signature, no
doubled assembly; it prints the throughput and the 95th percentile latency.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving import ServerProcess
from sqlalchemy import func, select

from workflow.accounts import create_api_token
from workflow.audit import events_of, verify_chain
from workflow.models import Document

CLIENTS = 50
SECONDS = 30
LETTERS = 12
SIGNATURE = {"consent": True, "signature": {"type": "typed", "text": "Signed under load"}}


@pytest.fixture()
def server(data_dir, database_url):
    with ServerProcess(data_dir, database_url, threads=16) as running:
        yield running


def test_fifty_clients_for_thirty_seconds(server, shared_database, credentials,
                                          reference_terms, capsys):
    database = shared_database
    with database.transaction() as session:
        token = create_api_token(session, credentials["staff"][0], "load test")
    staff_headers = {"Authorization": f"Bearer {token}"}
    tokens: list[str] = []
    letter_ids: list[int] = []
    with httpx.Client(base_url=server.url, headers=staff_headers, timeout=120) as staff:
        for index in range(LETTERS):
            created = staff.post("/api/letters", json={
                "template": "separation_letter",
                "terms": {**reference_terms, "executive_full_name": f"Executive {index}"}})
            assert created.status_code == 201, created.text
            letter_ids.append(created.json()["id"])
            sent = staff.post(f"/api/letters/{letter_ids[-1]}/envelope", json={})
            assert sent.status_code == 201, sent.text
            tokens += [s["link"].rsplit("/sign/", 1)[1] for s in sent.json()["signers"]]

    # Each signing link belongs to one client, which signs once at a random moment.
    random.seed(7)
    random.shuffle(tokens)
    owned = {client: tokens[client::CLIENTS] for client in range(CLIENTS)}
    deadline = time.monotonic() + SECONDS
    latencies: list[float] = []
    statuses: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def client(number: int) -> None:
        mine = list(owned[number])
        sign_at = sorted(random.uniform(0, SECONDS * 0.8) for _ in mine)
        started = time.monotonic()
        # Each client comes from its own loopback address, as colleagues' machines would: the
        # server bounds the connections one address may hold.
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{number + 2}")
        with httpx.Client(base_url=server.url, timeout=60, transport=transport) as http:
            while time.monotonic() < deadline:
                if mine and time.monotonic() - started >= sign_at[0]:
                    sign_at.pop(0)
                    link = mine.pop(0)
                    requests = [("sign", "POST", f"/api/sign/{link}", SIGNATURE, {})]
                else:
                    letter_id = random.choice(letter_ids)
                    link = random.choice(tokens)
                    requests = [random.choice([
                        ("letters", "GET", "/api/letters", None, staff_headers),
                        ("letter", "GET", f"/api/letters/{letter_id}", None, staff_headers),
                        ("envelope", "GET", f"/api/letters/{letter_id}/envelope", None,
                         staff_headers),
                        ("signing page", "GET", f"/api/sign/{link}", None, {}),
                        ("sign-in page", "GET", "/sign-in", None, {}),
                    ])]
                for name, method, url, body, headers in requests:
                    began = time.perf_counter()
                    response = http.request(method, url, json=body, headers=headers)
                    elapsed = time.perf_counter() - began
                    with lock:
                        latencies.append(elapsed)
                        statuses[(name, response.status_code)] += 1

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        for future in [pool.submit(client, n) for n in range(CLIENTS)]:
            future.result()

    total = sum(statuses.values())
    p95 = statistics.quantiles(latencies, n=20)[18]
    with capsys.disabled():
        print(f"\nload: {CLIENTS} clients, {SECONDS} s, {total} requests, "
              f"{total / SECONDS:.0f} requests/s, p95 {p95 * 1000:.0f} ms, "
              f"median {statistics.median(latencies) * 1000:.0f} ms")
    # A signing link that has been used answers 410 Gone: that is its correct answer.
    errors = {key: count for key, count in statuses.items()
              if key[1] >= 500 or (key[1] >= 400 and not (key[0] == "signing page"
                                                          and key[1] == 410))}
    assert errors == {}, errors
    assert statuses[("sign", 200)] == 2 * LETTERS

    # The last signatures' assemblies are background jobs of the server's worker: let the
    # queue drain (a minute at most), then count.
    deadline = time.monotonic() + 60
    while True:
        with database.transaction() as session:
            made = session.scalar(select(func.count()).select_from(Document).where(
                Document.kind == "executed_pdf"))
        if made >= LETTERS or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == LETTERS
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "signed_counterpart")) == 2 * LETTERS
        for letter_id in letter_ids:
            assert verify_chain(session, letter_id).ok
            types = Counter(e.type for e in events_of(session, letter_id))
            assert types["signed"] == 2 and types["executed"] == 1
