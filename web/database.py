"""The app's database: opened, created and migrated when the app is made, disposed with it.

Once migrated, the template folder's templates are loaded into the template library (a
changed file becomes a new published version).

A GET, HEAD or OPTIONS request reads only: while it is answered, every transaction is
read-only (:func:`workflow.db.reading_only`), so a write made by mistake fails loudly instead
of taking the write lock. Times of activity seen while reading ("last seen", "last used") are
written in batches by the database's :class:`workflow.activity.ActivityRecorder`.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request

from workflow.db import Database, begin_reading_only, end_reading_only, open_database
from workflow.library import sync_builtin_templates

__all__ = ["init_app", "get_db", "READ_ONLY_METHODS"]

EXTENSION = "counterpart.db"
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask) -> Database:
    """Open the configured database (migrating it to the newest schema) for this app, and
    load the built-in templates of ``DOCX_TEMPLATE_DIR`` into its template library."""
    database = open_database(app.config["DATA_DIR"], app.config["DATABASE_URL"])
    with database.transaction() as session:
        sync_builtin_templates(session, app.config["DOCX_TEMPLATE_DIR"])
    app.extensions[EXTENSION] = database
    app.before_request(_enter_read_only)
    app.teardown_request(_leave_read_only)
    return database


def _enter_read_only() -> None:
    if request.method in READ_ONLY_METHODS:
        g.read_only_token = begin_reading_only()


def _leave_read_only(_error: BaseException | None = None) -> None:
    token = g.pop("read_only_token", None)
    if token is not None:
        end_reading_only(token)


def get_db() -> Database:
    """Return the database of the running app."""
    return current_app.extensions[EXTENSION]
