"""Staff see times in their own time zone, with UTC on hover: in a browser set to New York, the
letters table and the letter page show a letter changed at 14:05 UTC as 10:05 EDT, and keep
"14:05 UTC" in the title (the text the server wrote, which is what shows without JavaScript).
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from web.database import get_db
from web.testing import LiveServer
from workflow.models import Letter

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000
CHANGED_AT = dt.datetime(2006, 7, 24, 14, 5, tzinfo=dt.UTC)


def test_staff_pages_show_times_in_the_browsers_zone(app, browser, credentials, staff,
                                                     make_letter, reference_terms):
    from playwright.sync_api import expect

    letter_id = make_letter(reference_terms)
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Letter).where(Letter.id == letter_id)
                        .values(updated_at=CHANGED_AT))
    # Without JavaScript the page says UTC, in the text and on hover.
    table = staff.get("/letters").text
    assert ('<time datetime="2006-07-24T14:05:00+00:00" title="Jul 24, 2006, 14:05 UTC" '
            'data-local>Jul 24, 2006, 14:05 UTC</time>') in table

    email, password = credentials["staff"]
    with LiveServer(app) as server:
        context = browser.new_context(base_url=server.url, timezone_id="America/New_York",
                                      locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.new_page()
        problems: list[str] = []
        tab.on("pageerror", lambda error: problems.append(str(error)))
        tab.goto("/sign-in")
        tab.get_by_label("Email address").fill(email)
        tab.get_by_label("Password").fill(password)
        tab.get_by_role("button", name="Sign in").click()
        tab.wait_for_url("**/letters")
        changed = tab.locator("td[data-label='Last change'] time")
        expect(changed).to_have_attribute("data-local", "America/New_York")
        expect(changed).to_have_text("Jul 24, 2006, 10:05 EDT")
        expect(changed).to_have_attribute("title", "Jul 24, 2006, 14:05 UTC")

        tab.goto(f"/letters/{letter_id}")
        last_changed = tab.locator("p.meta time").first
        expect(last_changed).to_have_text("Jul 24, 2006, 10:05 EDT")
        expect(last_changed).to_have_attribute("title", "Jul 24, 2006, 14:05 UTC")
        # Every time on the page is rewritten, each keeping its UTC title.
        times = tab.locator("time[datetime]")
        assert times.count() >= 2
        for index in range(times.count()):
            element = times.nth(index)
            expect(element).to_have_attribute("data-local", "America/New_York")
            assert element.get_attribute("title").endswith(" UTC")
            assert "UTC" not in element.inner_text()
        context.close()
    assert problems == []
