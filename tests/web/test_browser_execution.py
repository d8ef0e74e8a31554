"""A letter executed in counterparts in a real browser (Debian's chromium through Playwright).

Staff sign in, create and send a letter; each signer opens their link in a browser of their
own, one at a desk typing a signature, the other on a phone drawing one; staff then see the
letter fully executed and download the executed PDF, which is checked as a reader would: its
pages and words, each signature above its signer's name, the certificate, and the seal.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pypdf
import pypdfium2 as pdfium
import pytest
from scans import scan_of
from sqlalchemy import select
from support import acknowledged, letter_words

from web import create_app
from web.database import get_db
from web.execution import get_sealer
from web.testing import LiveServer
from workflow.models import Counterpart
from workflow.seal import check_seal

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000
NAMES = ("Eliot Protsch", "John R. Tucker")


@pytest.fixture()
def served(app_config: dict[str, Any]) -> Iterator[tuple[LiveServer, Any]]:
    """The app served on a free port of 127.0.0.1 (its jobs run as each request commits)."""
    app = create_app({**app_config, "TESTING": False})
    with LiveServer(app) as live:
        yield live, app
    app.extensions["counterpart.documents"].close()
    app.extensions["counterpart.db"].dispose()


def new_tab(browser, base_url: str, problems: list[str], **options: Any) -> Any:
    context = browser.new_context(base_url=base_url, accept_downloads=True, **options)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.on("console", lambda message: problems.append(message.text)
           if message.type == "error" else None)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    return tab


def ink_above(pdf: bytes, page_index: int, name: str) -> int:
    """Count the signature ink (dark blue pixels) in the band above a printed name."""
    document = pdfium.PdfDocument(pdf)
    try:
        page = document[page_index]
        text = page.get_textpage()
        searcher = text.search(name)
        found = searcher.get_next()
        assert found, f"{name!r} is not on page {page_index + 1}"
        left, _bottom, _right, top = text.get_charbox(found[0])
        scale = 2
        image = page.render(scale=scale).to_pil().convert("RGB")
        height = page.get_height()
        # From the name up over the signature line: 60 points high, 250 points wide.
        box = (int((left - 10) * scale), int((height - top - 60) * scale),
               int((left + 240) * scale), int((height - top) * scale))
        pixels = image.crop(box).getdata()
        return sum(1 for red, green, blue in pixels if blue > red + 40 and blue > green + 30)
    finally:
        document.close()


def test_a_letter_executed_in_counterparts(browser, served, credentials, reference_words,
                                           tmp_path):
    from playwright.sync_api import expect

    server, app = served
    problems: list[str] = []
    staff = new_tab(browser, server.url, problems)
    email, password = credentials["staff"]
    staff.goto("/sign-in")
    staff.get_by_label("Email address").fill(email)
    staff.get_by_label("Password").fill(password)
    staff.get_by_role("button", name="Sign in").click()
    staff.wait_for_url("**/letters")

    # Create the letter; the page follows its PDF and then offers to send it.
    staff.goto("/letters/new?template=separation_letter&start=reference")
    staff.get_by_role("button", name="Create the letter").click()
    staff.wait_for_url("**/letters/1")
    staff.locator("#signers-0-email").wait_for()
    assert staff.locator("#signers-0-name").input_value() == "Eliot Protsch"
    assert staff.locator("#signers-1-name").input_value() == "John R. Tucker"
    staff.locator("#signers-0-email").fill("eliot@capstone.test")
    staff.locator("#signers-1-email").fill("jt@home.test")
    staff.get_by_role("button", name="Send for signature").click()
    staff.locator("[data-signing-link]").first.wait_for()
    links = [staff.locator("[data-signing-link]").nth(i).input_value() for i in range(2)]
    assert all(link.startswith(f"{server.url}/sign/") for link in links)
    expect(staff.get_by_role("button", name="Copy the link of Eliot Protsch")).to_be_visible()

    # The company's chair, at a desk: consents and types.
    desk = new_tab(browser, server.url, problems, viewport={"width": 1280, "height": 900})
    desk.goto(links[0])
    expect(desk.locator(".page-preview img")).to_have_count(3)
    preview = desk.locator("[data-typed-preview]")
    expect(preview).to_have_text("Eliot Protsch")
    assert desk.evaluate("""async () => { await document.fonts.ready;
        return [...document.fonts].some(f => f.family.includes("Counterpart Signature")
                                             && f.status === "loaded"); }""")
    desk.get_by_label("I have read the above").check()
    desk.get_by_role("button", name="Sign the letter").click()
    desk.wait_for_url("**/done")
    expect(desk.locator("h1")).to_have_text("You signed this letter")

    # The executive, on a phone in New York: consents and draws with a finger (pointer
    # events); the page sends the phone's time zone with the signature.
    phone = new_tab(browser, server.url, problems, viewport={"width": 390, "height": 844},
                    device_scale_factor=2, is_mobile=True, has_touch=True,
                    timezone_id="America/New_York")
    phone.goto(links[1])
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    phone.get_by_label("I have read the above").check()
    phone.get_by_label("Draw it").check()
    canvas = phone.locator("[data-signature-canvas]")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + 20, box["y"] + box["height"] * 0.7
    phone.mouse.move(x, y)
    phone.mouse.down()
    for step in range(1, 40):
        phone.mouse.move(x + step * 7, y - (step % 8) * 9)
    phone.mouse.up()
    phone.get_by_role("button", name="Sign the letter").click()
    phone.wait_for_url("**/done")
    expect(phone.locator(".notice--success")).to_contain_text("The letter is fully executed.")
    # What they signed, when in their own zone, and their copies, through the same link.
    expect(phone.locator(".signed-summary")).to_contain_text("(America/New_York)")
    expect(phone.get_by_role("button", name="The executed letter (PDF)")).to_be_visible()

    # Staff see it executed, and download the executed PDF.
    staff.goto("/letters/1")
    expect(staff.locator(".page-head .badge")).to_have_text("Fully executed")
    expect(staff.locator(".signer .badge")).to_have_text(["Signed", "Signed"])
    with staff.expect_download() as download:
        staff.get_by_role("button", name="Download executed PDF").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "john-r-tucker-separation-letter-executed.pdf"
    executed = saved.read_bytes()

    with app.app_context(), get_db().transaction() as session:
        zone, signed_at, signed_on = session.execute(
            select(Counterpart.time_zone, Counterpart.signed_at, Counterpart.signed_on)
            .where(Counterpart.name == NAMES[1])).one()
    assert zone == "America/New_York"
    assert signed_on == signed_at.astimezone(ZoneInfo("America/New_York")).date()

    reader = pypdf.PdfReader(io.BytesIO(executed))
    # The conformed letter (3 pages), 2 signature pages, then the certificate and its events.
    assert len(reader.pages) >= 6
    conformed = "\n".join(p.extract_text() for p in reader.pages[:3])
    assert letter_words(re.sub(r"Signed electronically on \w+ \d+, \d{4}", "", conformed)) == \
        acknowledged(reference_words, signed_on)
    # Each signature page carries its own signer's signature, above their printed name only.
    for page_index, signer in ((3, NAMES[0]), (4, NAMES[1])):
        other = NAMES[1] if signer == NAMES[0] else NAMES[0]
        assert ink_above(executed, page_index, signer) > 300, signer
        assert ink_above(executed, page_index, other) < 20, other
    certificate = " ".join(" ".join(p.extract_text() for p in reader.pages[5:]).split())
    for words in ("Certificate of completion", *NAMES, "eliot@capstone.test", "jt@home.test",
                  "typed", "drawn", "127.0.0.1", "(America/New_York)"):
        assert words in certificate, words
    with app.app_context():
        seal = check_seal(executed, get_sealer().certificate)
    assert seal.sealed and seal.intact and seal.signed_by_us
    assert problems == []  # no script error and no Content-Security-Policy violation


def test_a_paper_scan_is_previewed_then_counted(browser, served, credentials, sent,
                                                tmp_path):
    """Staff upload a scan on the letter page: a refusal shows by the upload control with the
    focus on it; a good scan is previewed beside the blank and counts once confirmed."""
    from playwright.sync_api import expect

    from workflow.envelopes import letter_pdf_for
    from workflow.models import Envelope, utcnow

    server, app = served
    letter_id = sent["letter_id"]
    cid = sent["signers"][1]["counterpart_id"]
    with app.app_context(), get_db().transaction() as session:
        envelope = session.scalar(select(Envelope).where(Envelope.letter_id == letter_id))
        blank = letter_pdf_for(session, envelope)
    scan = tmp_path / "tucker-signed.pdf"
    scan.write_bytes(scan_of(blank, signed_by=["executive"], angle=1.6, paper="a4"))
    not_pdf = tmp_path / "photo.pdf"
    not_pdf.write_bytes(b"GIF89a this is a picture, not a PDF")

    problems: list[str] = []
    staff = new_tab(browser, server.url, problems, viewport={"width": 1280, "height": 800})
    email, password = credentials["staff"]
    staff.goto("/sign-in")
    staff.get_by_label("Email address").fill(email)
    staff.get_by_label("Password").fill(password)
    staff.get_by_role("button", name="Sign in").click()
    staff.wait_for_url("**/letters")

    staff.goto(f"/letters/{letter_id}")
    today = utcnow().date().isoformat()
    staff.locator(f"#scan-{cid}").set_input_files(str(not_pdf))
    staff.locator(f"#signed-on-{cid}").fill(today)
    staff.get_by_role("button", name="Upload the scan of John R. Tucker").click()
    message = staff.locator(f"#upload-error-{cid}")
    expect(message).to_contain_text("photo.pdf is not a PDF file")
    expect(message).to_be_focused()
    # The message is in view, inside the executive's own upload form.
    assert staff.evaluate(f"""() => {{
        const box = document.getElementById("upload-error-{cid}").getBoundingClientRect();
        return box.top >= 0 && box.bottom <= window.innerHeight; }}""")
    assert staff.locator(f"#upload-{cid} #upload-error-{cid}").count() == 1

    staff.locator(f"#scan-{cid}").set_input_files(str(scan))
    expect(staff.locator(f"#signed-on-{cid}")).to_have_value(today)
    staff.get_by_role("button", name="Upload the scan of John R. Tucker").click()
    staff.wait_for_url(f"**/letters/{letter_id}/counterparts/{cid}/upload")
    expect(staff.locator("[data-ink-result]")).to_have_text(
        "A signature was found on John R. Tucker's signature line.")
    for selector in ("[data-scan-preview]", "[data-blank-preview]"):
        staff.wait_for_function(f"""() => {{ const image = document.querySelector(
            '{selector}'); return image && image.complete && image.naturalWidth > 300; }}""")
    staff.get_by_role("button", name="Count this as signed").click()
    staff.wait_for_url(f"**/letters/{letter_id}#signer-{cid}")
    expect(staff.locator(".flash--success")).to_have_text(
        "John R. Tucker's counterpart is signed on paper.")
    expect(staff.locator(".signer .badge")).to_have_text(["Link ready", "Signed"])
    expect(staff.locator(f"#signer-{cid}")).to_contain_text("recorded by " + email)
    # The refused upload's page is answered 422, which the browser notes; nothing else: no
    # script error and no Content-Security-Policy violation.
    refused = [p for p in problems if "status of 422" in p]
    assert len(refused) == 1 and [p for p in problems if p not in refused] == []

