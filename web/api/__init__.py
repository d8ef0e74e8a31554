"""The JSON API for staff tools and scripts, authenticated with bearer tokens, and the few
public routes of signers (``/api/sign/<token>``) and verification (``/api/verify``).

Every answer is JSON, errors included: ``{"error": "..."}``, and for invalid terms
``{"error": "...", "errors": {field: message}}`` with status 422. CSRF protection does not
apply: a browser never sends the ``Authorization`` header by itself, so a forged request
carries no credentials.
"""

from __future__ import annotations

from flask import Blueprint

__all__ = ["bp"]

bp = Blueprint("api", __name__, url_prefix="/api")

from . import execution, redline, signing, views, webhooks  # noqa: E402,F401  (routes on bp)
