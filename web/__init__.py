"""Counterpart's web front end: staff sign-in, letters, terms form, execution in
counterparts, the signers' pages, verification, and the JSON API.

:func:`create_app` reads like a table of contents: settings, the database, security, who is
asking, the page and API blueprints, and the LibreOffice of the web process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from workflow.files import make_private_folder

from . import (
    auth,
    database,
    documents,
    errors,
    filters,
    jobs,
    previews,
    ratelimit,
    redaction,
    security,
)
from .config import config_from_env, secret_key_for
from .numbers import BoundedIntegerConverter

__all__ = ["create_app", "csrf"]

csrf = CSRFProtect()


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Make the app from the environment's settings, overridden by ``test_config``.

    ``test_config`` takes the keys of :func:`web.config.config_from_env` (``DATA_DIR``,
    ``DATABASE_URL``, ``SECRET_KEY``, ...), Flask's own, and two more: ``PDF_CONVERTER``, the
    LibreOffice converter to use instead of the process-wide one, and ``PROXY_FIX=False``
    when the WSGI server itself applies the proxies' ``X-Forwarded-*`` headers (``counterpart
    serve`` does, trusting them only from ``TRUSTED_PROXY``), so that they are applied once.
    """
    app = Flask(__name__)
    app.config.from_mapping(config_from_env())
    app.config["PROXY_FIX"] = True
    if test_config:
        app.config.from_mapping(test_config)
    _finish_config(app)
    if app.config["PROXY_COUNT"] and app.config["PROXY_FIX"]:
        count = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count,  # type: ignore[method-assign]
                                x_host=count, x_port=count)

    redaction.init_app(app)  # no log line names a live signing link
    # Every <int:...> in a route: ASCII digits, at most an INTEGER column's largest value.
    app.url_map.converters["int"] = BoundedIntegerConverter
    ratelimit.init_app(app)  # first: a client over its limit costs nothing more
    db = database.init_app(app)
    jobs.init_app(app, db)  # the job queue and the runtime its jobs use
    csrf.init_app(app)
    security.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    filters.init_app(app)
    previews.init_app(app)

    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .letters import bp as letters_bp
    from .signing import bp as signing_bp
    from .verify import bp as verify_bp

    app.register_blueprint(letters_bp)
    app.register_blueprint(admin_bp)  # administrators only: see web/auth/roles.py
    app.register_blueprint(signing_bp)  # public: the token in the link is the credential
    app.register_blueprint(verify_bp)  # public
    app.register_blueprint(api_bp)
    csrf.exempt(api_bp)  # bearer tokens, not cookies: see web/api/__init__.py

    documents.init_app(app, db)
    return app


def _finish_config(app: Flask) -> None:
    """Fill in the settings that follow from others: secret key, cookies, CSRF."""
    config = app.config
    config["DATA_DIR"] = Path(config["DATA_DIR"]).resolve()
    config["DOCX_TEMPLATE_DIR"] = Path(config["DOCX_TEMPLATE_DIR"])
    if config.get("SEAL_PKCS12"):
        config["SEAL_PKCS12"] = Path(config["SEAL_PKCS12"])
    config["SECRET_KEY"] = secret_key_for(config)  # a weak one refused, before all
    make_private_folder(config["DATA_DIR"])
    if config.get("PREFERRED_URL_SCHEME") == "https":
        config["SESSION_COOKIE_SECURE"] = True  # (and per request when it came over https)
    if config["SESSION_COOKIE_NAME"] == "session":  # Flask's default; name it after the app
        config["SESSION_COOKIE_NAME"] = "counterpart_session"
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(hours=config["SESSION_HOURS"])
    # A terms form may stay open for a long time; the token lives as long as the session.
    config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.json.sort_keys = False  # type: ignore[attr-defined]  (terms keep the schema's order)
