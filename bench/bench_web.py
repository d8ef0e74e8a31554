"""Speed of the letters list as letters accumulate: 1,000, 10,000 and 100,000 letters.

For each size, builds a SQLite data folder (one real letter made through the app, then
realistic rows inserted in bulk: a few hundred first and last names, some accented; every
status; changes spread over four years; each letter with its version row, reusing the real
letter's terms and template version), starts a real ``counterpart serve --no-worker`` on it,
and measures single-client medians of the staff list and the API list, with and without search
and filters, and a page deep in the list reached by its cursor. The static ``app.css`` is the
baseline of each server (what a request costs with no database work).

Prints a table with the ratio of the largest size to the smallest. Not a test: read the
ratios; the goal is at most 1.5 for every list. Run with ``make bench-web``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from serving import ServerProcess  # noqa: E402

from workflow.accounts import create_api_token, create_user  # noqa: E402
from workflow.db import open_database  # noqa: E402
from workflow.letters import create_letter  # noqa: E402
from workflow.models import Letter, LetterVersion  # noqa: E402
from workflow.schema import load_template, sample_terms  # noqa: E402
from workflow.states import LetterStatus  # noqa: E402
from workflow.text import search_text  # noqa: E402

SIZES = [int(n) for n in sys.argv[1:]] or [1_000, 10_000, 100_000]
RUNS = 41
EMAIL, PASSWORD = "bench@example.com", "a long bench password 1"
FIRST = ["Anna", "Bruno", "Chloé", "Dmitri", "Élodie", "Farid", "Greta", "Hannes", "Ines",
         "Jürgen", "Katarzyna", "Lars", "Maria", "Noël", "Olga", "Pável", "Quentin", "Rosa",
         "Søren", "Tomás", "Ulla", "Vera", "Wojciech", "Xenia", "Yusuf", "Zoë", "Ahmed",
         "Beatriz", "Carlos", "Daniela", "Erik", "Fatima", "Giorgio", "Helga", "Ivan",
         "Jana", "Kenji", "Leila", "Mateo", "Nadia", "Oskar", "Priya", "Rafael", "Sofia",
         "Thomas", "Ursula", "Viktor", "Wanda", "Yara", "Zoltán"] * 4
LAST = ["Müller", "Dupré", "García", "Kowalski", "Ørsted", "Nakamura", "Rossi", "Novák",
        "Protsch", "Ortega", "Baker", "Tucker", "Ivanova", "Schröder", "Lefèvre", "Silva",
        "Johansson", "Horváth", "Papadopoulos", "Fernández", "Dubois", "Jensen", "Kovač",
        "Lindqvist", "Moreau", "Nieminen", "O'Brien", "Petrović", "Quispe", "Richter"]
COMPANIES = ["Acme Corp", "Société Générale", "Northwind Energy", "Capstone Holdings",
             "Đông Á Bank", "Beta Inc", "Umbrella AG", "Initech", "Globex", "Stark Industries"]
STATUSES = [s.value for s in LetterStatus]


def build(data_dir: Path, size: int) -> str:
    """Fill a data folder with ``size`` letters; return an API token of its staff account."""
    database = open_database(data_dir)
    spec = load_template("separation_letter")
    with database.transaction() as session:
        user = create_user(session, EMAIL, PASSWORD)
        token = create_api_token(session, EMAIL, "bench")
        real = create_letter(session, spec.name, sample_terms(spec), user)
        version = session.query(LetterVersion).filter_by(letter_id=real.id).one()
        title_shape, list_values = real.title, real.list_values or []
        executive = str(sample_terms(spec)["executive_full_name"])
        company = str(sample_terms(spec)["company_name"])
        shared_version = {"terms": version.terms, "template_name": version.template_name,
                          "template_sha256": version.template_sha256,
                          "template_version_id": version.template_version_id}
    rng = random.Random(size)
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    raw = database.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        letters, versions = [], []
        for n in range(size - 1):
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            firm = rng.choice(COMPANIES)
            title = title_shape.replace(executive, name).replace(company, firm)
            values = [{**column, "value": str(column.get("value", "")).replace(executive, name)
                       .replace(company, firm)} for column in list_values]
            when = now - dt.timedelta(seconds=rng.randrange(4 * 365 * 86400))
            stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f")
            letters.append((n + 2, spec.name, title, "letter", json.dumps(values),
                            rng.choice(STATUSES), 1, stamp, stamp,
                            search_text([title, *(v["value"] for v in values)])))
            versions.append((n + 2, 1, json.dumps(shared_version["terms"]),
                             shared_version["template_name"], shared_version["template_sha256"],
                             shared_version["template_version_id"], stamp))
        cursor.executemany(
            "INSERT INTO letters (id, template, title, file_stem, list_values, status, "
            "current_version, created_at, updated_at, search_text) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", letters)
        cursor.executemany(
            "INSERT INTO letter_versions (letter_id, number, terms, template_name, "
            "template_sha256, template_version_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            versions)
        cursor.execute("COMMIT")
        cursor.execute("ANALYZE")
    finally:
        raw.close()
    with database.transaction() as session:
        assert session.query(Letter).count() == size
    database.dispose()
    return token


def median_ms(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> float:
    """The median time of RUNS requests to ``path`` (after two warm-ups), in milliseconds."""
    times = []
    for run in range(RUNS + 2):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
        if run >= 2:
            times.append(elapsed)
    return statistics.median(times) * 1000


def measure(size: int) -> dict[str, float]:
    """Build a data folder of ``size`` letters, serve it, and time each list."""
    with tempfile.TemporaryDirectory(prefix=f"bench-web-{size}-") as folder:
        data_dir = Path(folder)
        started = time.perf_counter()
        token = build(data_dir, size)
        print(f"{size:>7,} letters built in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        server = ServerProcess(data_dir, None, serve_options=["--no-worker"]).wait_until_up()
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                form = client.get("/sign-in").text
                csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
                assert csrf, "the sign-in form has no CSRF token"
                signed = client.post("/sign-in", data={"csrf_token": csrf.group(1),
                                                       "email": EMAIL, "password": PASSWORD})
                assert signed.status_code in (302, 303), signed.text[:300]
                api = {"Authorization": f"Bearer {token}"}
                first = client.get("/api/letters?per_page=25", headers=api).json()
                cursor = first["next"]
                # A deep page: follow the cursors 20 pages down (any depth costs the same).
                for _ in range(19):
                    cursor = client.get("/api/letters", params={"after": cursor},
                                        headers=api).json()["next"]
                return {
                    "app.css (baseline)": median_ms(client, "/static/css/app.css"),
                    "GET /letters": median_ms(client, "/letters"),
                    "GET /letters?q=protsch": median_ms(client, "/letters?q=protsch"),
                    "GET /letters?q=zoe muller": median_ms(client, "/letters?q=zoe+muller"),
                    "GET /letters?status=generated": median_ms(
                        client, "/letters?status=generated"),
                    "GET /letters?status=draft&q=anna": median_ms(
                        client, "/letters?status=draft&q=anna"),
                    "GET /letters?after=<page 21>": median_ms(
                        client, f"/letters?after={cursor}"),
                    "GET /letters?page=40": median_ms(client, "/letters?page=40"),
                    "GET /api/letters": median_ms(client, "/api/letters", api),
                    "GET /api/letters?q=ortega": median_ms(client, "/api/letters?q=ortega",
                                                           api),
                    "GET /api/letters?after=<page 21>": median_ms(
                        client, f"/api/letters?after={cursor}", api),
                }
        finally:
            server.stop()


def main() -> None:
    results = {size: measure(size) for size in SIZES}
    small, large = SIZES[0], SIZES[-1]
    header = ["request"] + [f"{size:,} (ms)" for size in SIZES] + [f"{large:,}/{small:,}"]
    rows = [[name] + [f"{results[size][name]:.1f}" for size in SIZES]
            + [f"{results[large][name] / results[small][name]:.2f}"]
            for name in results[small]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
