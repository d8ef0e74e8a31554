"""Speed of the staff pages as letters accumulate, at one client and under fifty.

For each database engine (SQLite files; PostgreSQL when ``COUNTERPART_TEST_DATABASE_URL`` names a
server, as ``scripts/with-postgres`` sets it) and each size (1,000, 10,000 and 100,000 letters):

* builds the database: one real letter made through the app (its PDF through LibreOffice), then
  realistic rows inserted in bulk (executemany in one transaction): a few hundred first and last
  names, some accented, and one rare name; every status; changes spread over four years; each
  letter with its version, its documents (reusing the real letter's files), and, once sent, its
  envelope with two signers. SQLite data folders are kept under ``output/bench/`` keyed by size,
  :data:`BUILD_VERSION` and the migrations, and rebuilt when either changes; PostgreSQL
  databases are built in the (private, temporary) server each run.
* starts a real ``counterpart serve --no-worker`` on it (whatever its processes and options),
  signs in, and drives it with locust (``bench/web_load.py``, its own process): each page read
  over and over by one client, and at the largest size by fifty clients, the static ``app.css``
  first (with the session cookie, as a browser sends it) as the ceiling of the same server.

Prints, per engine, p50/p95/p99 and requests per second of every page, and the goals of the
work: every page's single-client median at the largest size at most 1.5 times the smallest's;
under fifty clients ``GET /letters`` at least 30% of the static file's requests per second, and
each search's p95 at most twice the unfiltered list's. Then runs ``bench/bench_signing.py``
(fifty signers at once against a server with its worker) on the first engine. Not a test: read
the figures. The load generator shares the 2 cores with the server: its own CPU is part of
every figure, the static file's included, which is why the goals are ratios to that file.

    make bench-web                                    # SQLite, then PostgreSQL
    .venv/bin/python bench/bench_web.py --sizes 1000,10000 --engines sqlite --seconds 4
    BENCH_WEB_SIZES=1000 BENCH_WEB_ENGINES=sqlite make bench-web

Options (or the environment variables in brackets): ``--sizes`` [BENCH_WEB_SIZES],
``--engines`` [BENCH_WEB_ENGINES], ``--clients`` [BENCH_WEB_CLIENTS] (the loaded count, 50),
``--seconds`` [BENCH_WEB_SECONDS] (per page under load, 6), ``--single-seconds``
[BENCH_WEB_SINGLE_SECONDS] (per page, one client, 3), ``--no-signing`` [BENCH_WEB_SIGNING=0],
``--signing-engine`` [BENCH_WEB_SIGNING_ENGINE].
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import JSON

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from serving import ServerProcess  # noqa: E402

from workflow import jobs  # noqa: E402
from workflow.db import Database, open_database  # noqa: E402
from workflow.models import Base, Document, Letter, LetterVersion  # noqa: E402
from workflow.states import LetterStatus  # noqa: E402
from workflow.text import search_text  # noqa: E402

__all__ = ["BUILD_VERSION", "build", "cached_data_folder", "serve_options", "sign_in",
           "run_load", "main"]

# Raise when the rows the build inserts change; the migrations' text is part of the key too.
BUILD_VERSION = 3
CACHE = ROOT / "output" / "bench"
SERVER_ENV = "COUNTERPART_TEST_DATABASE_URL"
EMAIL, PASSWORD = "bench@example.com", "a long bench password 1"
FIRST = ["Anna", "Bruno", "Chloé", "Dmitri", "Élodie", "Farid", "Greta", "Hannes", "Ines",
         "Jürgen", "Katarzyna", "Lars", "Maria", "Noël", "Olga", "Pável", "Quentin", "Rosa",
         "Søren", "Tomás", "Ulla", "Vera", "Wojciech", "Xenia", "Yusuf", "Zoë", "Ahmed",
         "Beatriz", "Carlos", "Daniela", "Erik", "Fatima", "Giorgio", "Helga", "Ivan",
         "Jana", "Kenji", "Leila", "Mateo", "Nadia", "Oskar", "Priya", "Rafael", "Sofia",
         "Thomas", "Ursula", "Viktor", "Wanda", "Yara", "Zoltán"]
LAST = ["Müller", "Dupré", "García", "Kowalski", "Ørsted", "Nakamura", "Rossi", "Novák",
        "Protsch", "Ortega", "Baker", "Tucker", "Ivanova", "Schröder", "Lefèvre", "Silva",
        "Johansson", "Horváth", "Papadopoulos", "Fernández", "Dubois", "Jensen", "Kovač",
        "Lindqvist", "Moreau", "Nieminen", "O'Brien", "Petrović", "Quispe", "Richter"]
# One letter in RARE_EVERY has this executive: a search that finds a handful at any size.
RARE_NAME, RARE_EVERY = "Ingrid Żebrowska-Quarshie", 5_000
COMPANIES = ["Acme Corp", "Société Générale", "Northwind Energy", "Capstone Holdings",
             "Đông Á Bank", "Beta Inc", "Umbrella AG", "Initech", "Globex", "Stark Industries"]
STATUSES = [s.value for s in LetterStatus]
_shared: dict[str, Any] = {}
SENT = {"out_for_signature", "partially_executed", "fully_executed", "declined", "voided"}
ENVELOPE_STATUS = {"out_for_signature": "out", "partially_executed": "out",
                   "fully_executed": "completed", "declined": "declined", "voided": "voided"}
SIGNER_STATUSES = {"out_for_signature": ("sent", "viewed"),
                   "partially_executed": ("signed", "sent"),
                   "fully_executed": ("signed", "signed"), "declined": ("signed", "declined"),
                   "voided": ("voided", "voided")}


# --- building a database -------------------------------------------------------------------------

def schema_key() -> str:
    """A short digest of the migrations and :data:`BUILD_VERSION`: a cached database built
    under another key is stale."""
    digest = hashlib.sha256(f"build {BUILD_VERSION}".encode())
    for path in sorted((ROOT / "workflow" / "migrations" / "versions").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@contextmanager
def scratch_queue() -> Iterator[None]:
    """Send the jobs that setting up enqueues to a queue that no worker reads."""
    with tempfile.TemporaryDirectory(prefix="bench-scratch-queue-") as folder:
        jobs.configure(f"sqlite:///{Path(folder) / 'queue.db'}")
        try:
            yield
        finally:
            jobs.use_immediate()


def _real_letter(database: Database) -> tuple[str, int]:
    """Make the staff account, its API token and one letter with its PDF; return (token,
    letter id)."""
    from workflow.accounts import create_api_token, create_user
    from workflow.convert import PdfConverter
    from workflow.letters import create_letter, generate_document, pending_documents
    from workflow.schema import load_template, sample_terms

    spec = load_template("separation_letter")
    with database.transaction() as session:
        user = create_user(session, EMAIL, PASSWORD)
        token = create_api_token(session, EMAIL, "bench")
        letter_id = create_letter(session, spec.name, sample_terms(spec), user).id
        pending = pending_documents(session)
    if "converter" not in _shared:  # one LibreOffice for every build of the run
        _shared["converter"] = PdfConverter(processes=1)
    for document_id in pending:
        generate_document(database, document_id, _shared["converter"])
    return token, letter_id


def close_converter() -> None:
    """Stop the LibreOffice that the builds share, if one was started."""
    converter = _shared.pop("converter", None)
    if converter is not None:
        converter.close()


def _next_id(connection: Any, table: str) -> int:
    from sqlalchemy import text

    return int(connection.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar()) + 1


def build(data_dir: Path, size: int, database_url: str | None = None) -> str:
    """Fill a data folder (and database) with ``size`` letters; return the staff account's
    API token. The rows go in by executemany in one transaction."""
    from sqlalchemy import select, text

    with scratch_queue():
        database = open_database(data_dir, database_url)
        token, real_id = _real_letter(database)
    from workflow.schema import load_template, sample_terms

    spec = load_template("separation_letter")
    terms = sample_terms(spec)
    executive, company = str(terms["executive_full_name"]), str(terms["company_name"])
    with database.transaction() as session:
        real = session.get(Letter, real_id)
        version = session.scalars(select(LetterVersion).filter_by(letter_id=real_id)).one()
        documents = [{c: getattr(d, c) for c in ("kind", "blob_sha256", "size", "media_type",
                                                 "filename")}
                     for d in session.scalars(select(Document).filter_by(letter_id=real_id))]
        shape = {"title": real.title, "file_stem": real.file_stem,
                 "list_values": real.list_values or [], "template": real.template,
                 "terms": version.terms, "template_name": version.template_name,
                 "template_sha256": version.template_sha256,
                 "template_version_id": version.template_version_id}
    assert all(d["blob_sha256"] for d in documents), "the real letter's files were not made"
    tables = Base.metadata.tables
    # The terms as JSON text, the two names swapped in the text (quicker than term by term).
    terms_json = json.dumps(shape["terms"])
    executive_json, company_json = json.dumps(executive)[1:-1], json.dumps(company)[1:-1]
    rng = random.Random(size)
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in (
        "letters", "letter_versions", "documents", "envelopes", "counterparts")}
    with database.engine.begin() as connection:
        ids = {name: _next_id(connection, name) for name in
               ("letters", "letter_versions", "documents", "counterparts")}
        for n in range(size - 1):
            letter_id, version_id = ids["letters"] + n, ids["letter_versions"] + n
            name = (RARE_NAME if n % RARE_EVERY == 7
                    else f"{rng.choice(FIRST)} {rng.choice(LAST)}")
            firm = rng.choice(COMPANIES)
            status = rng.choice(STATUSES)
            when = now - dt.timedelta(seconds=rng.randrange(4 * 365 * 86400))
            swap = {executive: name, company: firm}

            def fill(value: Any, swap: dict[str, str] = swap) -> Any:
                if isinstance(value, str):
                    for old, new in swap.items():
                        value = value.replace(old, new)
                return value

            title = fill(shape["title"])
            listed = [{k: fill(v) for k, v in column.items()} for column in shape["list_values"]]
            letter = {"id": letter_id, "template": shape["template"], "title": title,
                      "file_stem": shape["file_stem"], "status": status, "current_version": 1,
                      "list_values": listed, "created_at": when, "updated_at": when}
            if "search_text" in tables["letters"].c:  # what refresh_search_text computes
                signers = [f"Chair of {firm}", name] if status in SENT else []
                letter["search_text"] = search_text(
                    [title, *(str(c.get("value", "")) for c in listed), *signers])
            rows["letters"].append(letter)
            rows["letter_versions"].append({
                "id": version_id, "letter_id": letter_id, "number": 1,
                "terms": json.loads(terms_json.replace(executive_json, json.dumps(name)[1:-1])
                                    .replace(company_json, json.dumps(firm)[1:-1])),
                "template_name": shape["template_name"],
                "template_sha256": shape["template_sha256"],
                "template_version_id": shape["template_version_id"], "created_at": when})
            if status == "draft":
                continue
            pdf_id = None
            for document in documents:
                document_id = ids["documents"]
                ids["documents"] += 1
                rows["documents"].append({"id": document_id, "letter_id": letter_id,
                                          "version_id": version_id, "status": "ready",
                                          "created_at": when, **document})
                if document["media_type"] == "application/pdf":
                    pdf_id = document_id
            if status not in SENT or pdf_id is None:
                continue
            envelope_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            rows["envelopes"].append({
                "id": envelope_id, "letter_id": letter_id, "version_id": version_id,
                "letter_pdf_id": pdf_id, "status": ENVELOPE_STATUS[status],
                "expires_at": when + dt.timedelta(days=30), "created_at": when,
                "completed_at": when if status == "fully_executed" else None})
            for position, (role, signer, signer_status) in enumerate(zip(
                    ("company", "executive"), (f"Chair of {firm}", name),
                    SIGNER_STATUSES[status], strict=True)):
                counterpart_id = ids["counterparts"]
                ids["counterparts"] += 1
                rows["counterparts"].append({
                    "id": counterpart_id, "envelope_id": envelope_id, "position": position,
                    "role": role, "name": signer, "status": signer_status,
                    "email": f"signer{counterpart_id}@example.com",
                    "token_hash": hashlib.sha256(f"bench {counterpart_id}".encode()).hexdigest()})
        for name, batch in rows.items():
            insert_rows(connection, tables[name], batch)
    _after_bulk_insert(database)
    with database.transaction() as session:
        from sqlalchemy import func

        count = session.scalar(select(func.count()).select_from(Letter))
        assert count == size, f"{count} letters instead of {size}"
    with database.engine.begin() as connection:
        if not database.is_sqlite:
            connection.execute(text("ANALYZE"))
    if database.is_sqlite:
        with database.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    database.dispose()
    return token


def insert_rows(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts of column values, the columns of the first row) into ``table``
    on the driver's connection: COPY on PostgreSQL, executemany on SQLite. Each value goes
    through its column type's bind processing, and a column left out gets its Python default
    (as an ORM insert would give it)."""
    if not rows:
        return
    dialect = connection.dialect
    given = list(rows[0])
    defaults = {}
    for column in table.columns:
        if column.name in given or column.default is None:
            continue
        if column.default.is_scalar:
            defaults[column.name] = column.default.arg
        elif column.default.is_callable:
            defaults[column.name] = column.default.arg(None)
    names = given + list(defaults)
    processors = [(index, table.c[name].type.bind_processor(dialect))
                  for index, name in enumerate(names)]
    processors = [(index, p) for index, p in processors if p is not None]
    json_columns = [index for index, name in enumerate(names)
                    if isinstance(table.c[name].type, JSON)]
    fixed = list(defaults.values())
    processed = []
    for row in rows:
        values = [row[name] for name in given] + fixed
        for index, processor in processors:
            values[index] = processor(values[index])
        for index in json_columns:  # a JSON value the driver was left to adapt, as text
            if isinstance(values[index], dict | list):
                values[index] = json.dumps(values[index])
        processed.append(values)
    raw = connection.connection.driver_connection
    columns = ", ".join(names)
    if dialect.name == "postgresql":
        with raw.cursor() as cursor, cursor.copy(
                f"COPY {table.name} ({columns}) FROM STDIN") as copy:
            for row in processed:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in names)
        raw.executemany(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", processed)


def _after_bulk_insert(database: Database) -> None:
    """Move PostgreSQL's id sequences past the rows inserted with their ids."""
    from sqlalchemy import text

    if not database.is_sqlite:
        with database.engine.begin() as connection:
            for table in ("letters", "letter_versions", "documents", "counterparts"):
                connection.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"))


def cached_data_folder(size: int, into: Path) -> str:
    """Copy a SQLite data folder of ``size`` letters into ``into`` (building and keeping it
    under ``output/bench/`` first when missing or stale); return its API token."""
    key = f"web-sqlite-{size}-{schema_key()}"
    kept = CACHE / key
    if not (kept / "bench-token.txt").exists():
        for stale in CACHE.glob(f"web-sqlite-{size}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        building = CACHE / f"{key}.building"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        started = time.perf_counter()
        token = build(building, size)
        (building / "bench-token.txt").write_text(token)
        building.rename(kept)
        print(f"  {size:,} letters built in {time.perf_counter() - started:.1f} s "
              f"(kept in {kept.relative_to(ROOT)})", file=sys.stderr, flush=True)
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(kept, into)
    for log in into.glob("server-*.log"):
        log.unlink()
    return (into / "bench-token.txt").read_text().strip()


@contextmanager
def server_database(server_url: str, name: str) -> Iterator[str]:
    """A database of its own on the PostgreSQL server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


# --- serving and loading -------------------------------------------------------------------------

def serve_options(*extra: str) -> list[str]:
    """Options for ``counterpart serve`` that it has: no per-address connection limit (every
    client here comes from 127.0.0.1), plus ``extra``."""
    shown = subprocess.run([sys.executable, "-m", "web.cli", "serve", "--help"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout
    options = list(extra)
    if "--connections-per-address" in shown:
        options += ["--connections-per-address", "0"]
    return options


def sign_in(client: httpx.Client) -> str:
    """Sign the staff account in on ``client``; return the Cookie header a browser would send."""
    form = client.get("/sign-in").text
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
    assert csrf, "the sign-in form has no CSRF token"
    signed = client.post("/sign-in", data={"csrf_token": csrf.group(1), "email": EMAIL,
                                           "password": PASSWORD})
    assert signed.status_code in (302, 303), signed.text[:300]
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def run_load(host: str, phases: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
    """Run locust phases (see ``bench/web_load.py``) against ``host``; return their figures."""
    spec, result = work / "load-spec.json", work / "load-result.json"
    spec.write_text(json.dumps({"host": host, "phases": phases}))
    result.unlink(missing_ok=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "web_load.py"), str(spec),
                    str(result)], cwd=ROOT, check=True)
    return json.loads(result.read_text())


def pages(client: httpx.Client, cookie: str, token: str) -> dict[str, tuple[str, dict]]:
    """Every page measured: name -> (path, headers). Checks that each answers 200 and that
    the searches find what the build put in."""
    browser = {"Cookie": cookie}
    api = {"Authorization": f"Bearer {token}"}
    cursor = client.get("/api/letters?per_page=25", headers=api).json()["next"]
    for _ in range(19):  # a deep page: 20 pages down by cursor (any depth costs the same)
        cursor = client.get("/api/letters", params={"after": cursor}, headers=api).json()["next"]
    some = client.get("/api/letters", params={"status": "partially_executed"},
                      headers=api).json()["letters"][0]["id"]
    chosen = {
        "static app.css (ceiling)": ("/static/css/app.css", browser),
        "GET /letters": ("/letters", browser),
        "GET /letters?q=<common name>": ("/letters?q=anna", browser),
        "GET /letters?q=<rare name>": ("/letters?q=zebrowska", browser),
        "GET /letters?status=partially_executed": ("/letters?status=partially_executed",
                                                   browser),
        "GET /letters?after=<page 21>": (f"/letters?after={cursor}", browser),
        "GET /letters/<id>": (f"/letters/{some}", browser),
        "GET /api/letters": ("/api/letters", api),
        "GET /api/letters?q=<common name>": ("/api/letters?q=ortega", api),
        "GET /api/letters?after=<page 21>": (f"/api/letters?after={cursor}", api),
    }
    for name, (path, headers) in chosen.items():
        answer = client.get(path, headers=headers, cookies={})
        if answer.status_code != 200:
            raise RuntimeError(f"{name} answered {answer.status_code}: {answer.text[:300]}")
    for q in ("anna", "zebrowska", "ortega"):
        found = client.get("/api/letters", params={"q": q}, headers=api).json()["letters"]
        if not found:
            raise RuntimeError(f"the search for {q!r} finds nothing: is the search index "
                               f"kept for rows inserted in bulk?")
    return chosen


def measure(data_dir: Path, database_url: str | None, token: str, size: int,
            loaded: bool, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Serve one database; run every page at one client (and, when ``loaded``, at
    ``args.clients``); return {page: {"one": figures, "loaded": figures}}."""
    server = ServerProcess(data_dir, database_url, serve_options=serve_options("--no-worker"))
    try:
        server.wait_until_up(120)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            cookie = sign_in(client)
            chosen = pages(client, cookie, token)
        phases = [{"name": name, "path": path, "headers": headers, "users": 1,
                   "seconds": args.single_seconds, "warmup": 0.5}
                  for name, (path, headers) in chosen.items()]
        if loaded:
            phases += [{"name": name, "path": path, "headers": headers, "users": args.clients,
                        "seconds": args.seconds, "warmup": 1.5}
                       for name, (path, headers) in chosen.items()]
        figures = run_load(server.url, phases, data_dir)
    finally:
        server.stop()
    results: dict[str, dict[str, Any]] = {}
    for figure in figures:
        kind = "one" if figure["users"] == 1 else "loaded"
        results.setdefault(figure["name"], {})[kind] = figure
    return results


# --- the report ----------------------------------------------------------------------------------

def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def report(engine: str, sizes: list[int], results: dict[int, dict[str, dict[str, Any]]],
           clients: int) -> str:
    """The tables of one engine, with the goals' ratios."""
    small, large = sizes[0], sizes[-1]
    names = list(results[large])
    out = [f"\n### {engine}: one client (ms; p95, p99 and req/s at {large:,} letters)\n"]
    header = ["page", *(f"p50 {s:,}" for s in sizes), f"p95 {large:,}", f"p99 {large:,}",
              f"req/s {large:,}", f"{large:,}/{small:,} (≤ 1.5)"]
    rows = [header]
    for name in names:
        one = {s: results[s][name]["one"] for s in sizes}
        growth = one[large]["p50"] / one[small]["p50"] if one[small]["p50"] else 0.0
        rows.append([name, *(_ms(one[s]["p50"]) for s in sizes), _ms(one[large]["p95"]),
                     _ms(one[large]["p99"]), f"{one[large]['rps']:.0f}",
                     f"{growth:.2f}" + ("" if growth <= 1.5 or name.startswith("static")
                                        else " ✗")])
    out.append(_table(rows))
    if "loaded" not in results[large][names[0]]:
        return "\n".join(out)
    loaded = {name: results[large][name]["loaded"] for name in names}
    static = loaded["static app.css (ceiling)"]
    listed = loaded["GET /letters"]
    out.append(f"\n### {engine}: {clients} clients at {large:,} letters (ms)\n")
    rows = [["page", "p50", "p95", "p99", "req/s", "share of static req/s",
             "p95 / list's p95", "failed"]]
    for name in names:
        figure = loaded[name]
        api = name.startswith("GET /api")
        base = loaded["GET /api/letters"] if api else listed
        rows.append([name, _ms(figure["p50"]), _ms(figure["p95"]), _ms(figure["p99"]),
                     f"{figure['rps']:.0f}",
                     f"{figure['rps'] / static['rps']:.0%}" if static["rps"] else "-",
                     f"{figure['p95'] / base['p95']:.2f}" if base["p95"] else "-",
                     str(figure["failures"])])
    out.append(_table(rows))
    share = listed["rps"] / static["rps"] if static["rps"] else 0.0
    searches = [n for n in names if "q=" in n]
    worst = max(searches, key=lambda n: loaded[n]["p95"] / (
        loaded["GET /api/letters" if n.startswith("GET /api") else "GET /letters"]["p95"] or 1))
    worst_ratio = loaded[worst]["p95"] / (loaded["GET /api/letters" if worst.startswith(
        "GET /api") else "GET /letters"]["p95"] or 1)
    growths = {n: results[large][n]["one"]["p50"] / results[small][n]["one"]["p50"]
               for n in names if not n.startswith("static") and results[small][n]["one"]["p50"]}
    worst_growth = max(growths, key=growths.__getitem__)
    out.append(f"\nGoals ({engine}):")
    out.append(f"- single-client median, {large:,}/{small:,}: at most "
               f"{growths[worst_growth]:.2f} ({worst_growth}); goal ≤ 1.5: "
               f"{'met' if growths[worst_growth] <= 1.5 else 'NOT met'}")
    out.append(f"- GET /letters under {clients} clients: {listed['rps']:.0f} req/s = "
               f"{share:.0%} of static's {static['rps']:.0f}; goal ≥ 30%: "
               f"{'met' if share >= 0.30 else 'NOT met'}")
    out.append(f"- search p95 / list p95 at {large:,}: at most {worst_ratio:.2f} ({worst}); "
               f"goal ≤ 2: {'met' if worst_ratio <= 2 else 'NOT met'}")
    return "\n".join(out)


def _setting(value: str | None, env: str, default: str) -> str:
    return value if value is not None else os.environ.get(env, default)


def parse(argv: list[str]) -> argparse.Namespace:
    """Read the options (see the module's text)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes")
    parser.add_argument("--engines")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--single-seconds", type=float)
    parser.add_argument("--no-signing", action="store_true")
    parser.add_argument("--signing-engine", choices=["sqlite", "postgresql"])
    args = parser.parse_args(argv)
    args.sizes = [int(s.replace("_", "")) for s in _setting(
        args.sizes, "BENCH_WEB_SIZES", "1000,10000,100000").split(",") if s.strip()]
    args.engines = [e.strip() for e in _setting(
        args.engines, "BENCH_WEB_ENGINES", "sqlite,postgresql").split(",") if e.strip()]
    args.clients = args.clients or int(os.environ.get("BENCH_WEB_CLIENTS", "50"))
    args.seconds = args.seconds or float(os.environ.get("BENCH_WEB_SECONDS", "6"))
    args.single_seconds = args.single_seconds or float(
        os.environ.get("BENCH_WEB_SINGLE_SECONDS", "3"))
    args.signing = not args.no_signing and os.environ.get("BENCH_WEB_SIGNING", "1") != "0"
    args.signing_engine = args.signing_engine or os.environ.get("BENCH_WEB_SIGNING_ENGINE")
    return args


def run_engine(engine: str, args: argparse.Namespace, server_url: str | None) -> str:
    """Build, serve and measure every size on one engine; print and return its report."""
    if engine == "postgresql" and not server_url:
        print(f"PostgreSQL skipped: {SERVER_ENV} names no server (run under "
              f"scripts/with-postgres, as `make bench-web` does)", flush=True)
        return ""
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for size in args.sizes:
        loaded = size == args.sizes[-1]
        with tempfile.TemporaryDirectory(prefix=f"bench-web-{engine}-{size}-") as folder:
            data_dir = Path(folder) / "data"
            print(f"{engine}, {size:,} letters ...", flush=True)
            if engine == "sqlite":
                token = cached_data_folder(size, data_dir)
                results[size] = measure(data_dir, None, token, size, loaded, args)
            else:
                assert server_url is not None
                with server_database(server_url, f"counterpart_bench_{size}") as url:
                    started = time.perf_counter()
                    token = build(data_dir, size, url)
                    print(f"  {size:,} letters built in "
                          f"{time.perf_counter() - started:.1f} s", flush=True)
                    results[size] = measure(data_dir, url, token, size, loaded, args)
    text = report("SQLite" if engine == "sqlite" else "PostgreSQL", args.sizes, results,
                  args.clients)
    print(text, flush=True)
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print its tables."""
    args = parse(sys.argv[1:] if argv is None else argv)
    begun = time.perf_counter()
    server_url = os.environ.get(SERVER_ENV)
    print(f"bench-web on {os.cpu_count()} cores: sizes {args.sizes}, engines {args.engines}, "
          f"1 and {args.clients} clients", flush=True)
    reports = []
    try:
        for engine in args.engines:
            reports.append(run_engine(engine, args, server_url))
    finally:
        close_converter()
    if args.signing:
        import bench_signing

        bench_signing.main([args.signing_engine or args.engines[0]])
    print(f"\nbench-web took {time.perf_counter() - begun:.0f} s", flush=True)
    return 0



if __name__ == "__main__":
    sys.exit(main())
