"""Fixtures for the web app's tests: a real SQLite file per test, real LibreOffice, real forms.

Migrating a database and hashing a password take a while, so one seeded database file (with a
staff account) is made per session and copied for each test. One LibreOffice is shared by the
whole session. CSRF protection stays on: tests post the token the page gave them, as a
browser does.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image, ImageDraw
from sqlalchemy import func, select
from support import TEST_DATABASE_ENV

from web import create_app
from web.database import get_db
from web.documents import get_documents
from web.testing import ClosingClient, csrf_token
from workflow.accounts import create_api_token, create_user
from workflow.convert import PdfConverter
from workflow.db import open_database
from workflow.letters import create_letter, generate_document, pending_documents
from workflow.models import Counterpart, Document, Envelope, Event, Letter, User

STAFF_EMAIL = "counsel@example.com"
STAFF_PASSWORD = "correct horse battery"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin password 1234"

# Every way a term can be wrong: (field, value typed, the domain's message for it). Tests that
# take the ``bad_value`` fixture run once per row, through the form and through the API.
BAD_VALUES = [
    ("company_name", "", "is required"),
    ("executive_full_name", "x" * 201, "is 201 characters long; the limit is 200"),
    ("chair_title", "Chair\x0bman",
     "contains a control character (U+000B); remove it and type the text again"),
    ("letter_date", "24/07/2006", "must be a date written YYYY-MM-DD"),
    ("letter_date", "2006-02-30", "'2006-02-30' is not a real calendar date"),
    ("resignation_date", "", "is required"),
    ("consulting_months", "1.5", "must be a whole number"),
    ("consulting_months", "twelve", "must be a whole number"),
    ("consulting_months", "0", "must be greater than zero"),
    ("consulting_months", "121", "must be at most 120"),
    ("hourly_rate", "1.234", "may have at most 2 decimals"),
    ("hourly_rate", "lots", "must be an amount such as 500 or 1250.50"),
    ("hourly_rate", "0", "must be greater than zero"),
    ("option_shares", "", "is required"),
    ("vested_option_shares", "2000001", "cannot exceed the 2,000,000 option shares granted"),
    ("effective_date", "2006-07-30", "cannot be before the resignation date (July 31, 2006)"),
    ("option_exercise_deadline", "2006-08-01",
     "must be after the agreement effective date (August 1, 2006)"),
    ("option_agreement_date", "2006-08-01",
     "must be before the resignation date (July 31, 2006)"),
    ("repurchase_unvested_restricted", "", "is required"),
    ("cancelled_option_grant_dates", ["2006-06-12", "2006-06-12"], "lists June 12, 2006 twice"),
    ("cancelled_option_grant_dates", ["2006-06-12", "2006-13-01"],
     "date 2 '2006-13-01' is not a real calendar date"),
    ("cancelled_option_grant_dates", ["June 1"], "date 1 must be a date written YYYY-MM-DD"),
    ("cancelled_option_grant_dates", ["2006-08-12"],
     "August 12, 2006 must be before the resignation date (July 31, 2006)"),
    ("service_years", "100", "must be at most 99"),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bad_value" in metafunc.fixturenames:
        metafunc.parametrize("bad_value", BAD_VALUES,
                             ids=[f"{key}={value!r}"[:48] for key, value, _ in BAD_VALUES])


@pytest.fixture()
def credentials() -> dict[str, tuple[str, str]]:
    """The (email, password) of the seeded accounts: "staff" and "admin"."""
    return {"staff": (STAFF_EMAIL, STAFF_PASSWORD), "admin": (ADMIN_EMAIL, ADMIN_PASSWORD)}


@pytest.fixture(autouse=True)
def _no_counterpart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's COUNTERPART_* variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("COUNTERPART_") and name != TEST_DATABASE_ENV:
            monkeypatch.delenv(name)
    # Jobs run in the test's own process right after the request's commit (immediate mode),
    # whatever configuration a test gives create_app; tests of real workers set QUEUE_URL.
    monkeypatch.setenv("COUNTERPART_QUEUE_URL", "immediate")


@pytest.fixture(scope="session")
def converter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdfConverter]:
    """One warm LibreOffice for the whole session."""
    with PdfConverter(work_dir=tmp_path_factory.mktemp("libreoffice")) as shared:
        yield shared


@pytest.fixture(scope="session")
def seeded_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database file holding a staff account and an administrator."""
    folder = tmp_path_factory.mktemp("seed")
    database = open_database(folder)
    with database.transaction() as session:
        create_user(session, STAFF_EMAIL, STAFF_PASSWORD)
        create_user(session, ADMIN_EMAIL, ADMIN_PASSWORD, is_admin=True)
    database.dispose()
    return folder / "counterpart.db"


@pytest.fixture()
def data_dir(tmp_path: Path, seeded_database: Path, database_url: str | None) -> Path:
    """A data folder of this test's own, with a copy of the seeded database.

    On a PostgreSQL test server, the test's own database gets the seeded accounts instead.
    """
    folder = tmp_path / "data"
    folder.mkdir()
    if database_url is None:
        shutil.copy(seeded_database, folder / "counterpart.db")
        return folder
    seed = open_database(seeded_database.parent, migrate=False)
    with seed.transaction() as session:
        accounts = [(u.email, u.password_hash, u.role, u.password_set_at)
                    for u in session.query(User)]
    seed.dispose()
    database = open_database(folder, database_url)
    with database.transaction() as session:
        session.add_all(User(email=email, password_hash=password_hash, role=role,
                             is_admin=role == "admin", password_set_at=password_set_at)
                        for email, password_hash, role, password_set_at in accounts)
    database.dispose()
    return folder


@pytest.fixture()
def app_config(data_dir: Path, converter: PdfConverter,
               database_url: str | None) -> dict[str, Any]:
    """The settings of the app under test; tests may change them before ``app`` is made."""
    return {
        "TESTING": True,
        "DATA_DIR": data_dir,
        "DATABASE_URL": database_url,
        "PDF_CONVERTER": converter,
        # Background jobs run right after the enqueueing request commits.
        "QUEUE_URL": "immediate",
        # Tests that walk every route fail on purpose many times from one address; the
        # limit itself is tested with its own setting.
        "RATE_LIMIT_FAILURES": "1000 per minute",
        "RATE_LIMIT_VERIFY": "1000 per minute",
    }


@pytest.fixture()
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    application = create_app(app_config)
    application.test_client_class = ClosingClient
    yield application
    application.extensions["counterpart.documents"].close()
    application.extensions["counterpart.db"].dispose()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _sign_in(client: FlaskClient, email: str = STAFF_EMAIL,
             password: str = STAFF_PASSWORD) -> FlaskClient:
    """Sign a test client in through the sign-in form."""
    page = client.get("/sign-in")
    response = client.post("/sign-in", data={
        "email": email, "password": password, "csrf_token": csrf_token(page.text)})
    assert response.status_code == 302, response.text
    return client


@pytest.fixture()
def staff(client: FlaskClient) -> FlaskClient:
    """A test client signed in as a member of staff."""
    return _sign_in(client)


@pytest.fixture()
def sign_in() -> Any:
    """Sign a test client in through the form: ``sign_in(client, email, password)``."""
    return _sign_in


@pytest.fixture()
def token(app: Flask) -> str:
    """An API token of the staff account."""
    with app.app_context(), get_db().transaction() as session:
        return create_api_token(session, STAFF_EMAIL, "tests")


@pytest.fixture()
def api(token: str) -> dict[str, str]:
    """The headers of an authenticated API call."""
    return {"Authorization": f"Bearer {token}"}


def _make_letter(app: Flask, terms: dict[str, Any], *, generate: bool = True) -> int:
    with app.app_context():
        with get_db().transaction() as session:
            user = session.query(User).filter_by(email=STAFF_EMAIL).one()
            letter_id = create_letter(session, "separation_letter", terms, user).id
        if generate:
            _generate_pending(app)
    return letter_id


def _generate_pending(app: Flask) -> None:
    # What the background job does (workflow.letters.generate_pdf_job), here and now.
    with app.app_context():
        with get_db().transaction() as session:
            pending = pending_documents(session)
        for document_id in pending:
            generate_document(get_db(), document_id, get_documents().converter)


@pytest.fixture()
def make_letter(app: Flask) -> Any:
    """Create a letter through the domain, as the staff account: ``make_letter(terms)``.

    Its PDF is made before it returns unless ``generate=False``.
    """
    return lambda terms, generate=True: _make_letter(app, terms, generate=generate)


@pytest.fixture()
def generate_pending(app: Flask) -> Any:
    """Make every pending PDF now: ``generate_pending()``."""
    return lambda: _generate_pending(app)


# --- execution in counterparts --------------------------------------------------------------


@pytest.fixture(scope="session")
def drawn_signature() -> str:
    """A signature drawn on a canvas, as the signing page sends it: a base64 PNG."""
    image = Image.new("RGBA", (400, 120), (255, 255, 255, 0))
    ImageDraw.Draw(image).line([(20, 90), (120, 20), (220, 100), (380, 30)],
                               fill=(22, 34, 110, 255), width=6)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _execution_state(app: Flask, letter_id: int) -> dict[str, Any]:
    with app.app_context(), get_db().transaction() as session:
        envelopes = list(session.scalars(select(Envelope).where(Envelope.letter_id == letter_id)
                                         .order_by(Envelope.created_at)))
        ids = [e.id for e in envelopes]
        counterparts = session.scalars(select(Counterpart).where(
            Counterpart.envelope_id.in_(ids)).order_by(Counterpart.id)) if ids else []
        return {
            "letter": session.get(Letter, letter_id).status,
            "envelopes": [(e.id, e.status, e.assembly_state) for e in envelopes],
            "counterparts": [(c.id, c.status, c.first_viewed_at, c.signed_document_id)
                             for c in counterparts],
            "events": session.scalar(select(func.count()).select_from(Event)
                                     .where(Event.letter_id == letter_id)),
            "documents": session.scalar(select(func.count()).select_from(Document)
                                        .where(Document.letter_id == letter_id)),
        }


@pytest.fixture()
def execution_state(app: Flask) -> Any:
    """What a request must not change when it is refused: ``execution_state(letter_id)``
    gives the letter's status, its envelopes and counterparts, and its event and document
    counts."""
    return lambda letter_id: _execution_state(app, letter_id)


@pytest.fixture()
def send_letter(client: FlaskClient, api: dict[str, str]) -> Any:
    """Send a letter through the API: ``send_letter(letter_id, **body)`` returns the answer,
    with each signer's ``token`` (the last part of its link) added."""
    def send(letter_id: int, **body: Any) -> dict[str, Any]:
        response = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json=body)
        assert response.status_code == 201, response.text
        answer = response.json
        for signer in answer["signers"]:
            signer["token"] = signer["link"].rsplit("/", 1)[1]
        return answer
    return send


@pytest.fixture()
def sent(make_letter: Any, send_letter: Any, reference_terms: dict[str, Any]) -> dict[str, Any]:
    """A generated letter sent to its two signers (the company's chair, then the executive)."""
    letter_id = make_letter(reference_terms)
    answer = send_letter(letter_id, signers=[
        {"role": "company", "name": "Eliot Protsch", "email": "eliot@capstone.test"},
        {"role": "executive", "name": "John R. Tucker"}])
    return {"letter_id": letter_id, **answer}


@pytest.fixture()
def shared_database(data_dir: Path, database_url: str | None) -> Iterator[Any]:
    """The database of the test's data folder, for checking what server processes did."""
    database = open_database(data_dir, database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (its own browser download cannot
    work here); ``make test`` installs it, and a machine without it fails here, loudly."""
    from playwright.sync_api import sync_playwright

    from web.testing import CHROMIUM, launch_chromium

    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
