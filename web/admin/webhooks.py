"""Webhooks in the browser: register an endpoint (its address, the events it receives, its
secret), see each one's recent deliveries with every attempt, redeliver one, delete one.

A secret the server made is shown once, right after the webhook is registered (kept for that
one page like the users page's set-password links); afterwards only its last four characters.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from workflow.webhooks import (
    SIGNATURE_HEADER,
    WEBHOOK_EVENTS,
    WebhookError,
    delete_endpoint,
    delivery_record,
    endpoint_record,
    get_endpoint,
    list_endpoints,
    recent_deliveries,
    redeliver,
)

from ..api.webhooks import register_webhook_from
from ..auth import keep_shown_once, take_shown_once
from ..database import get_db
from . import bp

SECRET_NOTE = "webhook-secret"
RECENT_DELIVERIES = 50
EVENT_LABELS = {
    "letter.created": "A letter is created",
    "letter.version_created": "A letter's terms change (a new version)",
    "envelope.sent": "A letter is sent for signature",
    "counterpart.viewed": "A signer opens their link",
    "counterpart.signed": "A counterpart is signed (online, or a paper scan counted)",
    "counterpart.declined": "A signer declines",
    "envelope.voided": "An envelope is voided",
    "envelope.expired": "An envelope's links expire",
    "letter.executed": "A letter is fully executed",
}


def _times(value: Any) -> Any:
    """Turn the records' ISO timestamps (keys ending in ``_at``) back into datetimes for the
    page's time tags."""
    if isinstance(value, list):
        return [_times(v) for v in value]
    if isinstance(value, dict):
        return {k: dt.datetime.fromisoformat(v) if k.endswith("_at") and isinstance(v, str)
                else _times(v) for k, v in value.items()}
    return value


def _render_list(status: int = 200, *, error: WebhookError | None = None,
                 form: dict[str, Any] | None = None) -> tuple[str, int]:
    with get_db().transaction() as session:
        endpoints = []
        for endpoint in list_endpoints(session):
            record = endpoint_record(endpoint)
            recent = recent_deliveries(session, endpoint.id, limit=RECENT_DELIVERIES)
            record["counts"] = {s: sum(d.status == s for d in recent)
                                for s in ("delivered", "pending", "failed")}
            endpoints.append(record)
    return render_template(
        "admin/webhooks.html", endpoints=_times(endpoints), events=WEBHOOK_EVENTS,
        event_labels=EVENT_LABELS, error=error, secret=take_shown_once(SECRET_NOTE),
        form=form or {"url": "", "description": "", "events": ["*"]},
        header=SIGNATURE_HEADER), status


@bp.get("/webhooks")
def webhooks() -> tuple[str, int]:
    """The registered webhooks, and the form to register one."""
    return _render_list()


@bp.post("/webhooks")
def add_webhook() -> Response | tuple[str, int]:
    """Register a webhook from the form; the page again, naming the field, when refused."""
    events = request.form.getlist("events")
    form = {"url": request.form.get("url", "")[:2000],
            "description": request.form.get("description", "")[:200], "events": events}
    try:
        record, made = register_webhook_from({**form, "secret": request.form.get("secret", "")})
    except WebhookError as exc:
        return _render_list(422, error=exc, form=form)
    if made is not None:
        keep_shown_once(SECRET_NOTE, {"webhook_id": record["id"], "url": record["url"],
                                      "secret": made})
    flash(f"The webhook to {record['url']} is registered.", "success")
    return redirect(url_for(".webhooks"))


@bp.get("/webhooks/<int:webhook_id>")
def webhook(webhook_id: int) -> str:
    """A webhook: its settings, and its newest deliveries with every attempt."""
    with get_db().transaction() as session:
        record = endpoint_record(get_endpoint(session, webhook_id))
        deliveries = [delivery_record(session, d) for d in
                      recent_deliveries(session, webhook_id, limit=RECENT_DELIVERIES)]
    return render_template("admin/webhook.html", webhook=_times(record),
                           deliveries=_times(deliveries), event_labels=EVENT_LABELS)


@bp.post("/webhooks/<int:webhook_id>/delete")
def delete_webhook(webhook_id: int) -> Response:
    """Delete a webhook: it receives nothing more; its deliveries stay logged."""
    with get_db().transaction() as session:
        url = get_endpoint(session, webhook_id).url
        delete_endpoint(session, webhook_id, by=g.user.email)
    flash(f"The webhook to {url} is deleted; it receives nothing more.", "success")
    return redirect(url_for(".webhooks"))


@bp.post("/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>/redeliver")
def redeliver_webhook(webhook_id: int, delivery_id: int) -> Response:
    """Send a delivery again, with the same event id."""
    with get_db().transaction() as session:
        redeliver(session, webhook_id, delivery_id, by=g.user.email)
    flash(f"Delivery {delivery_id} is being sent again (the same event id).", "success")
    return redirect(url_for(".webhook", webhook_id=webhook_id) + f"#delivery-{delivery_id}")
