"""Signing in and out, and changing one's own password."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from workflow.accounts import authenticate, change_own_password
from workflow.errors import CounterpartError

from ..database import get_db
from . import bp, public, safe_next, sign_in_user, sign_out_user
from .forms import ChangePasswordForm, SignInForm

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
        with get_db().transaction() as db_session:
            user = authenticate(db_session, form.email.data or "", form.password.data or "")
            if user is not None:
                sign_in_user(db_session, user)
        if user is not None:
            return redirect(safe_next(form.next.data) or url_for("letters.index"))
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
