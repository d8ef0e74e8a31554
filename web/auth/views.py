"""Signing in and out, changing one's own password, and choosing one through a one-time
link."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from workflow.accounts import (
    LINK_HOURS,
    account_link_user,
    authenticate,
    change_own_password,
    set_password_with_link,
)
from workflow.errors import CounterpartError, NotFoundError, StateError
from workflow.settings import REQUIRE_TWO_FACTOR, get_setting

from ..database import get_db
from . import bp, public, safe_next, sign_in_user, sign_out_user
from .forms import ChangePasswordForm, SetPasswordForm, SignInForm

SIGN_IN_FAILED = "That email address and password do not match an account."


@bp.route("/sign-in", methods=["GET", "POST"])
@public
def sign_in() -> Response | str | tuple[str, int]:
    """Show the sign-in form and sign a member of staff in."""
    form = SignInForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
        if g.user is not None:
            return redirect(form.next.data or url_for("letters.index"))
    failed = False
    if form.validate_on_submit():
        step = None
        with get_db().transaction() as db_session:
            user = authenticate(db_session, form.email.data or "", form.password.data or "")
            if user is not None:
                # The password is only the first step for an account with a second factor,
                # or one that must set it up.
                if user.totp_enabled_at is not None:
                    step = "two_factor"
                elif get_setting(db_session, REQUIRE_TWO_FACTOR):
                    step = "setup_two_factor"
                sign_in_user(db_session, user, pending=step)
        target = safe_next(form.next.data)
        if user is not None and step is not None:
            page = "auth.two_factor" if step == "two_factor" else "auth.two_factor_setup"
            return redirect(url_for(page, next=target) if target else url_for(page))
        if user is not None:
            return redirect(target or url_for("letters.index"))
        failed = True
    # A page that answers with its own form: 401 for wrong credentials, 422 for missing ones.
    status = 401 if failed else 422 if form.errors else 200
    return render_template("auth/sign_in.html", form=form,
                           failed=SIGN_IN_FAILED if failed else None), status


@bp.route("/sign-out", methods=["POST"])
@public
def sign_out() -> Response:
    """End the session on the server: its cookie, even copied, no longer opens it."""
    sign_out_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.sign_in"))


@bp.route("/account/password", methods=["GET", "POST"])
def change_password() -> Response | str | tuple[str, int]:
    """Change one's own password: every session of the account ends and its API tokens are
    revoked; this browser gets a fresh session."""
    form = ChangePasswordForm()
    failed = None
    if form.validate_on_submit():
        try:
            with get_db().transaction() as db_session:
                user = change_own_password(db_session, g.user.id, form.current.data or "",
                                           form.new.data or "")
                sign_in_user(db_session, user)
        except CounterpartError as exc:
            failed = str(exc)
        else:
            flash("Your password was changed. Every other session of your account has ended "
                  "and its API tokens no longer work.", "success")
            return redirect(url_for("letters.index"))
    # 401 for a wrong current password (counted as a failed sign-in), 422 for the rest.
    status = 401 if failed and "current password" in failed else \
        422 if failed or form.errors else 200
    return render_template("auth/password.html", form=form, failed=failed), status


@bp.route("/account/set-password/<token>", methods=["GET", "POST"])
@public
def set_password_link(token: str) -> Response | str | tuple[str, int]:
    """Choose a password through the one-time link of an invitation or a reset."""
    try:
        with get_db().transaction() as db_session:
            link = account_link_user(db_session, token)
            email, purpose = link.user.email, link.purpose
    except NotFoundError as exc:
        return render_template("auth/link_unavailable.html", message=str(exc),
                               public_page=True), 404
    except StateError as exc:
        return render_template("auth/link_unavailable.html", message=str(exc),
                               public_page=True), 410
    form = SetPasswordForm()
    failed = None
    if form.validate_on_submit():
        try:
            with get_db().transaction() as db_session:
                set_password_with_link(db_session, token, form.new.data or "")
        except CounterpartError as exc:
            failed = str(exc)
        else:
            sign_out_user()
            flash("Your password is set. Sign in with it now.", "success")
            return redirect(url_for("auth.sign_in"))
    status = 422 if failed or form.errors else 200
    return render_template("auth/set_password.html", form=form, email=email, purpose=purpose,
                           failed=failed, hours=LINK_HOURS, token=token,
                           public_page=True), status
