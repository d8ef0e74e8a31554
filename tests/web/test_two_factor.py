"""Two-factor sign-in: set up with a QR code, a code after the password, recovery codes that
work once, codes rate-limited like passwords, and the administrators' requirement."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from sqlalchemy import select

from web.database import get_db
from web.testing import csrf_token
from workflow.models import RecoveryCode, User
from workflow.settings import REQUIRE_TWO_FACTOR, get_setting


def set_up(browser) -> tuple[str, list[str]]:
    """Turn on two-factor sign-in from the set-up page; return the secret and the codes."""
    page = browser.get("/account/two-factor/setup")
    assert page.status_code == 200
    assert re.search(r'<img class="qr-code" src="data:image/svg\+xml', page.text)
    secret = re.search(r'<code class="two-factor-secret">([A-Z2-7 ]+)</code>',
                       page.text).group(1).replace(" ", "")
    token = csrf_token(page.text)
    # The page hands the secret back sealed for this session (the GET keeps nothing).
    sealed = re.search(r'name="setup_secret" value="([^"]+)"', page.text).group(1)
    assert secret not in sealed
    wrong = browser.post("/account/two-factor/setup", data={"csrf_token": token,
                                                             "setup_secret": sealed,
                                                             "code": "000000"})
    assert wrong.status_code == 422 and "not the code your app shows" in wrong.text
    assert secret.replace(" ", "") in wrong.text.replace(" ", "")  # the same secret again
    sealed = re.search(r'name="setup_secret" value="([^"]+)"', wrong.text).group(1)
    done = browser.post("/account/two-factor/setup", data={
        "csrf_token": token, "setup_secret": sealed, "code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200, done.text
    codes = re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", done.text)
    assert len(codes) == 10 and "shown only this once" in done.text
    return secret, codes


def password_step(client, email: str, password: str, next_page: str = ""):
    page = client.get("/sign-in")
    return client.post("/sign-in", data={"email": email, "password": password,
                                         "next": next_page, "csrf_token": csrf_token(page.text)})


def code_step(client, code: str, page_url: str = "/sign-in/two-factor"):
    page = client.get(page_url)
    assert page.status_code == 200
    return client.post("/sign-in/two-factor", data={
        "code": code, "csrf_token": csrf_token(page.text),
        "next": re.search(r'name="next" type="hidden" value="([^"]*)"', page.text).group(1)})


def code_of_next_step(secret: str) -> str:
    """A code of the app's next 30-second step (accepted: clocks drift)."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def test_set_up_then_sign_in_with_the_apps_code(app, staff, credentials):
    email, password = credentials["staff"]
    secret, codes = set_up(staff)
    assert "is <strong>on</strong>" in staff.get("/account/two-factor").text
    # Stored encrypted and hashed: the database holds neither the secret nor the codes.
    with app.app_context(), get_db().transaction() as session:
        user = session.scalar(select(User).where(User.email == email))
        stored_secret = user.totp_secret
        hashes = set(session.scalars(select(RecoveryCode.code_hash)
                                     .where(RecoveryCode.user_id == user.id)))
    assert secret not in stored_secret and len(hashes) == 10
    assert not hashes & {c for code in codes for c in (code, code.replace("-", ""))}

    browser = app.test_client()
    first = password_step(browser, email, password, "/letters/new")
    assert first.status_code == 302
    assert first.headers["Location"] == "/sign-in/two-factor?next=/letters/new"
    # The password alone opens nothing.
    assert browser.get("/letters").headers["Location"].startswith("/sign-in/two-factor")
    assert browser.get("/api/letters").status_code == 401
    wrong = code_step(browser, "123456")
    assert wrong.status_code == 401 and "That code is not right" in wrong.text
    code = code_of_next_step(secret)
    right = code_step(browser, code, first.headers["Location"])
    assert right.status_code == 302 and right.headers["Location"] == "/letters/new"
    assert browser.get("/letters/new").status_code == 200
    # A code is never accepted twice.
    again = app.test_client()
    password_step(again, email, password)
    assert code_step(again, code).status_code == 401


def test_a_recovery_code_signs_in_once(app, staff, credentials):
    email, password = credentials["staff"]
    _, codes = set_up(staff)
    browser = app.test_client()
    password_step(browser, email, password)
    answer = code_step(browser, codes[3].upper().replace("-", " "))
    assert answer.status_code == 302
    assert "9 recovery codes left" in browser.get("/letters").text
    other = app.test_client()
    password_step(other, email, password)
    assert code_step(other, codes[3]).status_code == 401


def test_wrong_codes_are_rate_limited_like_passwords(app_config, credentials, sign_in):
    from web import create_app

    app = create_app({**app_config, "RATE_LIMIT_FAILURES": "3 per minute"})
    try:
        email, password = credentials["staff"]
        staff = sign_in(app.test_client(), email, password)
        secret, _ = set_up(staff)
        browser = app.test_client()
        password_step(browser, email, password)
        token = csrf_token(browser.get("/sign-in/two-factor").text)
        for _ in range(3):
            assert browser.post("/sign-in/two-factor", data={
                "code": "000000", "csrf_token": token}).status_code == 401
        # Over the limit even the right code waits, as the right password does.
        blocked = browser.post("/sign-in/two-factor", data={
            "code": code_of_next_step(secret), "csrf_token": token})
        assert blocked.status_code == 429 and blocked.headers["Retry-After"]
        assert "Too many failed attempts" in blocked.text
        assert browser.get("/letters").status_code == 302  # still not signed in
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


def test_administrators_can_require_it_for_everyone(app, sign_in, credentials, token):
    staff_email, staff_password = credentials["staff"]
    staff = sign_in(app.test_client(), staff_email, staff_password)
    assert staff.get("/letters").status_code == 200
    admin = sign_in(app.test_client(), *credentials["admin"])
    page = admin.get("/admin/settings")
    answer = admin.post("/admin/settings", data={"csrf_token": csrf_token(page.text),
                                                 "require_two_factor": "yes"})
    assert answer.status_code == 302
    with app.app_context(), get_db().transaction() as session:
        assert get_setting(session, REQUIRE_TWO_FACTOR) is True
    # An open session without it is sent to set it up at its next page ...
    moved = staff.get("/letters")
    assert moved.status_code == 302
    assert moved.headers["Location"].startswith("/account/two-factor/setup")
    assert staff.get("/api/letters").status_code == 401  # the cookie opens no API either
    # ... and so is a new sign-in, right after the password.
    fresh = app.test_client()
    first = password_step(fresh, staff_email, staff_password)
    assert first.headers["Location"] == "/account/two-factor/setup"
    setup = fresh.get("/account/two-factor/setup")
    assert "require two-factor sign-in for every account" in setup.text
    assert fresh.get("/letters/new").status_code == 302
    secret, _ = set_up(fresh)
    assert fresh.get("/letters/new").status_code == 200
    # It cannot be turned off while it is required.
    page = fresh.get("/account/two-factor")
    refused = fresh.post("/account/two-factor/disable", data={
        "csrf_token": csrf_token(page.text), "password": staff_password})
    assert refused.status_code == 409
    # API tokens are unaffected.
    assert app.test_client().get("/api/letters", headers={
        "Authorization": f"Bearer {token}"}).status_code == 200
    # The administrator, without it, is sent to set it up as well.
    assert admin.get("/letters").headers["Location"].startswith("/account/two-factor/setup")
    assert secret


def test_turning_it_off_needs_the_password(app, staff, credentials):
    email, password = credentials["staff"]
    _, codes = set_up(staff)
    page = staff.get("/account/two-factor")
    wrong = staff.post("/account/two-factor/disable", data={
        "csrf_token": csrf_token(page.text), "password": "not my password"})
    assert wrong.status_code == 401 and "stays on" in wrong.text
    right = staff.post("/account/two-factor/disable", data={
        "csrf_token": csrf_token(page.text), "password": password})
    assert right.status_code == 302
    assert "is <strong>off</strong>" in staff.get("/account/two-factor").text
    browser = app.test_client()
    assert password_step(browser, email, password).headers["Location"] == "/letters"
    with app.app_context(), get_db().transaction() as session:
        assert session.scalar(select(RecoveryCode).where(RecoveryCode.used_at.is_(None))) \
            is None
    assert codes


@pytest.mark.parametrize("code", ["", "12345", "abcdef", "1234567"])
def test_codes_that_are_not_codes_are_refused(app, staff, credentials, code):
    email, password = credentials["staff"]
    set_up(staff)
    browser = app.test_client()
    password_step(browser, email, password)
    assert code_step(browser, code).status_code in (401, 422)
    assert browser.get("/letters").status_code == 302
