"""Two-factor sign-in pages: the code after the password, setting it up (a QR code for the
authenticator app, then ten recovery codes shown once), turning it off, and new recovery codes.

The secret being set up waits on the server, encrypted for this session alone (a session
note), until the app's first code confirms it; it never travels in the cookie.
"""

from __future__ import annotations

import segno
from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from workflow.accounts import check_password
from workflow.errors import CounterpartError
from workflow.models import User
from workflow.settings import REQUIRE_TWO_FACTOR, get_setting
from workflow.two_factor import (
    RECOVERY_CODE_COUNT,
    check_second_factor,
    disable_two_factor,
    enable_two_factor,
    new_recovery_codes,
    new_secret,
    provisioning_uri,
    recovery_codes_left,
)

from ..database import get_db
from ..ratelimit import account_over_limit
from . import (
    bp,
    open_from_page,
    safe_next,
    seal_for_page,
    secret_key,
    sign_in_user,
)
from .forms import CodeForm, ConfirmPasswordForm, SecondFactorForm, TwoFactorSetupForm

SETUP_NOTE = "two-factor-setup"
WRONG_CODE = ("That code is not right. Type the 6 digits your app shows now, or one of your "
              "recovery codes.")


def _qr_data_uri(uri: str) -> str:
    """The otpauth address as a QR code, an SVG in a data: address (allowed by the CSP)."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2, dark="#1f2a44")


def _grouped(secret: str) -> str:
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


@bp.route("/sign-in/two-factor", methods=["GET", "POST"])
def two_factor() -> Response | str | tuple[str, int]:
    """The second step of signing in: the authenticator app's code or a recovery code."""
    pending = g.get("pending")
    if pending is None or g.get("pending_step") != "two_factor":
        return redirect(url_for("auth.sign_in"))
    form = SecondFactorForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
    failed = None
    if form.validate_on_submit():
        refused = account_over_limit(pending.email)
        if refused is not None:
            return refused
        with get_db().transaction() as db_session:
            method = check_second_factor(db_session, pending.id, form.code.data or "",
                                         key=secret_key())
            if method is not None:
                user = db_session.get(User, pending.id)
                assert user is not None
                sign_in_user(db_session, user)
                left = recovery_codes_left(db_session, pending.id)
        if method is not None:
            if method == "recovery":
                flash(f"You signed in with a recovery code; it will not work again. {left} "
                      f"recovery code{'' if left == 1 else 's'} left: make new ones in "
                      "Two-factor sign-in.", "info")
            return redirect(safe_next(form.next.data) or url_for("letters.index"))
        failed = WRONG_CODE
    status = 401 if failed else 422 if form.errors else 200
    return render_template("auth/two_factor.html", form=form, failed=failed,
                           email=pending.email), status


def _who() -> tuple[int, str, bool] | None:
    """The account setting up two-factor sign-in: (id, email, whether it must)."""
    if g.get("user") is not None:
        return g.user.id, g.user.email, False
    if g.get("pending_step") == "setup_two_factor":
        return g.pending.id, g.pending.email, True
    return None


@bp.route("/account/two-factor/setup", methods=["GET", "POST"])
def two_factor_setup() -> Response | str | tuple[str, int]:
    """Turn on two-factor sign-in: scan the QR code, type the app's code, keep the recovery
    codes."""
    who = _who()
    if who is None:
        return redirect(url_for("auth.sign_in"))
    user_id, email, required = who
    if g.get("user") is not None and g.user.two_factor:
        return redirect(url_for("auth.two_factor_settings"))
    form = TwoFactorSetupForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
    failed = None
    secret = None
    if form.validate_on_submit():
        secret = open_from_page(SETUP_NOTE, request.form.get("setup_secret"))
        if not isinstance(secret, str):
            flash("The set-up took too long and was started again: scan the new code.", "info")
            return redirect(url_for("auth.two_factor_setup", next=form.next.data or None))
        try:
            with get_db().transaction() as db_session:
                codes = enable_two_factor(db_session, user_id, secret, form.code.data or "",
                                          key=secret_key())
                if required:
                    user = db_session.get(User, user_id)
                    assert user is not None
                    sign_in_user(db_session, user)  # the set-up completes the sign-in
        except CounterpartError as exc:
            failed = str(exc).removeprefix("code: ")
        else:
            return render_template(
                "auth/recovery_codes.html", codes=codes, first=True,
                next=safe_next(form.next.data) or url_for("letters.index"))
    if secret is None:
        secret = new_secret()
    # Handed back by the form, sealed for this session: the page shows it anyway, and a GET
    # keeps nothing on the server.
    sealed = seal_for_page(SETUP_NOTE, secret)
    uri = provisioning_uri(secret, email)
    status = 422 if failed or form.errors else 200
    return render_template("auth/two_factor_setup.html", form=form, failed=failed,
                           qr=_qr_data_uri(uri), secret=_grouped(secret), required=required,
                           email=email, sealed_secret=sealed), status


@bp.route("/account/two-factor", methods=["GET"])
def two_factor_settings() -> str:
    """Whether two-factor sign-in is on, with the forms to turn it off or get new recovery
    codes."""
    with get_db().transaction() as db_session:
        left = recovery_codes_left(db_session, g.user.id)
        required = bool(get_setting(db_session, REQUIRE_TWO_FACTOR))
    return render_template("auth/two_factor_settings.html", on=g.user.two_factor, left=left,
                           required=required, disable_form=ConfirmPasswordForm(),
                           codes_form=CodeForm(), count=RECOVERY_CODE_COUNT)


@bp.route("/account/two-factor/disable", methods=["POST"])
def two_factor_disable() -> Response | tuple[str, int]:
    """Turn off one's own two-factor sign-in, with one's password; not while it is
    required."""
    form = ConfirmPasswordForm()
    with get_db().transaction() as db_session:
        required = bool(get_setting(db_session, REQUIRE_TWO_FACTOR))
        left = recovery_codes_left(db_session, g.user.id)
    failed, status = None, 200
    if required:
        failed, status = ("Two-factor sign-in is required for every account by the "
                          "administrators, so it cannot be turned off."), 409
    elif form.validate_on_submit():
        with get_db().transaction() as db_session:
            if check_password(db_session, g.user.id, form.password.data or ""):
                disable_two_factor(db_session, g.user.id)
                ok = True
            else:
                ok = False
        if ok:
            flash("Two-factor sign-in is off; your recovery codes no longer work.", "success")
            return redirect(url_for("auth.two_factor_settings"))
        failed, status = "That is not your password; two-factor sign-in stays on.", 401
    else:
        failed, status = "Enter your password to turn two-factor sign-in off.", 422
    return render_template("auth/two_factor_settings.html", on=g.user.two_factor, left=left,
                           required=required, disable_form=form, codes_form=CodeForm(),
                           count=RECOVERY_CODE_COUNT, disable_error=failed), status


@bp.route("/account/two-factor/recovery-codes", methods=["POST"])
def recovery_codes() -> str | tuple[str, int]:
    """Replace one's recovery codes, confirmed with a current code of the app."""
    form = CodeForm()
    failed, status = "Enter the 6-digit code your app shows.", 422
    if form.validate_on_submit():
        with get_db().transaction() as db_session:
            method = check_second_factor(db_session, g.user.id, form.code.data or "",
                                         key=secret_key())
            codes = new_recovery_codes(db_session, g.user.id) if method == "totp" else None
        if codes is not None:
            return render_template("auth/recovery_codes.html", codes=codes, first=False,
                                   next=url_for("auth.two_factor_settings"))
        failed, status = "That is not the code your app shows now; nothing was changed.", 401
    with get_db().transaction() as db_session:
        left = recovery_codes_left(db_session, g.user.id)
        required = bool(get_setting(db_session, REQUIRE_TWO_FACTOR))
    return render_template("auth/two_factor_settings.html", on=g.user.two_factor, left=left,
                           required=required, disable_form=ConfirmPasswordForm(),
                           codes_form=form, count=RECOVERY_CODE_COUNT,
                           codes_error=failed), status
