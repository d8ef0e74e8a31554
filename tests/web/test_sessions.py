"""Sessions live on the server: a copied cookie stops working as soon as its session ends
(signing out, a new password from the command line or the page, a disabled account), and the
signing links shown once never travel in the cookie."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import html as lxml_html
from sqlalchemy import func, select

from web import create_app
from web.cli import cli
from web.config import ConfigError
from web.database import get_db
from web.testing import csrf_token, terms_form_data
from workflow.models import ApiToken, Letter, SessionNote, StaffSession

COOKIE = "counterpart_session"


def copy_cookie(app, client):
    """Another browser holding a copy of this client's session cookie."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return thief


def cookie_contents(app, client) -> str:
    """What the signed (not encrypted) session cookie says, as anyone holding it can read."""
    value = client.get_cookie(COOKIE).value
    return json.dumps(app.session_interface.get_signing_serializer(app).loads(value))


def sessions(app) -> list[tuple[str | None, str | None]]:
    with app.app_context(), get_db().transaction() as session:
        return [(s.end_reason, s.user.email) for s in
                session.scalars(select(StaffSession).order_by(StaffSession.id))]


def count(app, model) -> int:
    with app.app_context(), get_db().transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def run(data_dir: Path, database_url: str | None, *args: str):
    env = {"COUNTERPART_DATA_DIR": str(data_dir)}
    if database_url:
        env["COUNTERPART_DATABASE_URL"] = database_url
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_the_cookie_holds_only_a_session_token(app, staff, credentials):
    contents = cookie_contents(app, staff)
    email, _ = credentials["staff"]
    assert email not in contents and "user_id" not in contents
    assert sessions(app) == [(None, email)]


def test_a_copied_cookie_stops_working_when_its_owner_signs_out(app, staff, reference_terms):
    thief = copy_cookie(app, staff)
    form = thief.get("/letters/new?template=separation_letter")
    assert form.status_code == 200  # the copy works while the session lasts
    stolen = thief.get_cookie(COOKIE).value  # with the form's CSRF token in it

    page = staff.get("/letters")
    assert staff.post("/sign-out", data={"csrf_token": csrf_token(page.text)}).status_code == 302
    assert sessions(app) == [("signed out", "counsel@example.com")]

    assert thief.get("/letters").status_code == 302
    # The thief's form, with the cookie and the form token it was given, saves nothing now.
    thief.set_cookie(COOKIE, stolen)
    saved = thief.post("/letters/new", data=terms_form_data(reference_terms, form.text))
    assert saved.status_code == 302 and saved.headers["Location"].startswith("/sign-in")
    assert count(app, Letter) == 0
    assert sessions(app) == [("signed out", "counsel@example.com")]  # nothing reopened


def test_signing_in_again_ends_the_session_the_browser_had(app, staff, credentials):
    thief = copy_cookie(app, staff)
    email, password = credentials["staff"]
    page = staff.get("/letters")
    assert staff.post("/sign-in", data={"email": email, "password": password,
                                        "csrf_token": csrf_token(page.text)}).status_code == 302
    assert [reason for reason, _ in sessions(app)] == ["signed in again", None]
    assert thief.get("/letters").status_code == 302
    assert staff.get("/letters").status_code == 200


def test_set_password_ends_sessions_and_revokes_tokens(app, staff, api, client, data_dir,
                                                       database_url, credentials, sign_in):
    email, old_password = credentials["staff"]
    other_account = sign_in(app.test_client(), *credentials["admin"])
    thief = copy_cookie(app, staff)
    assert client.get("/api/letters", headers=api).status_code == 200

    result = run(data_dir, database_url, "set-password", email, "--generate")
    assert result.exit_code == 0, result.output
    assert "its sessions ended and its API tokens were revoked" in result.output

    assert staff.get("/letters").status_code == 302
    assert thief.get("/letters").status_code == 302
    refused = client.get("/api/letters", headers=api)
    assert refused.status_code == 401 and refused.is_json
    assert other_account.get("/letters").status_code == 200  # another account is untouched
    assert sessions(app) == [("password changed", email), (None, "admin@example.com")]
    with app.app_context(), get_db().transaction() as session:
        assert session.scalar(select(ApiToken.revoked_at)) is not None
    # The old password no longer opens the account.
    page = client.get("/sign-in")
    assert client.post("/sign-in", data={"email": email, "password": old_password,
                                         "csrf_token": csrf_token(page.text)}
                       ).status_code == 401


def test_changing_ones_own_password_on_the_page(app, staff, api, client, credentials):
    email, old_password = credentials["staff"]
    thief = copy_cookie(app, staff)
    page = staff.get("/account/password")
    assert page.status_code == 200 and 'href="/account/password"' in page.text

    wrong = staff.post("/account/password", data={
        "csrf_token": csrf_token(page.text), "current": "not my password",
        "new": "a brand new password", "confirm": "a brand new password"})
    assert wrong.status_code == 401
    assert "The current password is not right; nothing was changed." in wrong.text
    differ = staff.post("/account/password", data={
        "csrf_token": csrf_token(page.text), "current": old_password,
        "new": "a brand new password", "confirm": "another new password"})
    assert differ.status_code == 422 and "The two new passwords differ" in differ.text
    assert thief.get("/letters").status_code == 200  # nothing changed yet
    assert client.get("/api/letters", headers=api).status_code == 200

    changed = staff.post("/account/password", data={
        "csrf_token": csrf_token(page.text), "current": old_password,
        "new": "a brand new password", "confirm": "a brand new password"})
    assert changed.status_code == 302
    assert "Every other session of your account has ended" in staff.get("/letters").text
    assert thief.get("/letters").status_code == 302
    assert client.get("/api/letters", headers=api).status_code == 401
    assert sessions(app) == [("password changed", email), (None, email)]


def test_disabled_accounts_cannot_sign_in_nor_use_tokens(app, staff, api, client, data_dir,
                                                         database_url, credentials, sign_in):
    email, password = credentials["staff"]
    result = run(data_dir, database_url, "disable-user", email)
    assert result.exit_code == 0, result.output
    assert f"The account {email} is disabled" in result.output
    assert staff.get("/letters").status_code == 302
    assert client.get("/api/letters", headers=api).status_code == 401
    stranger = app.test_client()
    page = stranger.get("/sign-in")
    refused = stranger.post("/sign-in", data={"email": email, "password": password,
                                              "csrf_token": csrf_token(page.text)})
    # The same answer as a wrong password: the page does not say the account exists.
    assert refused.status_code == 401 and "do not match an account" in refused.text
    assert sessions(app) == [("account disabled", email)]
    again = run(data_dir, database_url, "disable-user", email)
    assert again.exit_code == 2 and "already disabled" in again.output

    assert run(data_dir, database_url, "enable-user", email).exit_code == 0
    sign_in(stranger)
    assert stranger.get("/letters").status_code == 200
    # Tokens revoked on disabling stay revoked.
    assert client.get("/api/letters", headers=api).status_code == 401


def send_form(page_html: str) -> dict[str, str]:
    (form,) = lxml_html.fromstring(page_html).xpath("//form[contains(@class, 'send-form')]")
    return dict(form.form_values())


def test_links_shown_once_never_travel_in_the_cookie(app, staff, make_letter, reference_terms):
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    sent = staff.post(f"/letters/{letter_id}/envelope", data=send_form(page.text))
    assert sent.status_code == 303
    cookie_after_sending = staff.get_cookie(COOKIE).value
    readable = cookie_contents(app, staff)
    with app.app_context(), get_db().transaction() as session:
        (sealed,) = session.scalars(select(SessionNote.sealed)).all()

    shown = staff.get(sent.headers["Location"])
    links = lxml_html.fromstring(shown.text).xpath("//input[starts-with(@value, "
                                                   "'http://localhost/sign/')]/@value")
    assert len(links) == 2
    for link in links:
        token = link.rsplit("/", 1)[1]
        assert token not in readable and token not in cookie_after_sending
        assert token not in sealed  # kept encrypted on the server
    # Shown once: the cookie forgot the ticket that opens them, so neither the page again
    # nor a copy of the cookie brings them back; showing them wrote nothing (the page is a
    # GET), and the note is deleted by the next batch of activity.
    assert "shown_once:" not in cookie_contents(app, staff)
    assert "/sign/" not in staff.get(f"/letters/{letter_id}").text
    assert "/sign/" not in copy_cookie(app, staff).get(f"/letters/{letter_id}").text
    assert count(app, SessionNote) == 1
    with app.app_context():
        get_db().activity.flush(get_db())
    assert count(app, SessionNote) == 0
    # A copy of the cookie taken before they were shown brings back nothing either now.
    before = app.test_client()
    before.set_cookie(COOKIE, cookie_after_sending)
    assert "/sign/" not in before.get(f"/letters/{letter_id}").text


def test_signing_out_drops_links_not_yet_shown(app, staff, make_letter, reference_terms,
                                               sign_in):
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    staff.post(f"/letters/{letter_id}/envelope", data=send_form(page.text))
    assert count(app, SessionNote) == 1
    staff.post("/sign-out", data={"csrf_token": csrf_token(page.text)})
    assert count(app, SessionNote) == 0
    sign_in(staff)
    assert "/sign/" not in staff.get(f"/letters/{letter_id}").text


def test_the_cookie_is_secure_when_served_over_https(app, credentials):
    email, password = credentials["staff"]
    for base_url, secure in (("https://localhost", True), ("http://localhost", False)):
        client = app.test_client()
        page = client.get("/sign-in", base_url=base_url)
        # (over https, the CSRF check also wants the page's own address as the referrer)
        response = client.post("/sign-in", base_url=base_url, data={
            "email": email, "password": password, "csrf_token": csrf_token(page.text)},
            headers={"Referer": f"{base_url}/sign-in"})
        assert response.status_code == 302
        assert ("; Secure" in response.headers["Set-Cookie"]) is secure, base_url


def test_the_cookie_is_secure_when_the_app_says_https(app_config, credentials):
    app = create_app({**app_config, "PREFERRED_URL_SCHEME": "https"})
    try:
        client = app.test_client()
        page = client.get("/sign-in")
        assert "; Secure" in page.headers["Set-Cookie"]
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


@pytest.mark.parametrize("key, words", [
    ("short", "it has 5 characters; it needs at least 32"),
    ("k" * 40, "too regular to be random"),
    ("changeme-changeme-changeme-changeme", "too regular to be random"),
    ("0123456789abcdef" * 2, "too regular to be random"),
])
def test_a_weak_secret_key_is_refused_at_start(tmp_path, converter, key, words):
    data_dir = tmp_path / "data"
    with pytest.raises(ConfigError, match=words) as refused:
        create_app({"DATA_DIR": data_dir, "SECRET_KEY": key, "PDF_CONVERTER": converter})
    assert "COUNTERPART_SECRET_KEY is not a usable secret key" in str(refused.value)
    assert "secrets.token_hex(32)" in str(refused.value)
    assert not data_dir.exists()  # nothing was made


def test_serve_refuses_a_weak_secret_key_with_a_clear_message(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--port", "0"], env={
        "COUNTERPART_DATA_DIR": str(tmp_path / "data"),
        "COUNTERPART_SECRET_KEY": "password1234"})
    assert result.exit_code == 2
    assert "COUNTERPART_SECRET_KEY is not a usable secret key: it has 12 characters" in \
        result.output
    assert not (tmp_path / "data").exists()


def test_a_long_random_secret_key_is_taken(app_config):
    app = create_app({**app_config, "SECRET_KEY": "b3f0c2a9d47e1f6a8c5b2d9e0f7a3c6b"})
    try:
        assert app.config["SECRET_KEY"] == "b3f0c2a9d47e1f6a8c5b2d9e0f7a3c6b"
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()
