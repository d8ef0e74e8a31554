"""Backups: a consistent copy of the database (which holds every document) and the secrets.

A backup folder holds ``counterpart.db`` (a SQLite snapshot taken with SQLite's online backup,
so the app may keep running), the instance secrets (``secret_key`` and ``seal/``), and
``manifest.json`` with the SHA-256 of each file. :func:`restore_backup` checks the manifest
before it replaces anything, keeps the replaced files beside the new ones, and
:func:`verify_store` then rechecks every document's SHA-256 and every letter's audit chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from .audit import verify_chain
from .db import Database
from .errors import CounterpartError
from .files import write_atomic
from .models import Blob, Letter

__all__ = ["backup_database", "restore_backup", "verify_store", "StoreCheck", "SECRET_FILES"]

MANIFEST = "manifest.json"
DATABASE_FILE = "counterpart.db"
SECRET_FILES = ("secret_key", "seal")


def _sqlite_path(database: Database) -> Path:
    if not database.is_sqlite:
        raise CounterpartError("Backups of a PostgreSQL database are made with pg_dump; this "
                               "command copies the embedded SQLite database.")
    return Path(make_url(database.url).database or "")


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
    source = _sqlite_path(database)
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise CounterpartError(f"{destination}: the folder is not empty; give a new folder.")
    destination.mkdir(parents=True, exist_ok=True)
    partial = destination / (DATABASE_FILE + ".part")
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, \
            sqlite3.connect(partial) as dst:
        src.backup(dst)  # SQLite's online backup: a snapshot, while writers carry on
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, destination / DATABASE_FILE)
    for name in SECRET_FILES:
        path = Path(data_dir) / name
        if path.is_dir():
            shutil.copytree(path, destination / name)
        elif path.is_file():
            shutil.copy2(path, destination / name)
    files = {str(p.relative_to(destination)): _sha256(p) for p in _files_under(destination)}
    manifest = {"created_at": dt.datetime.now(dt.UTC).isoformat(), "files": files}
    write_atomic(destination / MANIFEST, json.dumps(manifest, indent=2).encode())
    return destination


def restore_backup(source: Path, data_dir: Path, database_path: Path | None = None) -> list[str]:
    """Check a backup against its manifest, then put it in place of the data folder's files.

    The files it replaces are kept with a ``.before-restore-<time>`` suffix. Returns the
    restored file names. Stop the app before restoring.
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
    if DATABASE_FILE not in manifest.get("files", {}):
        raise CounterpartError(f"{source}: the backup holds no database; nothing was restored.")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    target_db = database_path or data_dir / DATABASE_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    restored = []
    staged = target_db.with_name(target_db.name + ".restoring")
    shutil.copy2(source / DATABASE_FILE, staged)
    for suffix in ("", "-wal", "-shm"):
        old = Path(str(target_db) + suffix)
        if old.exists():
            os.replace(old, Path(f"{old}.before-restore-{stamp}"))
    os.replace(staged, target_db)
    restored.append(DATABASE_FILE)
    for name in SECRET_FILES:
        if not (source / name).exists():
            continue
        target = data_dir / name
        if target.exists():
            os.replace(target, data_dir / f"{name}.before-restore-{stamp}")
        if (source / name).is_dir():
            shutil.copytree(source / name, target)
        else:
            shutil.copy2(source / name, target)
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
