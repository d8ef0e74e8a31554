"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from support import (
    REFERENCE_LETTER,
    create_server_database,
    drop_server_database,
    letter_words,
    server_database_url,
)

from workflow import jobs
from workflow.schema import TemplateSpec, load_template, sample_terms, validate_terms


@pytest.fixture(autouse=True)
def _job_queue_restored():
    """Each test starts with the queue as the suite began: an app a test made does not stay
    the runtime of the jobs of the tests after it."""
    with jobs.preserved():
        yield


@pytest.fixture(scope="session")
def spec() -> TemplateSpec:
    return load_template("separation_letter")


@pytest.fixture()
def reference_terms(spec: TemplateSpec) -> dict:
    return sample_terms(spec)


@pytest.fixture()
def valid_terms(spec: TemplateSpec, reference_terms: dict):
    return validate_terms(spec, reference_terms)


@pytest.fixture(scope="session")
def reference_words() -> list[str]:
    return letter_words(REFERENCE_LETTER.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def converter():
    from workflow.convert import PdfConverter

    with PdfConverter(processes=1) as pool:
        yield pool


@pytest.fixture(scope="session")
def reference_pdf(converter) -> bytes:
    """The reference terms rendered to PDF once for the whole run."""
    from workflow.render import render_docx

    spec = load_template("separation_letter")
    return converter.convert_bytes(render_docx(spec, validate_terms(spec, sample_terms(spec))))


@pytest.fixture()
def database_url():
    """The database URL a test's data folder uses: None means a SQLite file in the folder.

    With COUNTERPART_TEST_DATABASE_URL set (``make test-postgres``), each test gets an empty
    PostgreSQL database of its own on that server instead.
    """
    server = server_database_url()
    if server is None:
        yield None
        return
    url = create_server_database(server)
    yield url
    drop_server_database(server, url)


@pytest.fixture()
def database(tmp_path, database_url):
    """A migrated database of this test's own (SQLite in tmp_path, or on the test server)."""
    from workflow.db import open_database

    database = open_database(tmp_path, database_url)
    yield database
    database.dispose()


class Inbox:
    """The messages a local SMTP server received."""

    def __init__(self) -> None:
        import email.message

        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        import email

        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture()
def smtp_inbox():
    """A real SMTP server on loopback: yields its port and the inbox it fills."""
    from aiosmtpd.controller import Controller
    from serving import free_port

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()
