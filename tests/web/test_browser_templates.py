"""The template library in a real browser: an administrator uploads a Word template, edits
what was read from it, makes a test render, publishes it, and staff then find it among the
kinds of letter, with its list of texts growing box by box."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agreements import purchase_agreement

from web import create_app
from web.testing import LiveServer

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000


@pytest.fixture()
def server(app_config: dict[str, Any]) -> Iterator[LiveServer]:
    app = create_app({**app_config, "TESTING": False})
    with LiveServer(app) as live:
        yield live
    app.extensions["counterpart.documents"].close()
    app.extensions["counterpart.db"].dispose()


@pytest.fixture()
def new_page(browser, server) -> Iterator[Any]:
    """Open a tab in a browser of its own (its own cookies): ``new_page()``."""
    contexts = []

    def open_tab() -> Any:
        context = browser.new_context(base_url=server.url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        tab = context.new_page()
        tab.problems = []  # type: ignore[attr-defined]
        tab.on("console", lambda message: tab.problems.append(message.text)
               if message.type == "error" else None)
        tab.on("pageerror", lambda error: tab.problems.append(str(error)))
        return tab

    yield open_tab
    for context in contexts:
        context.close()


def sign_in(page, email: str, password: str, landing: str) -> None:
    page.goto(f"/sign-in?next={landing}")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{landing}")


def test_an_administrator_publishes_a_template_and_staff_use_it(new_page, credentials,
                                                                 tmp_path):
    from playwright.sync_api import expect

    page = new_page()
    template = tmp_path / "Purchase agreement.docx"
    template.write_bytes(purchase_agreement())
    sign_in(page, *credentials["admin"], "/letters")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Templates").click()
    page.wait_for_url("**/admin/templates")
    expect(page.locator("tr[data-template='separation_letter']")).to_contain_text("Version 1")

    page.get_by_label("Template (.docx)").set_input_files(str(template))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/admin/templates/purchase_agreement/versions/1")
    expect(page.locator("[data-version-status]")).to_have_text("Draft")
    expect(page.locator("#f-goods-type")).to_have_value("text_list")
    expect(page.locator("#f-include_warranty-type")).to_have_value("boolean")

    page.get_by_label("Title", exact=True).fill("Sale of goods")
    page.locator("#f-buyer_name-label").fill("Buyer's legal name")
    page.get_by_role("button", name="Save the schema").click()
    expect(page.locator(".flash--success")).to_contain_text("The schema is saved.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sale of goods")

    page.get_by_role("button", name="Make a test render").click()
    first_page = page.get_by_role("img", name="Page 1 of 1 of the test render")
    expect(first_page).to_be_visible()
    assert first_page.evaluate("image => image.complete && image.naturalWidth > 500")

    page.get_by_role("button", name="Publish version 1").click()
    expect(page.locator("[data-version-status]")).to_have_text("Published")
    assert page.problems == []  # type: ignore[attr-defined]

    # A member of staff, at their own browser, now finds it among the kinds of letter.
    page = new_page()
    sign_in(page, *credentials["staff"], "/letters/new")
    page.get_by_role("link", name="Sale of goods").click()
    page.wait_for_url("**/letters/new?template=purchase_agreement")
    expect(page.get_by_label("Buyer's legal name")).to_be_visible()
    expect(page.locator("form[data-terms-form][data-enhanced]")).to_have_count(1)
    page.get_by_label("Item 1").fill("oak desks")
    page.get_by_role("button", name="Add another item").click()
    page.get_by_label("Item 2").fill("walnut chairs")
    assert page.url.endswith("?template=purchase_agreement")  # added without a round trip
    assert page.problems == []  # type: ignore[attr-defined]
