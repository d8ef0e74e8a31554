"""The API of webhooks, for administrators (and their API tokens): register, list, read and
delete endpoints; read their deliveries with every attempt; redeliver one.

A webhook's secret is never answered back: only ``secret_hint``, its last four characters;
a secret the server made (none was given) is answered once, in the 201 of its creation.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, jsonify, url_for
from werkzeug.wrappers import Response

from workflow.webhooks import (
    WEBHOOK_EVENTS,
    WebhookError,
    create_endpoint,
    delete_endpoint,
    delivery_record,
    endpoint_record,
    get_delivery,
    get_endpoint,
    list_endpoints,
    recent_deliveries,
    redeliver,
)

from ..auth import secret_key
from ..auth.roles import requires
from ..database import get_db
from . import bp
from .views import json_body

__all__ = ["webhook_json", "register_webhook_from"]

RECENT_DELIVERIES = 50


def webhook_json(record: dict[str, Any]) -> dict[str, Any]:
    """An endpoint record with its own address in the API (``api_url``)."""
    return {**record, "api_url": url_for("api.webhook", webhook_id=record["id"],
                                         _external=True)}


def _refused(exc: WebhookError) -> tuple[Response, int]:
    return jsonify(error=f"The webhook was not registered: {exc}", errors=exc.errors), 422


def register_webhook_from(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Register a webhook from ``{"url", "events", "secret", "description"}`` for the
    signed-in administrator; return its record and the secret made here (or None). Raises
    WebhookError naming the field."""
    with get_db().transaction() as session:
        endpoint, made = create_endpoint(
            session, body.get("url"), body.get("events"), body.get("secret"),
            key=secret_key(), by=g.user.email, description=body.get("description", ""),
            allow_private=bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE")))
        return endpoint_record(endpoint), made


@bp.post("/webhooks")
@requires("admin")
def add_webhook() -> tuple[Response, int, dict[str, str]] | tuple[Response, int]:
    """Register ``{"url", "events": [...] or ["*"], "secret", "description"}``: 201 with the
    webhook (and ``secret`` only if none was given and one was made); 422 naming the field."""
    try:
        record, made = register_webhook_from(json_body())
    except WebhookError as exc:
        return _refused(exc)
    answer = webhook_json(record)
    if made is not None:
        answer["secret"] = made  # shown this once; only its last four characters later
    return jsonify(answer), 201, {"Location": answer["api_url"]}


@bp.get("/webhooks")
@requires("admin")
def webhooks() -> Response:
    """Every registered webhook (without secrets), and the events one may ask for."""
    with get_db().transaction() as session:
        records = [endpoint_record(e) for e in list_endpoints(session)]
    return jsonify(webhooks=[webhook_json(r) for r in records], events=list(WEBHOOK_EVENTS))


@bp.get("/webhooks/<int:webhook_id>")
@requires("admin")
def webhook(webhook_id: int) -> Response:
    """A webhook and its newest deliveries (newest first), each with every attempt."""
    with get_db().transaction() as session:
        record = endpoint_record(get_endpoint(session, webhook_id))
        record["deliveries"] = [delivery_record(session, d) for d in
                                recent_deliveries(session, webhook_id, limit=RECENT_DELIVERIES)]
    return jsonify(webhook_json(record))


@bp.delete("/webhooks/<int:webhook_id>")
@requires("admin")
def remove_webhook(webhook_id: int) -> tuple[str, int]:
    """Delete a webhook: it receives nothing more (204); its deliveries stay logged."""
    with get_db().transaction() as session:
        delete_endpoint(session, webhook_id, by=g.user.email)
    return "", 204


@bp.get("/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>")
@requires("admin")
def webhook_delivery(webhook_id: int, delivery_id: int) -> Response:
    """One delivery: its attempts and the exact JSON body sent (``body``)."""
    with get_db().transaction() as session:
        get_endpoint(session, webhook_id)
        record = delivery_record(session, get_delivery(session, webhook_id, delivery_id),
                                 with_body=True)
    return jsonify(record)


@bp.post("/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>/redeliver")
@requires("admin")
def redeliver_webhook(webhook_id: int, delivery_id: int) -> tuple[Response, int]:
    """Send a delivery again with the same event ``id`` (202, with the delivery as it stands
    after the first new attempt when jobs run at once); 409 while an attempt is under way."""
    with get_db().transaction() as session:
        redeliver(session, webhook_id, delivery_id, by=g.user.email)
    with get_db().transaction() as session:
        record = delivery_record(session, get_delivery(session, webhook_id, delivery_id))
    return jsonify(record), 202
