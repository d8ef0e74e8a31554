"""The administrators' pages: staff accounts, settings, and the template library (upload,
edit, test render, publish).

Every page here needs a signed-in administrator (see :mod:`web.auth.roles`); other accounts
get 403.
"""

from __future__ import annotations

from flask import Blueprint, abort, g

__all__ = ["bp"]

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def _administrators_only() -> None:
    # The app's checks have answered strangers and other roles already; this one keeps the
    # area closed should a route ever be exempted from them.
    user = g.get("user")
    if user is not None and not user.is_admin:
        abort(403, "Only an administrator may use the administration pages.")


from . import settings, users, views, webhooks  # noqa: E402,F401  (register the routes on bp)
