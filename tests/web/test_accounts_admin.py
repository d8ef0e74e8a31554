"""Administrators manage accounts in the browser: invite with a one-time set-password link,
change roles, disable, enable and reset; the command line makes accounts with a role; older
databases keep their administrators."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select

from web.cli import cli
from web.database import get_db
from web.testing import csrf_token
from workflow.accounts import create_api_token, invite_user, set_role
from workflow.db import Database, open_database
from workflow.errors import StateError
from workflow.models import AccountLink, User

LINK_RE = re.compile(r"http://localhost/account/set-password/[A-Za-z0-9_\-]{20,}")


def admin_browser(app, sign_in, credentials):
    return sign_in(app.test_client(), *credentials["admin"])


def post(browser, url: str, **data):
    token = csrf_token(browser.get("/admin/users").text)
    return browser.post(url, data={"csrf_token": token, **data})


def user_row(app, email: str) -> User:
    with app.app_context(), get_db().transaction() as session:
        user = session.scalar(select(User).where(User.email == email))
        session.expunge(user)
        return user


def choose_password(client, link: str, password: str):
    page = client.get(link)
    assert page.status_code == 200, page.text
    return client.post(link, data={"csrf_token": csrf_token(page.text), "new": password,
                                   "confirm": password})


def test_an_invitation_without_mail_shows_the_link_once_and_it_works_once(
        app, client, sign_in, credentials):
    admin = admin_browser(app, sign_in, credentials)
    answer = post(admin, "/admin/users/invite", email="Reader@Example.com", role="read_only")
    assert answer.status_code == 302
    page = admin.get("/admin/users")
    assert "reader@example.com was invited as read-only." in page.text
    (link,) = set(LINK_RE.findall(page.text))
    assert "Hand this one-time link to reader@example.com yourself" in page.text
    row = page.text.split('<th scope="row">reader@example.com', 1)[1].split("</tr>", 1)[0]
    assert "Invited (link until" in row and 'value="read_only" selected' in row
    assert not LINK_RE.search(admin.get("/admin/users").text)  # shown once
    # Only the link's SHA-256 is kept, and the account has no usable password yet.
    with app.app_context(), get_db().transaction() as session:
        stored = session.scalars(select(AccountLink.token_hash)).all()
    assert link.rsplit("/", 1)[1] not in stored and len(stored) == 1
    assert user_row(app, "reader@example.com").password_set_at is None

    done = choose_password(client, link, "a reader password")
    assert done.status_code == 302 and done.headers["Location"] == "/sign-in"
    reader = sign_in(app.test_client(), "reader@example.com", "a reader password")
    assert reader.get("/letters").status_code == 200
    assert reader.get("/letters/new").status_code == 403
    again = client.get(link)
    assert again.status_code == 404 and "already used" in again.text
    assert "Active" in admin.get("/admin/users").text


def test_an_invitation_is_emailed_when_mail_is_set_up(app_config, smtp_inbox, sign_in,
                                                      credentials):
    from web import create_app

    port, inbox = smtp_inbox
    app = create_app({**app_config, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": port,
                      "SMTP_STARTTLS": False, "SMTP_FROM": "counterpart@firm.test"})
    try:
        admin = admin_browser(app, sign_in, credentials)
        assert post(admin, "/admin/users/invite", email="clerk@example.com",
                    role="staff").status_code == 302
        page = admin.get("/admin/users")
        assert "was emailed to clerk@example.com" in page.text
        assert not LINK_RE.search(page.text)
        (message,) = inbox.messages
        assert message["To"] == "clerk@example.com"
        assert message["Subject"] == "Your Counterpart account"
        (link,) = LINK_RE.findall(message.get_payload(decode=True).decode())
        browser = app.test_client()
        assert choose_password(browser, link, "a clerk password").status_code == 302
        clerk = sign_in(app.test_client(), "clerk@example.com", "a clerk password")
        assert clerk.get("/letters/new").status_code == 200
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


def test_an_expired_or_altered_link_changes_nothing(app, client):
    with app.app_context(), get_db().transaction() as session:
        _, token = invite_user(session, "late@example.com", "staff", by="admin@example.com",
                               now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=73))
    expired = client.get(f"/account/set-password/{token}")
    assert expired.status_code == 410 and "has expired" in expired.text
    altered = client.get(f"/account/set-password/{token[:-2]}xy")
    assert altered.status_code == 404
    assert user_row(app, "late@example.com").password_set_at is None


def test_reset_ends_sessions_and_tokens_and_the_old_password(app, sign_in, credentials):
    email, password = credentials["staff"]
    staff = sign_in(app.test_client(), email, password)
    with app.app_context(), get_db().transaction() as session:
        token = create_api_token(session, email, "scripts")
    api = {"Authorization": f"Bearer {token}"}
    assert staff.get("/api/letters", headers=api).status_code == 200
    admin = admin_browser(app, sign_in, credentials)
    user_id = user_row(app, email).id
    assert post(admin, f"/admin/users/{user_id}/reset").status_code == 302
    page = admin.get("/admin/users")
    (link,) = set(LINK_RE.findall(page.text))
    assert "Password reset" in page.text
    assert staff.get("/letters").status_code == 302  # signed out
    assert staff.get("/api/letters", headers=api).status_code == 401
    refused = app.test_client()
    form = refused.get("/sign-in")
    answer = refused.post("/sign-in", data={"email": email, "password": password,
                                            "csrf_token": csrf_token(form.text)})
    assert answer.status_code == 401
    assert choose_password(app.test_client(), link, "my new password 1").status_code == 302
    assert sign_in(app.test_client(), email, "my new password 1").get(
        "/letters").status_code == 200


def test_disable_and_enable_from_the_page(app, sign_in, credentials):
    email, password = credentials["staff"]
    staff = sign_in(app.test_client(), email, password)
    admin = admin_browser(app, sign_in, credentials)
    user_id = user_row(app, email).id
    assert post(admin, f"/admin/users/{user_id}/disable").status_code == 302
    assert "Disabled" in admin.get("/admin/users").text
    assert staff.get("/letters").status_code == 302
    assert user_row(app, email).disabled_at is not None
    assert post(admin, f"/admin/users/{user_id}/enable").status_code == 302
    assert sign_in(app.test_client(), email, password).get("/letters").status_code == 200


def test_roles_change_from_the_page_but_never_leave_no_administrator(app, sign_in,
                                                                       credentials):
    email, _ = credentials["staff"]
    admin = admin_browser(app, sign_in, credentials)
    user_id = user_row(app, email).id
    assert post(admin, f"/admin/users/{user_id}/role", role="admin").status_code == 302
    assert user_row(app, email).role == "admin" and user_row(app, email).is_admin
    assert post(admin, f"/admin/users/{user_id}/role", role="read_only").status_code == 302
    assert user_row(app, email).role == "read_only" and not user_row(app, email).is_admin
    bad = post(admin, f"/admin/users/{user_id}/role", role="owner")
    assert bad.status_code == 422 and "&#39;owner&#39; is not a role" in bad.text
    own_id = user_row(app, credentials["admin"][0]).id
    own = post(admin, f"/admin/users/{own_id}/role", role="staff")
    assert own.status_code == 422 and "your own account" in own.text
    assert post(admin, f"/admin/users/{own_id}/disable").status_code == 422
    assert user_row(app, credentials["admin"][0]).role == "admin"
    with app.app_context(), get_db().transaction() as session:
        try:
            set_role(session, own_id, "staff")
        except StateError as exc:
            assert "only administrator" in str(exc)
        else:
            raise AssertionError("the last administrator lost the role")


def test_create_user_takes_a_role(tmp_path: Path, database_url):
    env = {"COUNTERPART_DATA_DIR": str(tmp_path / "data")}
    if database_url:
        env["COUNTERPART_DATABASE_URL"] = database_url
    runner = CliRunner()
    result = runner.invoke(cli, ["create-user", "viewer@example.com", "--role", "read_only",
                                 "--generate"], env=env)
    assert result.exit_code == 0, result.output
    assert "Created the read-only account viewer@example.com." in result.output
    result = runner.invoke(cli, ["create-user", "boss@example.com", "--admin", "--generate"],
                           env=env)
    assert "Created the administrator account boss@example.com." in result.output
    clash = runner.invoke(cli, ["create-user", "x@example.com", "--admin", "--role", "staff",
                                "--generate"], env=env)
    assert clash.exit_code == 2 and "contradict" in clash.output
    database = open_database(tmp_path / "data", database_url)
    try:
        with database.transaction() as session:
            roles = {u.email: (u.role, u.is_admin) for u in session.scalars(select(User))}
    finally:
        database.dispose()
    assert roles == {"viewer@example.com": ("read_only", False),
                     "boss@example.com": ("admin", True)}


def test_an_older_database_keeps_its_administrators_as_the_admin_role(tmp_path: Path):
    from alembic import command
    from alembic.config import Config

    from workflow.db import MIGRATIONS

    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    with database.engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO users (email, password_hash, is_admin, created_at) VALUES "
            "('boss@example.com', 'x', 1, '2026-01-02 03:04:05'), "
            "('clerk@example.com', 'x', 0, '2026-01-02 03:04:05')"))
    database.migrate()
    try:
        with database.transaction() as session:
            rows = {u.email: (u.role, u.is_admin, u.password_set_at is not None)
                    for u in session.scalars(select(User))}
    finally:
        database.dispose()
    assert rows == {"boss@example.com": ("admin", True, True),
                    "clerk@example.com": ("staff", False, True)}
