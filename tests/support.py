"""Helpers the tests share: how a reader compares the words of a letter."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
from pathlib import Path

import docx

# The 2006 letter the template reproduces, kept beside its template.
REFERENCE_LETTER = (Path(__file__).resolve().parents[1] / "templates"
                    / "separation_letter.reference.txt")

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_RULE = re.compile(r"(?:_{3,}|-{3,})")


def letter_words(text: str) -> list[str]:
    """Split a letter's text into words as a reader compares them.

    Filing artifacts (``<PAGE>`` markers, bare page numbers), signature rules (runs of
    underscores or dashes) and the difference between straight and curly quotes are ignored.
    """
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "<PAGE>" or stripped.isdigit():
            continue
        kept.append(line)
    joined = _RULE.sub(" ", "\n".join(kept).translate(_QUOTES))
    return joined.split()


def acknowledged(words: list[str], day: dt.date | None) -> list[str]:
    """A letter's words with its acknowledgement dated ``day``, as a signed letter reads.

    "this ___ day of July, 2006" becomes "this 3rd day of March, 2027" (the rule of underscores
    is not a word); None keeps the words of the unsigned letter.
    """
    blank = ["this", "day", "of", "July,", "2006"]
    at = next(i for i in range(len(words)) if words[i:i + 5] == blank)
    if day is None:
        return list(words)
    suffix = "th" if 10 <= day.day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(
        day.day % 10, "th")
    dated = ["this", f"{day.day}{suffix}", "day", "of", f"{day:%B},", str(day.year)]
    return words[:at] + dated + words[at + 5:]


def pdftotext(pdf: bytes) -> str:
    """A PDF's text layer as poppler's pdftotext reads it, whitespace made single."""
    done = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True)
    return " ".join(done.stdout.decode("utf-8").split())


def docx_text(data: bytes) -> str:
    """Return the body text of a .docx, one paragraph a line."""
    document = docx.Document(io.BytesIO(data))
    return "\n".join(p.text for p in document.paragraphs)




TEST_DATABASE_ENV = "COUNTERPART_TEST_DATABASE_URL"


def server_database_url() -> str | None:
    """Return the PostgreSQL server the suite runs against, or None for SQLite files."""
    return os.environ.get(TEST_DATABASE_ENV) or None


_TEMPLATE_DATABASE = f"counterpart_test_template_{os.getpid()}"
_template_ready = False


def _migrated_template(server_url: str) -> str:
    """Make, once per test process, a migrated database that each test's database copies."""
    global _template_ready
    if not _template_ready:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        from workflow.db import Database

        engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{_TEMPLATE_DATABASE}"'))
            connection.execute(text(f'CREATE DATABASE "{_TEMPLATE_DATABASE}"'))
        engine.dispose()
        template = Database(make_url(server_url).set(database=_TEMPLATE_DATABASE)
                            .render_as_string(hide_password=False))
        template.migrate()
        template.dispose()  # a template database must have no connections when copied
        _template_ready = True
    return _TEMPLATE_DATABASE


def create_server_database(server_url: str) -> str:
    """Create a migrated database of its own on the test server and return its URL."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    template = _migrated_template(server_url)
    name = f"counterpart_test_{uuid.uuid4().hex[:16]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_server_database(server_url: str, database_url: str) -> None:
    """Drop a database made by :func:`create_server_database`, ending its connections."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
