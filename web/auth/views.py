"""Signing in and out."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from workflow.accounts import authenticate

from ..database import get_db
from . import bp, public, safe_next, sign_in_user, sign_out_user
from .forms import SignInForm

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
