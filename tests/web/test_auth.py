"""Signing in and out, sessions, CSRF, and the rule that every page needs a signed-in user."""

from __future__ import annotations

import re

import pytest

from web.database import get_db
from web.testing import csrf_token
from workflow.accounts import set_password

# Example values for the URL map's variables, so that every route can be called.
ROUTE_VALUES = {"letter_id": "1", "number": "1", "page": "1", "extension": "pdf",
                "name": "separation_letter", "filename": "css/app.css", "counterpart_id": "1",
                "token": "x" * 43}


def _urls(app, prefix_api: bool):
    """Every route that needs a signed-in user (public ones are tested on their own)."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/api") != prefix_api:
            continue
        if getattr(app.view_functions[rule.endpoint], "is_public", False):
            continue
        # A variable without an example of its own (a new id) gets "1".
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: ROUTE_VALUES.get(m.group(1), "1"),
                     rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url


def test_sign_in_page_is_public_and_has_a_labelled_form(client):
    page = client.get("/sign-in")
    assert page.status_code == 200
    assert '<label class="field__label" for="email">Email address</label>' in page.text
    assert '<label class="field__label" for="password">Password</label>' in page.text
    assert 'name="csrf_token"' in page.text


def test_every_page_redirects_a_stranger_to_sign_in(app, client):
    checked = 0
    for endpoint, method, url in _urls(app, prefix_api=False):
        if endpoint.startswith("auth.") or endpoint == "letters.status":
            continue
        # Without a session there is no CSRF token either; GETs show the redirect for all.
        if method != "GET":
            continue
        response = client.open(url, method=method)
        assert response.status_code == 302, (endpoint, url)
        assert response.headers["Location"].startswith("/sign-in?next="), endpoint
        checked += 1
    assert checked >= 7


def test_every_api_route_answers_a_stranger_401_json(app, client):
    checked = 0
    for endpoint, method, url in _urls(app, prefix_api=True):
        response = client.open(url, method=method, json={})
        assert response.status_code == 401, (endpoint, method)
        assert response.is_json and "Bearer" in response.json["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        checked += 1
    assert checked >= 7


def test_status_poll_of_a_stranger_is_401_json(client):
    response = client.get("/letters/1/status")
    assert response.status_code == 401
    assert response.json == {"error": "Your session has ended; sign in again."}


@pytest.mark.parametrize("header", ["Bearer nonsense", "Bearer ", "Basic dXNlcjpwYXNz", "cpt_x"])
def test_api_refuses_a_bad_token(client, header):
    response = client.get("/api/letters", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.is_json


def test_sign_in_leads_to_the_page_asked_for(client, credentials):
    email, password = credentials["staff"]
    first = client.get("/letters/new")
    assert first.headers["Location"] == "/sign-in?next=/letters/new"
    page = client.get(first.headers["Location"])
    assert 'name="next" type="hidden" value="/letters/new"' in page.text
    response = client.post("/sign-in", data={"email": email.upper(), "password": password,
                                              "next": "/letters/new",
                                              "csrf_token": csrf_token(page.text)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/letters/new"
    assert client.get("/letters/new").status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil",
                                    "javascript:alert(1)"])
def test_sign_in_never_redirects_off_site(client, credentials, target):
    email, password = credentials["staff"]
    page = client.get("/sign-in")
    response = client.post("/sign-in", data={"email": email, "password": password,
                                              "next": target,
                                              "csrf_token": csrf_token(page.text)})
    assert response.headers["Location"] == "/letters"


def test_wrong_password_is_refused_with_a_message(client, credentials):
    email, _ = credentials["staff"]
    page = client.get("/sign-in")
    response = client.post("/sign-in", data={"email": email, "password": "not the password",
                                              "csrf_token": csrf_token(page.text)})
    assert response.status_code == 401
    assert "do not match an account" in response.text
    assert f'value="{email}"' in response.text  # the email is kept, the password is not
    assert client.get("/letters").status_code == 302


def test_missing_fields_are_named(client):
    page = client.get("/sign-in")
    response = client.post("/sign-in", data={"email": "", "password": "",
                                              "csrf_token": csrf_token(page.text)})
    assert response.status_code == 422
    assert "Enter your email address." in response.text
    assert "Enter your password." in response.text
    assert 'aria-invalid="true"' in response.text


def test_sign_in_without_csrf_token_is_refused(client, credentials):
    email, password = credentials["staff"]
    response = client.post("/sign-in", data={"email": email, "password": password})
    assert response.status_code == 400
    assert "security token" in response.text
    assert client.get("/letters").status_code == 302


def test_session_cookie_is_httponly_and_samesite_lax(staff):
    cookie = staff.get_cookie("counterpart_session")
    assert cookie is not None
    assert cookie.http_only
    assert cookie.same_site == "Lax"


def test_secure_cookie_setting(app_config, client, credentials, monkeypatch):
    from web import create_app

    monkeypatch.setenv("COUNTERPART_SECURE_COOKIES", "true")
    app = create_app({k: v for k, v in app_config.items()})
    try:
        assert app.config["SESSION_COOKIE_SECURE"] is True
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


def test_sign_out_ends_the_session(staff):
    page = staff.get("/letters")
    assert "Sign out" in page.text
    response = staff.post("/sign-out", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 302
    assert staff.get("/letters").status_code == 302
    assert "You are signed out." in staff.get("/sign-in").text


def test_sign_out_without_csrf_token_keeps_the_session(staff):
    assert staff.post("/sign-out").status_code == 400
    assert staff.get("/letters").status_code == 200


def test_changing_the_password_ends_existing_sessions(app, staff, credentials):
    email, _ = credentials["staff"]
    assert staff.get("/letters").status_code == 200
    with app.app_context(), get_db().transaction() as session:
        set_password(session, email, "a brand new password")
    assert staff.get("/letters").status_code == 302


def test_signed_in_user_visiting_sign_in_goes_to_the_letters(staff):
    response = staff.get("/sign-in")
    assert response.status_code == 302
    assert response.headers["Location"] == "/letters"
