"""Memory soak: does the server's resident memory reach a plateau as letters are generated?

Starts a real ``counterpart serve`` with its background worker on a new SQLite data folder and
creates N letters through the API (eight requests at a time), each one's PDF made by the
worker through LibreOffice. After every step (1,000 letters, or N/5 when N is under 5,000) it
waits until the step's PDFs are made, then samples the resident memory (RSS) of the server's
processes (the server, its worker and any other Python child) and of LibreOffice, and once
more after 15 s idle at the end. The goal: after the first step, each later sample within 10%
of the first (a plateau, not a climb).

    make bench-soak LETTERS=5000
    .venv/bin/python bench/bench_soak.py 200
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from bench_web import EMAIL, FIRST, LAST, PASSWORD, serve_options  # noqa: E402
from serving import ServerProcess  # noqa: E402

from workflow.db import open_database  # noqa: E402

__all__ = ["memory", "main"]

PLATEAU = 0.10
IDLE_SECONDS = 15


def memory(pid: int) -> dict[str, float]:
    """Resident memory in MB of a process tree: ``server`` (every process but LibreOffice's)
    and ``libreoffice`` (soffice and its children)."""
    totals = {"server": 0.0, "libreoffice": 0.0}
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return totals
    for process in tree:
        try:
            name = process.name().lower()
            rss = process.memory_info().rss / 1e6
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        totals["libreoffice" if "soffice" in name or "oosplash" in name else "server"] += rss
    return totals


def _generated(client: httpx.Client, api: dict[str, str], ids: list[int]) -> int:
    """How many of the letters ``ids`` are past their PDF (generated or failed)."""
    done = 0
    for letter_id in ids:
        letter = client.get(f"/api/letters/{letter_id}", headers=api).json()
        if letter.get("status") != "draft" or any(
                d.get("status") == "failed" for d in letter.get("documents", [])):
            done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    """Soak with the letter count in ``argv`` (default 5,000); print the samples."""
    args = sys.argv[1:] if argv is None else argv
    total = int(args[0].replace("_", "")) if args else 5_000
    step = 1_000 if total >= 5_000 else max(1, total // 5)
    from workflow.accounts import create_api_token, create_user
    from workflow.schema import load_template, sample_terms

    spec = load_template("separation_letter")
    base = json.loads(json.dumps(sample_terms(spec), default=str))
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as folder:
        data_dir = Path(folder) / "data"
        database = open_database(data_dir)
        with database.transaction() as session:
            create_user(session, EMAIL, PASSWORD)
            token = create_api_token(session, EMAIL, "soak")
        database.dispose()
        api = {"Authorization": f"Bearer {token}"}
        server = ServerProcess(data_dir, None, serve_options=serve_options())
        samples: list[tuple[str, dict[str, float]]] = []
        began = time.monotonic()
        try:
            server.wait_until_up(180)
            print(f"Memory soak: {total:,} letters, a sample after each {step:,}", flush=True)
            print(f"{'letters':>9} {'server MB':>10} {'LibreOffice MB':>15} {'elapsed':>9}")
            with httpx.Client(base_url=server.url, timeout=120) as client, \
                    ThreadPoolExecutor(max_workers=8) as pool:

                def create(n: int) -> int:
                    terms: dict[str, Any] = {
                        **base, "executive_full_name": f"{FIRST[n % len(FIRST)]} "
                                                       f"{LAST[n % len(LAST)]} {n}"}
                    answer = client.post("/api/letters", headers=api,
                                         json={"template": spec.name, "terms": terms})
                    assert answer.status_code == 201, answer.text[:300]
                    return int(answer.json()["id"])

                made = 0
                while made < total:
                    count = min(step, total - made)
                    ids = list(pool.map(create, range(made, made + count)))
                    made += count
                    deadline = time.monotonic() + 60 + 5 * count
                    while _generated(client, api, ids[-20:]) < len(ids[-20:]) or \
                            _generated(client, api, ids[:5]) < len(ids[:5]):
                        if time.monotonic() > deadline:
                            raise RuntimeError("the letters' PDFs were not made in time:\n"
                                               + server.log.read_text(errors="replace")[-3000:])
                        time.sleep(1)
                    sample = memory(server.process.pid)
                    samples.append((f"{made:,}", sample))
                    print(f"{made:>9,} {sample['server']:>10.0f} {sample['libreoffice']:>15.0f} "
                          f"{time.monotonic() - began:>8.0f}s", flush=True)
                time.sleep(IDLE_SECONDS)
                sample = memory(server.process.pid)
                samples.append((f"idle {IDLE_SECONDS} s", sample))
                print(f"{'idle':>9} {sample['server']:>10.0f} {sample['libreoffice']:>15.0f}",
                      flush=True)
        finally:
            server.stop()
    first = samples[0][1]
    print(f"\nPlateau check (each later sample within {PLATEAU:.0%} of the first, "
          f"{samples[0][0]} letters):")
    for part in ("server", "libreoffice"):
        worst = max((s[part] / first[part] - 1 if first[part] else 0.0) for _, s in samples)
        print(f"- {part}: {first[part]:.0f} MB after {samples[0][0]}, largest growth "
              f"{worst:+.0%}: {'plateau' if worst <= PLATEAU else 'NOT a plateau'}")
    print(f"({dt.timedelta(seconds=round(time.monotonic() - began))} in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
