"""The app factory, its settings from the environment, security headers and error pages."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import web
from web import create_app
from web.config import ConfigError, config_from_env, load_secret_key
from web.security import CONTENT_SECURITY_POLICY

WEB = Path(web.__file__).resolve().parent


def _close(app) -> None:
    app.extensions["counterpart.documents"].close()
    app.extensions["counterpart.db"].dispose()


def test_defaults_when_nothing_is_set(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config = config_from_env({})
    assert config["DATA_DIR"] == tmp_path / "output"
    assert config["DATABASE_URL"] is None
    assert config["SECRET_KEY"] is None
    assert config["MAX_CONTENT_LENGTH"] == 25 * 1024 * 1024
    assert config["SESSION_COOKIE_SECURE"] is False
    assert config["SMTP_HOST"] is None


def test_settings_come_from_the_environment(tmp_path):
    config = config_from_env({
        "COUNTERPART_DATA_DIR": str(tmp_path / "d"),
        "COUNTERPART_DATABASE_URL": "postgresql+psycopg://u:p@db/counterpart",
        "COUNTERPART_SECRET_KEY": "k" * 40,
        "COUNTERPART_MAX_UPLOAD_MB": "5",
        "COUNTERPART_SECURE_COOKIES": "yes",
        "COUNTERPART_SMTP_HOST": "mail.example.com",
        "COUNTERPART_SMTP_PORT": "2525",
    })
    assert config["DATA_DIR"] == tmp_path / "d"
    assert config["DATABASE_URL"] == "postgresql+psycopg://u:p@db/counterpart"
    assert config["SECRET_KEY"] == "k" * 40
    assert config["MAX_CONTENT_LENGTH"] == 5 * 1024 * 1024
    assert config["SESSION_COOKIE_SECURE"] is True
    assert (config["SMTP_HOST"], config["SMTP_PORT"]) == ("mail.example.com", 2525)


@pytest.mark.parametrize("name, value, words", [
    ("COUNTERPART_MAX_UPLOAD_MB", "lots", "must be a whole number"),
    ("COUNTERPART_MAX_UPLOAD_MB", "0", "must be at least 1"),
    ("COUNTERPART_SECURE_COOKIES", "maybe", "must be true or false"),
])
def test_bad_settings_are_named(name, value, words):
    with pytest.raises(ConfigError, match=f"{name} {words}"):
        config_from_env({name: value})


def test_settings_are_read_when_the_app_is_made_not_on_import(monkeypatch, tmp_path,
                                                             converter):
    monkeypatch.setenv("COUNTERPART_DATA_DIR", str(tmp_path / "from-env"))
    app = create_app({"PDF_CONVERTER": converter})
    try:
        assert app.config["DATA_DIR"] == tmp_path / "from-env"
        assert (tmp_path / "from-env" / "counterpart.db").is_file()  # created and migrated
    finally:
        _close(app)


def test_secret_key_is_generated_once_privately_and_kept(tmp_path):
    key = load_secret_key(tmp_path)
    path = tmp_path / "secret_key"
    assert len(key) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret_key(tmp_path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temporary file left


def test_app_uses_the_kept_secret_key(app_config):
    app_config.pop("SECRET_KEY", None)
    app = create_app(app_config)
    try:
        assert app.config["SECRET_KEY"] == \
            (app_config["DATA_DIR"] / "secret_key").read_text().strip()
    finally:
        _close(app)


def test_an_empty_secret_key_file_is_refused(tmp_path):
    (tmp_path / "secret_key").write_text("\n")
    with pytest.raises(ConfigError, match="no usable secret key"):
        load_secret_key(tmp_path)


def test_security_headers_on_pages_errors_and_api(client, staff, api):
    for response in (client.get("/sign-in"), staff.get("/letters"), staff.get("/letters/404"),
                     client.get("/api/letters"), client.get("/api/letters", headers=api)):
        headers = response.headers
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"


def test_static_files_are_served_to_anyone(client):
    css = client.get("/static/css/app.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    css.close()
    script = client.get("/static/js/terms-form.js")
    assert script.status_code == 200
    script.close()


def test_templates_hold_no_inline_script_style_or_event_handler():
    for path in sorted((WEB / "templates").rglob("*.html")):
        text = path.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"{path.name}: inline script {tag}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path.name}: inline event handler"
        assert not re.search(r"\sstyle\s*=", text), f"{path.name}: inline style"
        assert "<style" not in text, f"{path.name}: inline stylesheet"


def test_static_assets_are_all_local():
    for path in (WEB / "static").rglob("*"):
        if path.suffix in (".css", ".js", ".html"):
            text = path.read_text(encoding="utf-8")
            assert "http://" not in text and "https://" not in text, path.name


def test_unexpected_error_is_a_plain_500_page_without_a_trace(app_config, sign_in):
    app = create_app({**app_config, "TESTING": False})

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    try:
        client = sign_in(app.test_client())
        response = client.get("/boom")
        assert response.status_code == 500
        assert "Something went wrong" in response.text
        assert "secret detail" not in response.text and "Traceback" not in response.text
    finally:
        _close(app)


def test_pages_say_which_page_is_current(staff):
    page = staff.get("/letters").text
    assert '<a href="/letters" aria-current="page">Letters</a>' in page


def test_data_dir_is_created(tmp_path, converter):
    target = tmp_path / "new" / "folder"
    app = create_app({"DATA_DIR": target, "DATABASE_URL": None, "PDF_CONVERTER": converter})
    try:
        assert {"counterpart.db", "secret_key"} <= set(os.listdir(target))
    finally:
        _close(app)
