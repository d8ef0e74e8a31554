"""Roles on every route: administrators do everything, staff work on letters, read-only
accounts see and download; a refusal is 403 and changes nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from web.database import get_db
from web.testing import csrf_token
from workflow.accounts import create_api_token, create_user
from workflow.models import Base, User

READER_EMAIL = "reader@example.com"
READER_PASSWORD = "read only password"
ROLE_ORDER = ("read_only", "staff", "admin")

# The least role each route needs, as a user would describe it: reading and downloading is
# for everyone; working on letters is for staff; managing accounts and settings is for
# administrators. (endpoint, method) pairs; a method of None means every method.
EXPECTED: dict[tuple[str, str | None], str] = {
    ("letters.home", None): "read_only",
    ("letters.index", None): "read_only",
    ("letters.show", None): "read_only",
    ("letters.status", None): "read_only",
    ("letters.audit", None): "read_only",
    ("letters.page_image", None): "read_only",
    ("letters.download", None): "read_only",
    ("letters.blank_page_image", None): "read_only",
    ("letters.scan_page_image", None): "read_only",
    ("letters.executed_pdf", None): "read_only",
    ("letters.signed_counterpart", None): "read_only",
    ("letters.counterparts_zip", None): "read_only",
    ("letters.blank_counterpart", None): "read_only",
    ("letters.new_letter", None): "staff",
    ("letters.edit", None): "staff",
    ("letters.review_upload", None): "staff",
    ("letters.send", None): "staff",
    ("letters.void", None): "staff",
    ("letters.new_link", None): "staff",
    ("letters.upload", None): "staff",
    ("letters.confirm_upload", None): "staff",
    ("letters.discard_upload", None): "staff",
    ("letters.undo_upload", None): "staff",
    ("letters.retry", None): "staff",
    ("letters.retry_assembly", None): "staff",
    ("api.letters", "GET"): "read_only",
    ("api.create", None): "staff",
    ("api.get_letter", None): "read_only",
    ("api.put_terms", None): "staff",
    ("api.letter_document", None): "read_only",
    ("api.templates", None): "read_only",
    ("api.template_schema", None): "read_only",
    ("api.envelope", None): "read_only",
    ("api.send", None): "staff",
    ("api.void", None): "staff",
    ("api.new_link", None): "staff",
    ("api.upload", None): "staff",
    ("api.undo_upload", None): "staff",
    ("api.retry", None): "staff",
    ("api.audit", None): "read_only",
    ("api.executed_pdf", None): "read_only",
    ("api.signed_counterpart", None): "read_only",
    ("api.counterparts_zip", None): "read_only",
    ("api.blank_counterpart", None): "read_only",
    ("auth.change_password", None): "read_only",
    ("auth.two_factor", None): "read_only",
    ("auth.two_factor_setup", None): "read_only",
    ("auth.two_factor_settings", None): "read_only",
    ("auth.two_factor_disable", None): "read_only",
    ("auth.recovery_codes", None): "read_only",
    ("admin.home", None): "admin",
    ("admin.users", None): "admin",
    ("admin.invite", None): "admin",
    ("admin.change_role", None): "admin",
    ("admin.disable", None): "admin",
    ("admin.enable", None): "admin",
    ("admin.reset", None): "admin",
    ("admin.settings", None): "admin",
    ("admin.save_settings", None): "admin",
    ("api.webhooks", None): "admin",
    ("api.add_webhook", None): "admin",
    ("api.webhook", None): "admin",
    ("api.remove_webhook", None): "admin",
    ("api.webhook_delivery", None): "admin",
    ("api.redeliver_webhook", None): "admin",
}


def expected_role(endpoint: str, method: str, path: str) -> str:
    """The table above; a route it does not name yet follows the documented rule: an admin
    area is for administrators, reading for everyone, anything else for staff."""
    for key in ((endpoint, method), (endpoint, None)):
        if key in EXPECTED:
            return EXPECTED[key]
    if endpoint.startswith("admin") or path.startswith(("/admin", "/api/admin")):
        return "admin"
    if path.startswith("/api/templates") and method != "GET":  # changing the library
        return "admin"
    return "read_only" if method == "GET" else "staff"


def database_state(app) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (but when a session or a token was last used, which any
    request refreshes)."""
    with app.app_context(), get_db().transaction() as session:
        state = {}
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns
                       if c.name not in ("last_seen_at", "last_used_at")]
            rows = session.execute(select(*columns)).all()
            state[table.name] = sorted(tuple(map(repr, row)) for row in rows)
        return state


@pytest.fixture()
def reader(app, client, sign_in):
    with app.app_context(), get_db().transaction() as session:
        create_user(session, READER_EMAIL, READER_PASSWORD, role="read_only")
    return sign_in(client, READER_EMAIL, READER_PASSWORD)


def _routes(app):
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint == "static" or getattr(view, "is_public", False):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def _url(rule, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        converter, name = match.group(1) or "", match.group(2)
        if converter.startswith("any("):  # one of the listed words
            return converter[4:].split(",")[0].strip(" )'\"")
        return values.get(name, "1")
    return re.sub(r"<(?:([^:>]+):)?([^>]+)>", value, rule.rule)


def _clients(app, sign_in, credentials) -> dict[str, tuple[Any, str, dict[str, str]]]:
    """A signed-in browser, its CSRF token and API headers for each role."""
    accounts = {"read_only": (READER_EMAIL, READER_PASSWORD),
                "staff": credentials["staff"], "admin": credentials["admin"]}
    with app.app_context(), get_db().transaction() as session:
        if session.scalar(select(User).where(User.email == READER_EMAIL)) is None:
            create_user(session, READER_EMAIL, READER_PASSWORD, role="read_only")
        tokens = {role: create_api_token(session, email, "roles")
                  for role, (email, _) in accounts.items()}
    out = {}
    for role, (email, password) in accounts.items():
        browser = sign_in(app.test_client(), email, password)
        token = csrf_token(browser.get("/account/password").text)
        out[role] = (browser, token, {"Authorization": f"Bearer {tokens[role]}"})
    return out


def test_every_route_answers_each_role_as_its_role_allows(app, sign_in, credentials, sent):
    clients = _clients(app, sign_in, credentials)
    letter_id = sent["letter_id"]
    cid = sent["signers"][0]["counterpart_id"]
    real = {"letter_id": str(letter_id), "counterpart_id": str(cid), "number": "1",
            "page": "1", "extension": "pdf", "name": "separation_letter", "document_id": "1",
            "user_id": "1", "token": "x" * 43}
    # Allowed requests go to a letter and ids that do not exist, so they change nothing and
    # the walk stays independent of its order: what counts is that they are not refused.
    missing = {**real, "letter_id": "999999", "counterpart_id": "999999",
               "user_id": "999999", "document_id": "999999", "number": "99"}
    refused = allowed = 0
    for rule, method in _routes(app):
        for role in ROLE_ORDER:
            browser, token, headers = clients[role]
            needed = expected_role(rule.endpoint, method, rule.rule)
            may = ROLE_ORDER.index(role) >= ROLE_ORDER.index(needed)
            url = _url(rule, missing if may else real)
            if rule.rule.startswith("/api/"):
                call = dict(headers=headers, json={})
            else:
                call = dict(data={"csrf_token": token}) if method != "GET" else {}
            before = None if may else database_state(app)
            response = browser.open(url, method=method, **call)
            where = (rule.endpoint, method, role)
            if may:
                assert response.status_code != 403, where
                allowed += 1
                continue
            assert response.status_code == 403, where
            if rule.rule.startswith("/api/"):
                assert response.json["required_role"] == needed, where
            elif needed == "admin":
                assert "Only administrators" in response.text, where
            else:
                assert "Your account is read-only" in response.text, where
            assert database_state(app) == before, where
            refused += 1
    assert refused >= 40 and allowed >= 100


def test_a_reader_sees_letters_without_the_controls_that_change_them(reader, sent):
    page = reader.get(f"/letters/{sent['letter_id']}")
    assert page.status_code == 200
    assert "Read-only" in page.text
    nav = page.text.split('aria-label="Main"', 1)[1].split("</nav>", 1)[0]
    assert "New letter" not in nav and "Admin" not in nav
    for control in ("Void this envelope", "New link", "Upload the scan", "Change the terms"):
        assert control not in page.text, control
    assert "Print to sign on paper" in page.text  # a download, recorded
    assert reader.get("/letters/new").status_code == 403
    assert reader.get("/letters").status_code == 200


def test_each_role_sees_its_own_menu(app, sign_in, credentials):
    staff = sign_in(app.test_client(), *credentials["staff"])
    admin = sign_in(app.test_client(), *credentials["admin"])
    staff_nav = staff.get("/letters").text.split('aria-label="Main"', 1)[1].split("</nav>")[0]
    admin_nav = admin.get("/letters").text.split('aria-label="Main"', 1)[1].split("</nav>")[0]
    assert "New letter" in staff_nav and "Admin" not in staff_nav
    assert "New letter" in admin_nav and "Admin" in admin_nav
    assert staff.get("/admin/users").status_code == 403
    assert admin.get("/admin/users").status_code == 200


def test_a_role_change_applies_to_an_open_session_at_once(app, sign_in, credentials, sent):
    email, password = credentials["staff"]
    browser = sign_in(app.test_client(), email, password)
    assert browser.get("/letters/new").status_code == 200
    with app.app_context(), get_db().transaction() as session:
        session.scalar(select(User).where(User.email == email)).role = "read_only"
    assert browser.get("/letters/new").status_code == 403
    token = csrf_token(browser.get("/letters").text)
    response = browser.post(f"/letters/{sent['letter_id']}/envelope/void",
                            data={"csrf_token": token, "reason": "changed our mind"})
    assert response.status_code == 403
