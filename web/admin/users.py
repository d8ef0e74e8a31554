"""Staff accounts in the browser: invite (a one-time set-password link, emailed when mail is
set up and shown on the page otherwise), change a role, disable, enable, and reset (a new
set-password link; the account's sessions end and its API tokens stop)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from workflow.accounts import (
    LINK_HOURS,
    ROLE_LABELS,
    ROLES,
    disable_user,
    enable_user,
    invite_user,
    list_accounts,
    reset_account,
    set_role,
)
from workflow.errors import CounterpartError, NotFoundError
from workflow.mail import account_link_mail, send_mail
from workflow.models import User

from ..auth import keep_shown_once, take_shown_once
from ..database import get_db
from ..execution import smtp_settings
from . import bp

log = logging.getLogger(__name__)
LINK_NOTE = "account-link"


def _render(status: int = 200, *, error: str | None = None,
            form: dict[str, str] | None = None) -> tuple[str, int]:
    with get_db().transaction() as session:
        accounts = list_accounts(session)
    return render_template("admin/users.html", accounts=accounts, roles=ROLES,
                           role_labels=ROLE_LABELS, link=take_shown_once(LINK_NOTE),
                           error=error, form=form or {"email": "", "role": "staff"},
                           mail=smtp_settings() is not None, hours=LINK_HOURS), status


@bp.get("/users")
def users() -> tuple[str, int]:
    """Every account with its role and state, the invitation form, and each one's actions."""
    return _render()


def _hand_over_link(email: str, token: str, purpose: str) -> None:
    """Email a set-password link when mail is set up; keep it to show once on the page when
    it is not, or when the mail server did not take it."""
    link = url_for("auth.set_password_link", token=token, _external=True)
    settings = smtp_settings()
    note: dict[str, Any] = {"email": email, "link": link, "purpose": purpose, "emailed": False,
                            "error": None}
    if settings is not None:
        result = send_mail(settings, account_link_mail(email=email, link=link, purpose=purpose,
                                                       hours=LINK_HOURS))
        if result.accepted:
            note.update(emailed=True, link=None)
        else:
            log.warning("the set-password email to %s was not accepted: %s", email,
                        result.answer)
            note["error"] = result.answer
    keep_shown_once(LINK_NOTE, note)


@bp.post("/users/invite")
def invite() -> Response | tuple[str, int]:
    """Create an account with a role and hand its owner a one-time set-password link."""
    email, role = request.form.get("email", ""), request.form.get("role", "")
    try:
        with get_db().transaction() as session:
            user, token = invite_user(session, email, role, by=g.user.email)
            address = user.email
    except CounterpartError as exc:
        return _render(422, error=str(exc), form={"email": email[:254], "role": role[:16]})
    _hand_over_link(address, token, "invite")
    flash(f"{address} was invited as {ROLE_LABELS[role].lower()}.", "success")
    return redirect(url_for(".users"))


def _account(session: Any, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"There is no account {user_id}.")
    return user


def _yourself(user_id: int, what: str) -> tuple[str, int] | None:
    """The page refusing an action on one's own account (it could lock one out), or None."""
    if user_id != g.user.id:
        return None
    return _render(422, error=f"You cannot {what} your own account here; ask another "
                              "administrator.")


def _change_account(user_id: int, change: Callable[[Session], str], *,
                    own: str | None = None, conflict: Callable[[str], int] = lambda _: 409
                    ) -> str | tuple[str, int]:
    """Apply one change to an account in a transaction and return its address, or the page
    refusing it: the change of one's own account named by ``own``, or the domain's refusal
    with the status ``conflict`` gives for its message. An unknown account is a 404."""
    if own is not None:
        refused = _yourself(user_id, own)
        if refused is not None:
            return refused
    try:
        with get_db().transaction() as session:
            return change(session)
    except NotFoundError:
        raise
    except CounterpartError as exc:
        return _render(conflict(str(exc)), error=str(exc))


@bp.post("/users/<int:user_id>/role")
def change_role(user_id: int) -> Response | tuple[str, int]:
    """Give an account another role."""
    role = request.form.get("role", "")
    address = _change_account(
        user_id, lambda session: set_role(session, user_id, role).email,
        own="change the role of",
        conflict=lambda message: 409 if "only administrator" in message else 422)
    if not isinstance(address, str):
        return address
    flash(f"{address} is now {ROLE_LABELS[role].lower()}.", "success")
    return redirect(url_for(".users"))


@bp.post("/users/<int:user_id>/disable")
def disable(user_id: int) -> Response | tuple[str, int]:
    """Disable an account: it cannot sign in; its sessions end and its API tokens stop."""
    address = _change_account(
        user_id, lambda session: disable_user(session, _account(session, user_id).email).email,
        own="disable")
    if not isinstance(address, str):
        return address
    flash(f"{address} is disabled: its sessions ended and its API tokens stopped.", "success")
    return redirect(url_for(".users"))


@bp.post("/users/<int:user_id>/enable")
def enable(user_id: int) -> Response | tuple[str, int]:
    """Let a disabled account sign in again."""
    address = _change_account(
        user_id, lambda session: enable_user(session, _account(session, user_id).email).email)
    if not isinstance(address, str):
        return address
    flash(f"{address} may sign in again (its earlier API tokens stay revoked).", "success")
    return redirect(url_for(".users"))


@bp.post("/users/<int:user_id>/reset")
def reset(user_id: int) -> Response | tuple[str, int]:
    """Reset an account's password: a new set-password link; its sessions end and its API
    tokens stop; with the box ticked, its two-factor sign-in is turned off too."""
    two_factor_off = request.form.get("two_factor_off") == "yes"
    tokens: list[str] = []

    def change(session: Session) -> str:
        user, token = reset_account(session, user_id, by=g.user.email,
                                    two_factor_off=two_factor_off)
        tokens.append(token)
        return user.email

    address = _change_account(user_id, change, own="reset")
    if not isinstance(address, str):
        return address
    _hand_over_link(address, tokens[0], "reset")
    flash(f"The password of {address} was reset: its sessions ended and its API tokens "
          "stopped" + (", and two-factor sign-in is off." if two_factor_off else "."),
          "success")
    return redirect(url_for(".users"))
