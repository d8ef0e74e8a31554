"""Letter search through the database's own text index, and the indexes the lists need

Search. On SQLite, ``letter_search`` is an FTS5 table over ``letters.search_text`` (external
content keyed by the letter id, ``unicode61`` with diacritics removed, prefix indexes of 2, 3
and 4 characters), kept in step by triggers on ``letters`` in the same transaction as every
insert, change of ``search_text`` and delete, and filled here from the existing rows. A search
matches words by their start ("prots" finds "Protsch"; "otsch" does not). On PostgreSQL a
``pg_trgm`` GIN index on ``letters.search_text`` accelerates ``LIKE '%word%'``, so a word
matches anywhere in a name there. If the ``pg_trgm`` extension cannot be created (a server
without PostgreSQL's contrib modules, or a role not allowed to create it), the migration
makes a plain btree index instead, searches still answer correctly but scan the letters, and
the migration logs a warning saying so; Debian's ``postgresql`` package includes pg_trgm.

Indexes: ``letters(status, updated_at, id)`` for the status filter in list order,
``envelopes(status, expires_at)`` for the sweeps of expiring links,
``documents(blob_sha256)`` and ``envelopes(executed_document_id)`` for the lookups by file.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 05:00:00
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

_INDEXES = [
    ("ix_letters_status_updated_at_id", "letters", ["status", "updated_at", "id"]),
    ("ix_envelopes_status_expires_at", "envelopes", ["status", "expires_at"]),
    ("ix_documents_blob_sha256", "documents", ["blob_sha256"]),
    ("ix_envelopes_executed_document_id", "envelopes", ["executed_document_id"]),
]

_SQLITE_SEARCH = [
    """CREATE VIRTUAL TABLE letter_search USING fts5(
        search_text, content='letters', content_rowid='id',
        tokenize="unicode61 remove_diacritics 2", prefix='2 3 4')""",
    """CREATE TRIGGER letters_search_insert AFTER INSERT ON letters BEGIN
        INSERT INTO letter_search(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    """CREATE TRIGGER letters_search_delete AFTER DELETE ON letters BEGIN
        INSERT INTO letter_search(letter_search, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
    END""",
    """CREATE TRIGGER letters_search_update AFTER UPDATE OF search_text ON letters BEGIN
        INSERT INTO letter_search(letter_search, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
        INSERT INTO letter_search(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    # Fill the index from the letters already stored.
    "INSERT INTO letter_search(letter_search) VALUES ('rebuild')",
]


def _create_postgresql_search() -> None:
    bind = op.get_bind()
    # A savepoint, so that a refused CREATE EXTENSION leaves the migration's transaction usable.
    savepoint = bind.begin_nested()
    try:
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        savepoint.commit()
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        log.warning("The pg_trgm extension could not be created (%s); letter search uses a "
                    "plain index and scans the letters.", exc.orig)
        op.create_index("ix_letters_search_text", "letters", ["search_text"])
        return
    op.execute("CREATE INDEX ix_letters_search_text_trgm ON letters "
               "USING gin (search_text gin_trgm_ops)")


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_SEARCH:
            op.execute(statement)
    else:
        _create_postgresql_search()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("letters_search_insert", "letters_search_delete",
                        "letters_search_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS letter_search")
    else:
        op.execute("DROP INDEX IF EXISTS ix_letters_search_text_trgm")
        op.execute("DROP INDEX IF EXISTS ix_letters_search_text")
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
