"""Webhooks in the admin pages: register one (a made secret shown once), refused addresses
named on the form, the recent deliveries with every attempt, redeliver, delete; other roles
get 403."""

from __future__ import annotations

import re
from typing import Any

import pytest
from webhook_receiver import webhook_receiver

from web.database import get_db
from web.testing import csrf_token
from workflow.accounts import create_user
from workflow.webhooks import WebhookEndpoint

SECRET_RE = re.compile(r'id="webhook-secret-made" type="text" readonly value="(whsec_[^"]+)"')


@pytest.fixture()
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_TIMEOUT_SECONDS": 0.5}


@pytest.fixture()
def admin(app, sign_in, credentials):
    return sign_in(app.test_client(), *credentials["admin"])


def post(browser, url: str, data: dict[str, Any]):
    token = csrf_token(browser.get("/admin/webhooks").text)
    return browser.post(url, data={"csrf_token": token, **data})


def endpoints(app) -> list[WebhookEndpoint]:
    with app.app_context(), get_db().transaction() as session:
        rows = session.query(WebhookEndpoint).order_by(WebhookEndpoint.id).all()
        session.expunge_all()
        return rows


def test_an_administrator_registers_a_webhook_and_sees_its_secret_once(app, admin):
    page = admin.get("/admin/webhooks")
    assert page.status_code == 200
    assert '<a href="/admin/webhooks" aria-current="page">Webhooks</a>' in page.text
    assert "No webhook is registered." in page.text
    answer = post(admin, "/admin/webhooks", {"url": "http://127.0.0.1:9/erp",
                                             "description": "Our ERP",
                                             "events": ["letter.executed",
                                                        "counterpart.signed"]})
    assert answer.status_code == 302, answer.text
    page = admin.get("/admin/webhooks")
    (secret,) = SECRET_RE.findall(page.text)
    assert "The webhook to http://127.0.0.1:9/erp is registered." in page.text
    assert "it is not shown again" in page.text
    row = page.text.split('id="webhook-row-', 1)[1].split("</tr>", 1)[0]
    assert "http://127.0.0.1:9/erp" in row and "Our ERP" in row
    assert "letter.executed, counterpart.signed" in row
    assert f"…{secret[-4:]}" in row
    again = admin.get("/admin/webhooks").text
    assert secret not in again and not SECRET_RE.search(again)  # shown once
    [endpoint] = endpoints(app)
    assert endpoint.events == ["letter.executed", "counterpart.signed"]
    assert secret not in endpoint.secret_sealed
    assert secret not in admin.get(f"/admin/webhooks/{endpoint.id}").text


def test_a_private_address_is_refused_on_the_form_naming_the_address(app, admin):
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    answer = post(admin, "/admin/webhooks", {"url": "http://10.0.0.8/hook", "events": ["*"],
                                             "secret": "a secret of twenty chars"})
    assert answer.status_code == 422
    assert "The webhook was not registered" in answer.text
    assert 'href="#webhook-url"' in answer.text
    assert ('<p class="field__error" id="webhook-url-error">10.0.0.8 is a private address'
            in answer.text)
    assert 'value="http://10.0.0.8/hook"' in answer.text  # kept for correcting
    assert "a secret of twenty chars" not in answer.text  # a secret is never echoed
    no_events = post(admin, "/admin/webhooks", {"url": "https://93.184.216.34/hook"})
    assert no_events.status_code == 422 and 'id="webhook-events-error"' in no_events.text
    assert endpoints(app) == []


def test_deliveries_show_each_attempt_and_can_be_redelivered(app, admin, make_letter,
                                                             reference_terms):
    with webhook_receiver([500, "timeout", 200]) as receiver:
        post(admin, "/admin/webhooks", {"url": f"{receiver.url}/in",
                                        "events": ["letter.created"],
                                        "secret": "whsec_admin_pages_0123456789"})
        [endpoint] = endpoints(app)
        make_letter(reference_terms, generate=False)
        page = admin.get(f"/admin/webhooks/{endpoint.id}").text
        assert "<code>letter.created</code>" in page and "Waiting to retry" in page
        assert "HTTP 500" in page and "next attempt" in page
        (delivery_id,) = re.findall(r'id="delivery-(\d+)"', page)
        path = f"/admin/webhooks/{endpoint.id}/deliveries/{delivery_id}/redeliver"
        assert post(admin, path, {}).status_code == 302  # attempt 2: no answer in time
        assert post(admin, path, {}).status_code == 302  # attempt 3: 200
        page = admin.get(f"/admin/webhooks/{endpoint.id}").text
    assert "no answer within 0.5 seconds" in page
    assert "HTTP 200, delivered" in page and "Delivered" in page
    assert page.count("(redelivery by admin@example.com)") == 2
    assert len({r.json()["id"] for r in receiver.requests}) == 1
    assert len(receiver.requests) == 3


def test_a_deleted_webhook_leaves_the_list(app, admin):
    post(admin, "/admin/webhooks", {"url": "http://127.0.0.1:9/gone", "events": ["*"]})
    [endpoint] = endpoints(app)
    answer = post(admin, f"/admin/webhooks/{endpoint.id}/delete", {})
    assert answer.status_code == 302
    page = admin.get("/admin/webhooks").text
    assert "The webhook to http://127.0.0.1:9/gone is deleted" in page
    assert "No webhook is registered." in page
    assert admin.get(f"/admin/webhooks/{endpoint.id}").status_code == 404


def test_other_roles_cannot_see_or_manage_webhooks(app, staff, sign_in, admin):
    post(admin, "/admin/webhooks", {"url": "http://127.0.0.1:9/x", "events": ["*"]})
    [endpoint] = endpoints(app)
    with app.app_context(), get_db().transaction() as session:
        create_user(session, "reader@example.com", "a long reader password", role="read_only")
    reader = sign_in(app.test_client(), "reader@example.com", "a long reader password")
    for browser in (staff, reader):
        token = csrf_token(browser.get("/letters").text)
        assert browser.get("/admin/webhooks").status_code == 403
        assert browser.get(f"/admin/webhooks/{endpoint.id}").status_code == 403
        assert browser.post("/admin/webhooks", data={
            "csrf_token": token, "url": "http://127.0.0.1:9/y", "events": ["*"]}
        ).status_code == 403
        assert browser.post(f"/admin/webhooks/{endpoint.id}/delete",
                            data={"csrf_token": token}).status_code == 403
    assert len(endpoints(app)) == 1
