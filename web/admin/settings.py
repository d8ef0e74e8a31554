"""Settings administrators decide for everyone: two-factor sign-in required or not."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from workflow.settings import REQUIRE_TWO_FACTOR, get_setting, set_setting

from ..database import get_db
from . import bp


@bp.get("/settings")
def settings() -> str:
    """The settings, each with what it does."""
    with get_db().transaction() as session:
        required = bool(get_setting(session, REQUIRE_TWO_FACTOR))
    return render_template("admin/settings.html", require_two_factor=required)


@bp.post("/settings")
def save_settings() -> Response:
    """Store the settings of the form."""
    required = request.form.get("require_two_factor") == "yes"
    with get_db().transaction() as session:
        set_setting(session, REQUIRE_TWO_FACTOR, required, by=g.user.email)
    flash("Two-factor sign-in is now required for every account: those without it set it up "
          "at their next page." if required else
          "Two-factor sign-in is now each account's own choice.", "success")
    return redirect(url_for(".settings"))
