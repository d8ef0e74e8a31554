"""Speed of ``POST /api/verify`` for an executed letter: cold sandboxes against warm ones.

Makes one executed letter (generated through LibreOffice, sent to two signers who sign with a
typed signature, assembled and sealed) in a fresh data folder, then starts a real
``counterpart serve`` on that folder twice in the same run: first with every check in a child
started for it (``COUNTERPART_SANDBOX_SPARE=0``, the cold start before warm sandboxes), then
with the warm pool (``COUNTERPART_SANDBOX_SPARE`` unset: 2 warm children). Each time it posts
the executed PDF 41 times from one client (median and p95), then from 10 clients at once
(``--rounds`` files each; p50, p95, and how many were answered 503 because the queue of checks
was full). The server gets room for the ten in its queue (``COUNTERPART_VERIFY_WAITING=8``,
2 workers) so that the figures are times, not refusals.

Goal: with warm sandboxes, median at most 100 ms for one client, and p95 under 10 clients at
most 10 times that median. Not a test: read the figures.

    make bench                          # runs this among the others
    .venv/bin/python bench/bench_verify.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from serving import ServerProcess  # noqa: E402

__all__ = ["executed_letter", "measure", "main"]

EMAIL, PASSWORD = "bench@example.com", "a long bench password 1"
SINGLE_REQUESTS = 41
CLIENTS = 10


def executed_letter(data_dir: Path) -> bytes:
    """Make one executed, sealed letter in ``data_dir`` through the app; return its PDF."""
    from web import create_app
    from web.database import get_db
    from web.documents import get_documents
    from workflow.accounts import create_api_token, create_user
    from workflow.convert import PdfConverter
    from workflow.letters import create_letter, generate_document, pending_documents
    from workflow.schema import load_template, sample_terms

    with PdfConverter(processes=1) as converter:
        app = create_app({"DATA_DIR": data_dir, "QUEUE_URL": "immediate",
                          "PDF_CONVERTER": converter, "TESTING": True})
        try:
            with app.app_context():
                with get_db().transaction() as session:
                    user = create_user(session, EMAIL, PASSWORD)
                    token = create_api_token(session, EMAIL, "bench")
                    terms = sample_terms(load_template("separation_letter"))
                    letter_id = create_letter(session, "separation_letter", terms, user).id
                with get_db().transaction() as session:
                    pending = pending_documents(session)
                for document_id in pending:
                    generate_document(get_db(), document_id, get_documents().converter)
            client = app.test_client()
            api = {"Authorization": f"Bearer {token}"}
            sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
                "signers": [{"role": "company", "name": "Eliot Protsch",
                             "email": "eliot@capstone.test"},
                            {"role": "executive", "name": "John R. Tucker",
                             "email": "john@capstone.test"}]})
            assert sent.status_code == 201, sent.text
            for signer in sent.json["signers"]:
                link_token = signer["link"].rsplit("/", 1)[1]
                signed = client.post(f"/api/sign/{link_token}", json={
                    "consent": True, "signature": {"type": "typed", "text": signer["name"]}})
                assert signed.status_code == 200, signed.text
            executed = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
            assert executed.status_code == 200, executed.text
            return executed.data
        finally:
            app.extensions["counterpart.documents"].close()
            app.extensions["counterpart.db"].dispose()


def _post(client: httpx.Client, url: str, pdf: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.post(url + "/api/verify", files={"file": ("letter.pdf", pdf)})
    elapsed = time.perf_counter() - started
    if response.status_code == 200:
        assert response.json()["intact"] is True, response.text
    return elapsed, response.status_code


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(data_dir: Path, pdf: bytes, spare: str | None, rounds: int) -> dict[str, Any]:
    """Start a server with ``spare`` warm children (None: the default) and time /api/verify."""
    environment = {"COUNTERPART_RATE_LIMIT_VERIFY": "100000 per minute",
                   "COUNTERPART_VERIFY_WORKERS": "2", "COUNTERPART_VERIFY_WAITING": "8"}
    if spare is not None:
        environment["COUNTERPART_SANDBOX_SPARE"] = spare
    with ServerProcess(data_dir, None, environment=environment,
                       serve_options=["--no-worker"]) as server, \
            httpx.Client(timeout=60) as client:
        for _ in range(3):  # the first check of a server process starts its pool
            _post(client, server.url, pdf)
        time.sleep(1.0)
        single = [_post(client, server.url, pdf) for _ in range(SINGLE_REQUESTS)]
        assert all(status == 200 for _, status in single), single
        times: list[tuple[float, int]] = []
        lock = threading.Lock()
        gate = threading.Barrier(CLIENTS)

        def one_client() -> None:
            with httpx.Client(timeout=60) as own:
                gate.wait()
                for _ in range(rounds):
                    answer = _post(own, server.url, pdf)
                    with lock:
                        times.append(answer)

        started = time.perf_counter()
        threads = [threading.Thread(target=one_client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    ok = [elapsed for elapsed, status in times if status == 200]
    single_times = [elapsed for elapsed, _ in single]
    return {"single_p50": statistics.median(single_times),
            "single_p95": _percentile(single_times, 0.95),
            "loaded_p50": statistics.median(ok) if ok else float("nan"),
            "loaded_p95": _percentile(ok, 0.95) if ok else float("nan"),
            "busy": sum(1 for _, status in times if status == 503),
            "requests": len(times), "per_second": len(ok) / wall}


def main(argv: list[str] | None = None) -> int:
    """Make the letter, measure cold then warm, print the table and the goals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10,
                        help="files each of the 10 clients checks (default 10)")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as folder:
        data_dir = Path(folder) / "data"
        data_dir.mkdir()
        pdf = executed_letter(data_dir)
        print(f"executed letter: {len(pdf):,} bytes")
        results = {"cold (SPARE=0)": measure(data_dir, pdf, "0", options.rounds),
                   "warm (default)": measure(data_dir, pdf, None, options.rounds)}
    print(f"{'sandboxes':<16}{'1 client p50':>14}{'p95':>10}{'10 clients p50':>16}"
          f"{'p95':>10}{'req/s':>8}{'503s':>8}")
    for name, row in results.items():
        print(f"{name:<16}{row['single_p50'] * 1000:>11.0f} ms{row['single_p95'] * 1000:>7.0f} ms"
              f"{row['loaded_p50'] * 1000:>13.0f} ms{row['loaded_p95'] * 1000:>7.0f} ms"
              f"{row['per_second']:>8.1f}{row['busy']:>5}/{row['requests']}")
    warm, cold = results["warm (default)"], results["cold (SPARE=0)"]
    print(f"goal: warm median {warm['single_p50'] * 1000:.0f} ms <= 100 ms: "
          f"{'yes' if warm['single_p50'] <= 0.1 else 'NO'}; "
          f"10-client p95 {warm['loaded_p95'] / warm['single_p50']:.1f} x median <= 10: "
          f"{'yes' if warm['loaded_p95'] <= 10 * warm['single_p50'] else 'NO'}; "
          f"median {cold['single_p50'] / warm['single_p50']:.1f} times faster than cold")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
