"""The app's database: opened, created and migrated when the app is made, disposed with it.

Once migrated, the template folder's templates are loaded into the template library (a
changed file becomes a new published version).
"""

from __future__ import annotations

from flask import Flask, current_app

from workflow.db import Database, open_database
from workflow.library import sync_builtin_templates

__all__ = ["init_app", "get_db"]

EXTENSION = "counterpart.db"


def init_app(app: Flask) -> Database:
    """Open the configured database (migrating it to the newest schema) for this app, and
    load the built-in templates of ``DOCX_TEMPLATE_DIR`` into its template library."""
    database = open_database(app.config["DATA_DIR"], app.config["DATABASE_URL"])
    with database.transaction() as session:
        sync_builtin_templates(session, app.config["DOCX_TEMPLATE_DIR"])
    app.extensions[EXTENSION] = database
    return database


def get_db() -> Database:
    """Return the database of the running app."""
    return current_app.extensions[EXTENSION]
