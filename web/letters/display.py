"""How a letter's terms and events read on its page: as in the letter, not as stored."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from workflow.formatting import join_and, long_date, money, shares
from workflow.notices import KIND_LABELS
from workflow.schema import Field, TemplateSpec

__all__ = ["format_term", "terms_sections", "describe_event", "EVENT_LABELS"]

EVENT_LABELS = {
    "created": "Created",
    "generated": "Generated",
    "edited": "Terms changed",
    "sent": "Sent for signature",
    "viewed": "Viewed",
    "consented": "Consented to sign electronically",
    "signed": "Signed",
    "declined": "Declined",
    "uploaded": "Paper copy uploaded",
    "upload_discarded": "Paper copy discarded",
    "upload_undone": "Paper upload undone",
    "voided": "Voided",
    "executed": "Fully executed",
    "downloaded": "Downloaded",
    "expired": "Link expired",
    "emailed": "Emailed",
    "email_failed": "Email not accepted",
    "link_ready": "Link ready",
    "new_link": "New link",
    "code_sent": "Identity code emailed",
    "code_not_sent": "Identity code not accepted by the mail server",
    "code_failed": "Wrong identity code",
    "code_verified": "Email address confirmed with a code",
}


def _date(value: Any) -> str:
    try:
        return long_date(dt.date.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def format_term(f: Field, value: Any) -> str:
    """Write a stored term as the letter would: "July 24, 2006", "$500", "2,000,000"."""
    if value is None or value == "":
        return "—"
    try:
        if f.type == "date":
            return _date(value)
        if f.type == "integer":
            return shares(int(value))
        if f.type == "decimal":
            return money(Decimal(str(value)))
        if f.type == "boolean":
            return "Yes" if value is True else "No" if value is False else str(value)
        if f.type == "date_list":
            return join_and(_date(v) for v in value) if value else "None"
        if f.type == "text_list":
            return join_and(str(v) for v in value) if value else "None"
    except (ValueError, TypeError, InvalidOperation):
        pass
    return str(value)


def terms_sections(spec: TemplateSpec, terms: dict[str, Any]
                   ) -> list[tuple[str, list[tuple[str, str]]]]:
    """Group stored terms as the form does: [(section title, [(label, value as read)])]."""
    sections = []
    for group, title in spec.groups.items():
        rows = [(f.label, format_term(f, terms.get(f.key))) for f in spec.fields_in_group(group)]
        if rows:
            sections.append((title, rows))
    return sections


def _link_event(event_type: str, detail: dict[str, Any]) -> str:
    role = f" ({detail['role']})" if detail.get("role") else ""
    if event_type == "link_ready":
        text = f"{detail['signer']}{role}: earlier signers have signed; their link is ready " \
               "to be handed over"
        if detail.get("emailed_before_their_turn"):
            text += " (it was emailed before their turn)"
        return text
    text = f"To {detail['signer']}{role}"
    if event_type == "new_link":
        text = f"For {detail['signer']}{role}: the earlier link no longer works"
    elif detail.get("reason"):
        return f"{text}: {detail['reason']}"
    if detail.get("waiting_for_earlier_signers"):
        text += ", after the signers before them"
    delivery = detail.get("delivery")
    if delivery == "email":
        text += f"; the link goes by email to {detail.get('email')}"
    elif delivery == "by_hand":
        text += "; the link is ready to be handed over (not emailed)"
    return text


def describe_event(event_type: str, detail: dict[str, Any]) -> str:
    """Say in a few words what an event of the audit record did."""
    version = detail.get("version")
    if event_type == "created" and version:
        template = str(detail.get("template", "")).replace("_", " ")
        return f"Version {version} from the {template} template"
    if event_type == "generated":
        return str(detail.get("document") or "")
    if event_type == "edited" and version:
        return f"Version {version}"
    if event_type in ("sent", "new_link", "link_ready") and detail.get("signer"):
        return _link_event(event_type, detail)
    if event_type in ("emailed", "email_failed") and detail.get("notice") and detail.get("to"):
        what = KIND_LABELS.get(detail["notice"], str(detail["notice"]))
        if event_type == "emailed":
            return (f"{what} to {detail['to']} accepted by the mail server: "
                    f"{detail.get('answer', '')}")
        return f"{what} to {detail['to']} not sent: {detail.get('error', '')}"
    if event_type == "emailed" and detail.get("to"):
        text = f"Invitation to {detail['to']} accepted by the mail server"
        if detail.get("link"):
            text += f" (its link was {detail['link']})"
        return text
    if event_type == "email_failed" and detail.get("to"):
        return (f"Invitation to {detail['to']} not accepted: {detail.get('error', '')}; the "
                "link is ready to be handed over")
    if event_type in ("code_sent", "code_verified") and detail.get("email"):
        return f"To {detail['email']}"
    if event_type == "code_not_sent" and detail.get("email"):
        return f"To {detail['email']}: {detail.get('answer', '')}"
    if event_type == "code_failed" and "tries_left" in detail:
        left = detail["tries_left"]
        return f"{left} {'try' if left == 1 else 'tries'} left on that code"
    if event_type == "signed" and detail.get("method"):
        method = detail["method"]
        if method == "paper":
            recorded_by = detail.get("recorded_by")
            text = "On paper" + (f", recorded by {recorded_by}" if recorded_by else "")
            if detail.get("ink") == "accepted_without_ink":
                text += ", accepted without a signature found"
            if detail.get("order_override_reason"):
                text += f", out of order: {detail['order_override_reason']}"
            return text
        return f"{str(method).capitalize()} signature"
    if event_type == "uploaded" and detail.get("file"):
        waiting = ", waiting for review" if detail.get("pending") else ""
        return f"Scan {detail['file']}{waiting}"
    if event_type == "upload_undone" and detail.get("signer"):
        scan = f"the scan {detail['file']}" if detail.get("file") else "the scan"
        return f"{detail['signer']}: {scan} no longer counts"
    if event_type == "upload_discarded" and detail.get("signer"):
        return f"{detail['signer']}: the scan waiting for review was set aside"
    if event_type in ("executed", "downloaded") and detail.get("document"):
        return str(detail["document"])
    reason = detail.get("reason")
    if reason:
        return str(reason)
    return ""
