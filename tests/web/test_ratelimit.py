"""Failed sign-ins and guessed tokens are slowed per client, without locking out anyone else."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from web import create_app
from web.database import get_db
from web.testing import csrf_token
from workflow.models import StaffSession

OTHER = {"REMOTE_ADDR": "198.51.100.20"}
GUESSER = {"REMOTE_ADDR": "203.0.113.66"}


@pytest.fixture()
def app_config(app_config):
    return {**app_config, "RATE_LIMIT_FAILURES": "5 per minute"}


def post_sign_in(client, email, password, environ, token=None):
    token = token or csrf_token(client.get("/sign-in", environ_base=environ).text)
    return client.post("/sign-in", environ_base=environ, data={
        "email": email, "password": password, "csrf_token": token})


def test_failed_sign_ins_are_limited_per_client(app, credentials):
    email, password = credentials["staff"]
    guesser, other = app.test_client(), app.test_client()
    token = csrf_token(guesser.get("/sign-in", environ_base=GUESSER).text)
    for _ in range(5):
        response = post_sign_in(guesser, email, "wrong password!", GUESSER, token)
        assert response.status_code == 401
    blocked = post_sign_in(guesser, email, password, GUESSER, token)
    assert blocked.status_code == 429
    assert "Too many failed attempts" in blocked.text
    assert int(blocked.headers["Retry-After"]) >= 1
    # Someone else, at another address, signs in as usual, the same account included.
    assert post_sign_in(other, email, password, OTHER).status_code == 302


def test_successful_sign_ins_do_not_count(app, credentials):
    email, password = credentials["staff"]
    for _ in range(8):
        client = app.test_client()
        assert post_sign_in(client, email, password, GUESSER).status_code == 302


def test_guessed_api_tokens_are_limited_per_client(client, api):
    for index in range(5):
        response = client.get("/api/letters", headers={"Authorization": f"Bearer guess{index}"},
                              environ_base=GUESSER)
        assert response.status_code == 401
    blocked = client.get("/api/letters", headers=api, environ_base=GUESSER)
    assert blocked.status_code == 429
    assert blocked.is_json and "Too many failed attempts" in blocked.json["error"]
    assert client.get("/api/letters", headers=api, environ_base=OTHER).status_code == 200


def test_guessed_signing_links_are_limited_per_client(client):
    for index in range(5):
        response = client.get(f"/api/sign/{'x' * 40}{index}", environ_base=GUESSER)
        assert response.status_code == 404
    assert client.get("/api/sign/" + "y" * 43, environ_base=GUESSER).status_code == 429
    assert client.get("/sign/" + "y" * 43, environ_base=GUESSER).status_code == 429
    assert client.get("/api/sign/" + "y" * 43, environ_base=OTHER).status_code == 404


def test_ipv6_clients_count_per_64(client, api):
    # One host commonly holds a whole /64: changing the last bits gains nothing.
    for index in range(5):
        response = client.get("/api/letters", headers={"Authorization": f"Bearer g{index}"},
                              environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{index + 1:x}"})
        assert response.status_code == 401
    same_64 = {"REMOTE_ADDR": "2001:db8:1:2:ffff:ffff:ffff:fffe"}
    assert client.get("/api/letters", headers=api, environ_base=same_64).status_code == 429
    other_64 = {"REMOTE_ADDR": "2001:db8:1:3::1"}
    assert client.get("/api/letters", headers=api, environ_base=other_64).status_code == 200


def test_failed_sign_ins_to_one_account_are_limited_from_any_address(app_config, credentials):
    app = create_app({**app_config, "RATE_LIMIT_ACCOUNT_FAILURES": "3 per minute"})
    try:
        email, password = credentials["staff"]
        admin_email, admin_password = credentials["admin"]
        # Three guesses at one account, each from an address of its own (a botnet, say).
        for index, spelling in enumerate((email, email.upper(), f" {email} ")):
            environ = {"REMOTE_ADDR": f"198.51.100.{index + 1}"}
            response = post_sign_in(app.test_client(), spelling, "wrong password!", environ)
            assert response.status_code == 401
        # Now that account waits, whoever asks and whatever the password...
        fresh = {"REMOTE_ADDR": "192.0.2.200"}
        blocked = post_sign_in(app.test_client(), email, password, fresh)
        assert blocked.status_code == 429
        assert "Too many failed sign-ins to this account" in blocked.text
        assert int(blocked.headers["Retry-After"]) >= 1
        with app.app_context(), get_db().transaction() as session:
            assert session.scalar(select(func.count()).select_from(StaffSession)) == 0
        # ...while other accounts sign in as usual, from the same addresses too.
        other = post_sign_in(app.test_client(), admin_email, admin_password,
                             {"REMOTE_ADDR": "198.51.100.1"})
        assert other.status_code == 302
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()
