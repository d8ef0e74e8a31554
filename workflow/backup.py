"""Backups: a consistent copy of the database (which holds every document) and the secrets.

A backup folder holds the database (``counterpart.db``, a SQLite snapshot taken with SQLite's
online backup, or ``counterpart.pgdump``, made by ``pg_dump`` in one transaction; either way
the app may keep running), the instance secrets (``secret_key`` and ``seal/``), and
``manifest.json`` with the SHA-256 of each file. :func:`restore_backup` checks the manifest
before it replaces anything, keeps the replaced files beside the new ones, and
:func:`verify_store` then rechecks every document's SHA-256 and every letter's audit chain.

A backup holds every letter and the instance's secrets, so its folder is its owner's only
(0700, every file 0600), and so is what a restore puts in the data folder. ``pg_dump`` and
``pg_restore`` get the database password in their environment (``PGPASSWORD``), never on
their command line, where any local user could read it in the process list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import URL, make_url

from .audit import verify_chain
from .db import Database
from .errors import CounterpartError
from .files import PRIVATE_FILE_MODE, make_private_file, make_private_folder, write_atomic
from .models import Blob, Letter

__all__ = ["backup_database", "restore_backup", "verify_store", "StoreCheck", "SECRET_FILES"]

MANIFEST = "manifest.json"
DATABASE_FILE = "counterpart.db"
DUMP_FILE = "counterpart.pgdump"
SECRET_FILES = ("secret_key", "seal")


def _postgres_tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                                reverse=True)), None)
    if not found:
        raise CounterpartError(f"{name} is missing; install Debian's postgresql-client.")
    return found


def _libpq_target(database: Database) -> tuple[str, dict[str, str]]:
    """Return the libpq address of the database without its password, and the environment
    that carries the password instead."""
    url = make_url(database.url)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    address = URL.create("postgresql", username=url.username, host=url.host, port=url.port,
                         database=url.database, query=url.query).render_as_string()
    return address, env


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    # umask: whatever the tool writes is its owner's only.
    result = subprocess.run(command, capture_output=True, text=True, env=env, umask=0o077)
    if result.returncode != 0:
        raise CounterpartError(f"{what} failed: {result.stderr.strip()[-500:]}")


def _make_private_tree(folder: Path) -> None:
    """Make a folder and everything under it its owner's only (folders 0700, files 0600)."""
    make_private_folder(folder)
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            make_private_folder(path)
        elif path.is_file() and not path.is_symlink():
            os.chmod(path, PRIVATE_FILE_MODE)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def backup_database(database: Database, data_dir: Path, destination: Path) -> Path:
    """Write a consistent copy of the database and the secrets into a new folder."""
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise CounterpartError(f"{destination}: the folder is not empty; give a new folder.")
    make_private_folder(destination)
    if database.is_sqlite:
        source = Path(make_url(database.url).database or "")
        # Made 0600 before SQLite writes into it (an empty file is an empty database).
        partial = make_private_file(destination / (DATABASE_FILE + ".part"))
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, \
                sqlite3.connect(partial) as dst:
            src.backup(dst)  # SQLite's online backup: a snapshot, while writers carry on
        final = destination / DATABASE_FILE
    else:
        partial = make_private_file(destination / (DUMP_FILE + ".part"))
        address, env = _libpq_target(database)
        _run([_postgres_tool("pg_dump"), "--format=custom", "--no-owner",
              f"--file={partial}", f"--dbname={address}"], "pg_dump", env)
        final = destination / DUMP_FILE
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)
    for name in SECRET_FILES:
        path = Path(data_dir) / name
        if path.is_dir():
            shutil.copytree(path, destination / name)
        elif path.is_file():
            shutil.copy2(path, destination / name)
    _make_private_tree(destination)  # copies keep their source's mode, maybe an older 0644
    files = {str(p.relative_to(destination)): _sha256(p) for p in _files_under(destination)}
    manifest = {"created_at": dt.datetime.now(dt.UTC).isoformat(), "files": files}
    write_atomic(destination / MANIFEST, json.dumps(manifest, indent=2).encode())
    return destination


def restore_backup(source: Path, data_dir: Path, database: Database) -> list[str]:
    """Check a backup against its manifest, then put it in place of the database and secrets.

    The files it replaces are kept with a ``.before-restore-<time>`` suffix; a PostgreSQL
    database is replaced in one transaction. Returns what was restored. Stop the app first.
    """
    source, data_dir = Path(source), Path(data_dir)
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CounterpartError(f"{source / MANIFEST}: missing or unreadable; this is not a "
                               "Counterpart backup.") from exc
    for name, digest in manifest.get("files", {}).items():
        path = source / name
        if not path.is_file() or _sha256(path) != digest:
            raise CounterpartError(f"{path}: missing or changed since the backup was made; "
                                   "nothing was restored.")
    kind = DATABASE_FILE if database.is_sqlite else DUMP_FILE
    if kind not in manifest.get("files", {}):
        other = "PostgreSQL" if database.is_sqlite else "SQLite"
        raise CounterpartError(f"{source}: the backup holds no database of this kind (it may "
                               f"be a {other} backup); nothing was restored.")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    make_private_folder(data_dir)
    restored = []
    if database.is_sqlite:
        target_db = Path(make_url(database.url).database or data_dir / DATABASE_FILE)
        database.dispose()
        staged = target_db.with_name(target_db.name + ".restoring")
        shutil.copy2(source / DATABASE_FILE, staged)
        os.chmod(staged, PRIVATE_FILE_MODE)
        for suffix in ("", "-wal", "-shm"):
            old = Path(str(target_db) + suffix)
            if old.exists():
                os.replace(old, Path(f"{old}.before-restore-{stamp}"))
        os.replace(staged, target_db)
    else:
        database.dispose()
        address, env = _libpq_target(database)
        _run([_postgres_tool("pg_restore"), "--clean", "--if-exists", "--no-owner",
              "--single-transaction", f"--dbname={address}",
              str(source / DUMP_FILE)], "pg_restore", env)
    restored.append(kind)
    for name in SECRET_FILES:
        if not (source / name).exists():
            continue
        target = data_dir / name
        if target.exists():
            os.replace(target, data_dir / f"{name}.before-restore-{stamp}")
        if (source / name).is_dir():
            shutil.copytree(source / name, target)
            _make_private_tree(target)
        else:
            shutil.copy2(source / name, target)
            os.chmod(target, PRIVATE_FILE_MODE)
        restored.append(name)
    return restored


@dataclass
class StoreCheck:
    """What :func:`verify_store` found: documents and chains checked, and every problem."""

    documents: int = 0
    letters: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(database: Database) -> StoreCheck:
    """Recheck every stored document's SHA-256 and every letter's audit chain."""
    check = StoreCheck()
    with database.transaction() as session:
        for sha256, data in session.execute(select(Blob.sha256, Blob.data)):
            check.documents += 1
            if hashlib.sha256(bytes(data)).hexdigest() != sha256:
                check.problems.append(f"document {sha256[:12]}… does not match its SHA-256")
        for letter_id in session.scalars(select(Letter.id).order_by(Letter.id)):
            check.letters += 1
            chain = verify_chain(session, letter_id)
            if not chain.ok:
                check.problems.append(f"letter {letter_id}: {chain.message}")
    return check
