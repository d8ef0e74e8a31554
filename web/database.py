"""The app's database: opened, created and migrated when the app is made, disposed with it."""

from __future__ import annotations

from flask import Flask, current_app

from workflow.db import Database, open_database

__all__ = ["init_app", "get_db"]

EXTENSION = "counterpart.db"


def init_app(app: Flask) -> Database:
    """Open the configured database (migrating it to the newest schema) for this app."""
    database = open_database(app.config["DATA_DIR"], app.config["DATABASE_URL"])
    app.extensions[EXTENSION] = database
    return database


def get_db() -> Database:
    """Return the database of the running app."""
    return current_app.extensions[EXTENSION]
