"""The app in a real browser (Debian's chromium driven by Playwright), as legal staff use it.

The main test follows a letter from a blank form to two versions: sign in, fill the form from
scratch, submit with vested options above the grant, see the message beside that field with
the other values kept, correct it, watch the PDF being generated, see the page previews,
download the PDF and check its words, edit the terms into version 2, and still download
version 1. Others check that the form works without JavaScript and that the page runs
under its Content-Security-Policy without a violation.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdf
import pytest
from support import letter_words

from web import create_app
from web.testing import LiveServer

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000


def pdf_words(path: Path) -> list[str]:
    reader = pypdf.PdfReader(io.BytesIO(path.read_bytes()))
    return letter_words("\n".join(page.extract_text() for page in reader.pages))


@pytest.fixture()
def server(app_config: dict[str, Any]) -> Iterator[LiveServer]:
    """The app served on a free port of 127.0.0.1 (its jobs run as each request commits)."""
    app = create_app({**app_config, "TESTING": False})
    with LiveServer(app) as live:
        yield live
    app.extensions["counterpart.documents"].close()
    app.extensions["counterpart.db"].dispose()


@pytest.fixture()
def page(browser, server) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.problems = []  # type: ignore[attr-defined]

    def on_console(message: Any) -> None:
        # A 422 answer to a form with mistakes is expected; script errors and CSP violations
        # are not.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            tab.problems.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: tab.problems.append(str(error)))
    yield tab
    context.close()


def sign_in(page, credentials) -> None:
    email, password = credentials["staff"]
    page.goto("/letters")
    assert page.url.endswith("/sign-in?next=/letters")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/letters")


def fill_from_scratch(page, spec, terms: dict[str, Any]) -> None:
    """Type every term into the blank form as a person would, field by field."""
    for key, f in spec.fields.items():
        value = terms[key]
        if f.derive:
            continue  # computed by the page as the fields they come from are typed
        if f.type == "boolean":
            page.locator(f"#term-{key}-{'yes' if value else 'no'}").check()
        elif f.type == "date_list":
            for index, day in enumerate(value, start=1):
                if index > 1:
                    page.get_by_role("button", name="Add another date").click()
                page.locator(f"#term-{key}-{index}").fill(day)
        else:
            page.locator(f"#term-{key}").fill(str(value))


def test_from_a_blank_form_to_two_versions(page, spec, reference_terms, reference_words,
                                           credentials, tmp_path):
    from playwright.sync_api import expect

    sign_in(page, credentials)
    page.get_by_role("link", name="New letter").first.click()
    page.wait_for_url("**/letters/new")
    page.get_by_role("link", name="Executive separation and consulting letter").click()
    page.wait_for_url("**/letters/new?template=separation_letter")

    mistaken = {**reference_terms, "vested_option_shares": 2500000}
    fill_from_scratch(page, spec, mistaken)
    # The derived fields followed what was typed.
    assert page.locator("#term-effective_date").input_value() == "2006-08-01"
    assert page.locator("#term-option_exercise_deadline").input_value() == "2007-07-31"
    assert page.locator("#term-service_years").input_value() == "3"
    page.get_by_role("button", name="Create the letter").click()

    # The message is beside the field, and everything typed is still there.
    field = page.locator("#field-vested_option_shares")
    message = "Vested option shares cannot exceed the 2,000,000 option shares granted"
    assert message in field.locator(".field__error").inner_text()
    vested = page.locator("#term-vested_option_shares")
    assert vested.get_attribute("aria-invalid") == "true"
    assert vested.input_value() == "2500000"
    assert page.locator("#error-summary").is_visible()
    for key, value in reference_terms.items():
        if key == "vested_option_shares":
            continue
        f = spec.fields[key]
        if f.type == "boolean":
            assert page.locator(f"#term-{key}-yes").is_checked() is value, key
        elif f.type == "date_list":
            typed = page.locator(f"input[name={key}]:not(template *)")
            assert [typed.nth(i).input_value() for i in range(typed.count())] == value, key
        else:
            assert page.locator(f"#term-{key}").input_value() == str(value), key

    # Correct it and create the letter.
    vested.fill("1500000")
    page.get_by_role("button", name="Create the letter").click()
    page.wait_for_url("**/letters/1")
    assert "Letter created." in page.locator(".flashes").inner_text()

    # The page follows the generation and shows every page of the PDF.
    previews = page.locator(".page-preview img")
    previews.first.wait_for()
    assert previews.count() == 3
    for index in range(3):
        image = previews.nth(index)
        image.scroll_into_view_if_needed()  # the later pages load lazily
        expect(image).to_have_js_property("naturalWidth", 850)  # loaded, and a real picture
    assert page.locator(".badge").first.inner_text() == "Generated"

    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "john-r-tucker-separation-letter-v1.pdf"
    assert pdf_words(saved) == reference_words

    # Edit the terms: version 2.
    page.get_by_role("link", name="Change the terms").click()
    page.wait_for_url("**/letters/1/edit")
    page.locator("#term-hourly_rate").fill("650")
    page.get_by_role("button", name="Save as version 2").click()
    page.wait_for_url("**/letters/1")
    assert "Version 2 saved." in page.locator(".flashes").inner_text()
    page.locator(".page-preview img").first.wait_for()
    assert "<dt>Hourly rate (USD)</dt><dd>$650</dd>" in page.content()

    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    saved_v2 = tmp_path / download.value.suggested_filename
    download.value.save_as(saved_v2)
    assert saved_v2.name.endswith("-v2.pdf")
    assert "$650 per hour" in " ".join(pdf_words(saved_v2))

    # Version 1 is still there to download.
    version_1 = page.locator(".version", has_text="Version 1")
    with page.expect_download() as download:
        version_1.get_by_role("link", name="PDF of version 1").click()
    saved_v1 = tmp_path / ("old-" + download.value.suggested_filename)
    download.value.save_as(saved_v1)
    assert download.value.suggested_filename.endswith("-v1.pdf")
    assert pdf_words(saved_v1) == reference_words

    assert page.problems == []  # no script error and no Content-Security-Policy violation


def test_date_list_buttons_act_at_once_with_javascript(page, credentials):
    from playwright.sync_api import expect

    sign_in(page, credentials)
    page.goto("/letters/new?template=separation_letter&start=reference")
    # The buttons act at once only once the script has wired them: wait for that state, or a
    # click could land first and submit the form instead.
    expect(page.locator("[data-terms-form][data-enhanced]")).to_have_count(1)
    key = "cancelled_option_grant_dates"
    boxes = page.locator(f"input[name={key}]:not(template *)")
    expect(boxes).to_have_count(2)
    page.get_by_role("button", name="Add another date").click()
    expect(boxes).to_have_count(3)
    expect(page.locator(f"#term-{key}-3")).to_be_focused()
    page.get_by_role("button", name="Remove date 1").click()
    expect(boxes).to_have_count(2)
    expect(boxes.nth(0)).to_have_value("2006-06-22")
    expect(boxes.nth(1)).to_have_value("")
    expect(page.locator(f"label[for=term-{key}-1]")).to_have_text("Date 1")
    assert page.url.endswith("?template=separation_letter&start=reference")  # no round trip
    assert page.problems == []


def test_derived_field_typed_over_stays_as_typed(page, credentials):
    sign_in(page, credentials)
    page.goto("/letters/new?template=separation_letter&start=reference")
    page.locator("#term-effective_date").fill("2006-08-15")
    page.locator("#term-resignation_date").fill("2006-07-30")
    assert page.locator("#term-effective_date").input_value() == "2006-08-15"
    # A field still holding its computed value follows its source.
    assert page.locator("#term-option_exercise_deadline").input_value() == "2007-07-30"


def test_the_form_works_without_javascript(browser, server, credentials, reference_words,
                                           tmp_path):
    context = browser.new_context(base_url=server.url, java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        email, password = credentials["staff"]
        page.goto("/sign-in")
        page.get_by_label("Email address").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/letters/new?template=separation_letter&start=reference")
        key = "cancelled_option_grant_dates"
        page.get_by_role("button", name="Add another date").click()  # a round trip
        page.wait_for_load_state()
        page.locator(f"#term-{key}-3").fill("2006-06-30")
        page.get_by_role("button", name="Remove date 1").click()
        page.wait_for_load_state()
        boxes = page.locator(f"input[name={key}]:not(template *)")
        assert [boxes.nth(i).input_value() for i in range(boxes.count())] == \
            ["2006-06-22", "2006-06-30"]
        page.get_by_role("button", name="Create the letter").click()
        page.wait_for_url("**/letters/1")
        # Without JavaScript the page offers a plain link to look again.
        if page.locator("[data-refresh]").count():
            page.get_by_role("link", name="Refresh").click()
        for _ in range(100):
            if page.locator(".page-preview img").count():
                break
            page.wait_for_timeout(100)
            page.reload()
        assert page.locator(".page-preview img").count() == 3
        assert "June 22, 2006 and June 30, 2006" in page.content()
    finally:
        context.close()


def test_the_letters_table_on_a_phone(browser, server, credentials, make_letter,
                                      reference_terms):
    make_letter(reference_terms, generate=False)
    context = browser.new_context(base_url=server.url, viewport={"width": 390, "height": 844},
                                  is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, credentials)
        row = page.locator("tbody tr").first
        assert "John R. Tucker" in row.inner_text()
        # No sideways scrolling: the page fits the phone's width.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
