"""The staff pages for letters: the table, the terms form, the letter page and its files."""

from __future__ import annotations

from flask import Blueprint

__all__ = ["bp"]

bp = Blueprint("letters", __name__)

from . import execution, paper, redline, views  # noqa: E402,F401  (register the routes on bp)
