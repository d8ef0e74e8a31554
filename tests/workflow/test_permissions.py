"""The data folder and everything Counterpart writes in it, its backups and LibreOffice's work
folders are readable by their owner only; database passwords never reach a command line."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from web.config import load_secret_key
from workflow.backup import backup_database, restore_backup
from workflow.convert import PdfConverter
from workflow.db import Database, open_database
from workflow.render import render_docx
from workflow.schema import validate_terms
from workflow.seal import load_or_create_sealer

PASSWORD = "s3cret-pa55word"


@pytest.fixture(autouse=True)
def usual_umask():
    """The umask most accounts have (022), which leaves new files readable by everyone."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(folder: Path) -> dict[str, int]:
    """The mode of a folder and of everything in it, by path relative to it."""
    found = {".": mode(folder)}
    for path in sorted(folder.rglob("*")):
        found[str(path.relative_to(folder))] = mode(path)
    return found


def assert_private(folder: Path) -> None:
    for name, bits in modes_under(folder).items():
        path = folder / name
        expected = 0o700 if path.is_dir() else 0o600
        assert bits == expected, f"{name}: {oct(bits)}"


def test_a_new_data_folder_and_its_files_are_private(tmp_path, reference_terms):
    data_dir = tmp_path / "data"
    load_secret_key(data_dir)
    database = open_database(data_dir)  # SQLite, in the folder
    load_or_create_sealer(data_dir)
    # While a connection is open after a write, SQLite keeps its -wal and -shm files.
    with contextlib.closing(sqlite3.connect(data_dir / "counterpart.db")) as held:
        held.execute("SELECT count(*) FROM sqlite_master").fetchall()
        with database.transaction() as session:
            session.execute(text("CREATE TABLE probe (x INTEGER)"))
        names = set(modes_under(data_dir))
        assert {"counterpart.db", "counterpart.db-wal", "counterpart.db-shm", "secret_key",
                "seal", "seal/seal-key.pem", "seal/seal-cert.pem"} <= names
        assert_private(data_dir)
    database.dispose()


def test_an_existing_readable_data_folder_is_tightened(tmp_path):
    data_dir = tmp_path / "data"
    database = open_database(data_dir)
    database.dispose()
    os.chmod(data_dir, 0o755)
    for name in ("counterpart.db", "counterpart.db-wal", "counterpart.db-shm"):
        if (data_dir / name).exists():
            os.chmod(data_dir / name, 0o644)
    load_or_create_sealer(data_dir)
    for name in ("seal", "seal/seal-key.pem", "seal/seal-cert.pem"):
        os.chmod(data_dir / name, 0o755 if name == "seal" else 0o644)
    open_database(data_dir).dispose()
    load_or_create_sealer(data_dir)
    assert_private(data_dir)


def test_backups_and_restores_are_private(tmp_path):
    live = tmp_path / "live"
    database = open_database(live)
    (live / "secret_key").write_text("b3f0c2a9d47e1f6a8c5b2d9e0f7a3c6b\n")
    os.chmod(live / "secret_key", 0o644)  # a key file kept from an older, careless copy
    load_or_create_sealer(live)
    backup = backup_database(database, live, tmp_path / "backup")
    database.dispose()
    assert set(modes_under(backup)) >= {"counterpart.db", "secret_key", "seal/seal-key.pem",
                                        "manifest.json"}
    assert_private(backup)

    restored_dir = tmp_path / "restored"
    restore_backup(backup, restored_dir, Database(f"sqlite:///{restored_dir / 'x.db'}"))
    assert_private(restored_dir)


@pytest.fixture()
def fake_postgres_tools(tmp_path, monkeypatch):
    """``pg_dump`` and ``pg_restore`` on the PATH that write down how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    script = f"""#!{sys.executable}
import json, os, sys
with open({str(calls)!r}, "a") as log:
    log.write(json.dumps({{"tool": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                          "password": os.environ.get("PGPASSWORD")}}) + "\\n")
for arg in sys.argv[1:]:
    if arg.startswith("--file="):
        with open(arg[len("--file="):], "wb") as out:
            out.write(b"PGDMP fake dump")
"""
    for name in ("pg_dump", "pg_restore"):
        (bin_dir / name).write_text(script)
        os.chmod(bin_dir / name, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return lambda: [json.loads(line) for line in calls.read_text().splitlines()]


def test_the_database_password_goes_through_the_environment(tmp_path, fake_postgres_tools):
    # The engine connects only when asked to, and the tools here are fakes: no server needed.
    database = Database(f"postgresql+psycopg://counsel:{PASSWORD}@127.0.0.1:1/counterpart")
    live = tmp_path / "live"
    live.mkdir()
    backup = backup_database(database, live, tmp_path / "backup")
    assert_private(backup)
    restore_backup(backup, tmp_path / "restored", database)
    calls = fake_postgres_tools()
    assert [c["tool"] for c in calls] == ["pg_dump", "pg_restore"]
    for call in calls:
        assert call["password"] == PASSWORD
        assert not any(PASSWORD in arg for arg in call["argv"]), call["argv"]
        assert "--dbname=postgresql://counsel@127.0.0.1:1/counterpart" in call["argv"]


def test_libreoffice_writes_only_private_files(tmp_path, spec, reference_terms):
    work = tmp_path / "libreoffice"
    with PdfConverter(work_dir=work) as converter:
        pdf = converter.convert_bytes(render_docx(spec, validate_terms(spec, reference_terms)))
        assert pdf.startswith(b"%PDF-")
        made = modes_under(work)
    del made["."]  # the parent the caller gave; its own folders are below
    assert len(made) > 10  # the profile is there
    readable = {name: oct(bits) for name, bits in made.items() if bits & 0o077}
    assert readable == {}
