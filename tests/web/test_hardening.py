"""Every form needs its CSRF token, every answer carries the security headers, and nothing
a refused request carries is written.
"""

from __future__ import annotations

import re

from sqlalchemy import func, inspect, select, table

from web.database import get_db

LETTER_PAGES = ("/letters", "/letters/new",
                "/letters/new?template=separation_letter&start=reference")


def url_for_rule(rule) -> str:
    def value(match: re.Match[str]) -> str:
        converter, name = match.group(1) or "", match.group(2)
        if converter.startswith("int") or name.endswith("_id") or name in ("number", "page"):
            return "1"
        return "x" * 43 if "token" in name else "x"
    return re.sub(r"<(?:([^:>]+):)?([^>]+)>", value, rule.rule)


def row_counts(app) -> dict[str, int]:
    with app.app_context(), get_db().transaction() as session:
        names = inspect(session.get_bind()).get_table_names()
        return {name: session.scalar(select(func.count()).select_from(table(name)))
                for name in names}


def test_every_form_post_without_its_csrf_token_is_refused(app, staff, make_letter,
                                                           reference_terms):
    make_letter(reference_terms)
    before = row_counts(app)
    checked = []
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.rule.startswith("/api") or \
                rule.endpoint == "static":
            continue
        response = staff.post(url_for_rule(rule), data={"reason": "x", "email": "a@b.c"})
        assert response.status_code == 400, (rule.rule, response.status_code)
        assert "security token" in response.text, rule.rule
        checked.append(rule.rule)
    assert len(checked) >= 4, checked
    assert row_counts(app) == before


def test_security_headers_on_every_page(staff, make_letter, reference_terms):
    letter_id = make_letter(reference_terms)
    for url in (*LETTER_PAGES, f"/letters/{letter_id}", "/sign-in", "/letters/999999"):
        response = staff.get(url)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, url
        assert "frame-ancestors 'none'" in csp, url
        assert response.headers["X-Content-Type-Options"] == "nosniff", url
        assert response.headers["X-Frame-Options"] == "DENY", url
        assert "<script>" not in response.text and " onclick=" not in response.text, url


def test_downloads_are_attachments(staff, api, client, make_letter, reference_terms):
    letter_id = make_letter(reference_terms)
    for url, headers, who in (
        (f"/letters/{letter_id}/versions/1/letter.pdf", {}, staff),
        (f"/letters/{letter_id}/versions/1/letter.docx", {}, staff),
        (f"/api/letters/{letter_id}/document.pdf", api, client),
        (f"/api/letters/{letter_id}/document.docx", api, client),
    ):
        response = who.get(url, headers=headers)
        assert response.status_code == 200, url
        assert response.headers["Content-Disposition"].startswith("attachment;"), url
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_passwords_are_stored_with_a_slow_hash(app, credentials):
    from workflow.models import User

    with app.app_context(), get_db().transaction() as session:
        hashes = list(session.scalars(select(User.password_hash)))
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert not any(credentials["staff"][1] in h for h in hashes)
