"""A backup taken while letters are being written restores with every document and chain intact."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from support import create_server_database, drop_server_database, server_database_url

from workflow.backup import backup_database, restore_backup, verify_store
from workflow.cli import cli
from workflow.db import Database, database_url_for, open_database
from workflow.errors import CounterpartError
from workflow.letters import create_letter, revise_terms
from workflow.models import Blob, Letter


@pytest.fixture()
def restore_url(tmp_path):
    """Where a backup is restored: a new SQLite file, or a new database on the test server."""
    server = server_database_url()
    if server is None:
        yield database_url_for(tmp_path / "restored")
        return
    url = create_server_database(server)
    yield url
    drop_server_database(server, url)


def add_letters(database, reference_terms, count: int) -> None:
    for index in range(count):
        with database.transaction() as session:
            letter = create_letter(session, "separation_letter",
                                   {**reference_terms, "executive_full_name": f"Exec {index}"},
                                   None)
            revise_terms(session, letter.id, {**reference_terms, "hourly_rate": 600 + index},
                         None)


def test_backup_while_writing_then_restore(tmp_path, reference_terms, database_url,
                                           restore_url):
    live = tmp_path / "live"
    database = open_database(live, database_url)
    (live / "secret_key").write_text("s3cret")
    add_letters(database, reference_terms, 3)
    writer = threading.Thread(target=add_letters, args=(database, reference_terms, 10))
    writer.start()
    backup_database(database, live, tmp_path / "backup")
    writer.join()
    database.dispose()

    restored_dir = tmp_path / "restored"
    names = restore_backup(tmp_path / "backup", restored_dir, Database(restore_url))
    assert names[1:] == ["secret_key"]
    restored = open_database(restored_dir, restore_url)
    check = verify_store(restored)
    assert check.ok, check.problems
    with restored.transaction() as session:
        letters = session.scalar(select(func.count()).select_from(Letter))
        assert 3 <= letters <= 13
        assert check.letters == letters
        assert check.documents == session.scalar(select(func.count()).select_from(Blob))
    assert (restored_dir / "secret_key").read_text() == "s3cret"
    restored.dispose()


def test_a_changed_backup_is_refused(tmp_path, reference_terms, database_url, restore_url):
    database = open_database(tmp_path / "live", database_url)
    add_letters(database, reference_terms, 1)
    backup_database(database, tmp_path / "live", tmp_path / "backup")
    database.dispose()
    [dump] = [p for p in (tmp_path / "backup").iterdir() if p.name.startswith("counterpart.")]
    with dump.open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff")
    with pytest.raises(CounterpartError, match="changed since the backup"):
        restore_backup(tmp_path / "backup", tmp_path / "restored", Database(restore_url))
    assert not (tmp_path / "restored" / "counterpart.db").exists()
    database = open_database(tmp_path / "live", database_url)
    with pytest.raises(CounterpartError, match="not empty"):
        backup_database(database, tmp_path / "live", tmp_path / "backup")
    database.dispose()


def test_backup_and_restore_commands(tmp_path, reference_terms, monkeypatch, database_url,
                                     restore_url):
    database = open_database(tmp_path / "live", database_url)
    add_letters(database, reference_terms, 2)
    with database.transaction() as session:
        # Each version's .docx (two letters, two versions each) and the template, kept once.
        stored = session.scalar(select(func.count()).select_from(Blob))
    assert stored == 5
    database.dispose()
    runner = CliRunner()
    monkeypatch.setenv("COUNTERPART_DATA_DIR", str(tmp_path / "live"))
    if database_url:
        monkeypatch.setenv("COUNTERPART_DATABASE_URL", database_url)
    result = runner.invoke(cli, ["backup", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("COUNTERPART_DATA_DIR", str(tmp_path / "restored"))
    monkeypatch.setenv("COUNTERPART_DATABASE_URL", restore_url)
    result = runner.invoke(cli, ["restore", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert f"verified {stored} documents and the audit chains of 2 letters" in result.output
