"""Every page, in each of its states, as people with disabilities meet it (WCAG 2.1 AA).

One app server and one browser serve the whole module, over one seeded data folder holding a
letter in each state (draft, generated, out for signature, fully executed, declined, voided,
in its second version, with expired links, waiting in a signing order, with a signer asked
for an emailed code). axe-core (through axe-playwright-python) checks each page and state
against every WCAG 2.0 and 2.1 rule of levels A and AA, with no rule turned off; one test
collects every page's violations and reports them together.

Beyond axe: a signer signs with the keyboard alone; the signing page carries the letter's
words as text for screen readers; on a phone the letter takes the whole width and nothing
scrolls sideways; the letter page of an executed letter shows the executed pages; and the
PDFs are tagged, with their language and the letter's title.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pypdf
import pytest
from scans import scan_of
from sqlalchemy import select, update
from support import letter_words

from web import create_app
from web.database import get_db
from web.testing import ClosingClient, LiveServer
from workflow.accounts import create_api_token
from workflow.letters import create_letter, generate_document, pending_documents
from workflow.models import Envelope, User, utcnow

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000
STAFF = ("counsel@example.com", "correct horse battery")
ADMIN = ("admin@example.com", "admin password 1234")
# Every WCAG 2.0 and 2.1 rule of levels A and AA that axe-core has; none is turned off.
WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
           "resultTypes": ["violations"]}
SIGNERS = [{"role": "company", "name": "Eliot Protsch", "email": "eliot@capstone.test"},
           {"role": "executive", "name": "John R. Tucker"}]


@dataclass
class Site:
    """The running app and the letters seeded for the module."""

    url: str
    app: Any
    letters: dict[str, int] = field(default_factory=dict)
    links: dict[str, list[str]] = field(default_factory=dict)
    counterparts: dict[str, list[int]] = field(default_factory=dict)
    executed_pdf: bytes = b""
    letter_pdf: bytes = b""


class _Inbox:
    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        return "250 OK"


def _generate(app: Any, converter: Any) -> None:
    """Make every pending PDF now, as the background job would."""
    with app.app_context():
        with get_db().transaction() as session:
            pending = pending_documents(session)
        for document_id in pending:
            generate_document(get_db(), document_id, converter)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, seeded_database: Path,
         converter: Any, reference_terms_module: dict[str, Any]) -> Iterator[Site]:
    from aiosmtpd.controller import Controller
    from serving import free_port

    folder = tmp_path_factory.mktemp("accessible") / "data"
    folder.mkdir()
    shutil.copy(seeded_database, folder / "counterpart.db")
    smtp = Controller(_Inbox(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    app = create_app({
        "TESTING": False, "DATA_DIR": folder, "DATABASE_URL": None, "PDF_CONVERTER": converter,
        "QUEUE_URL": "immediate", "RATE_LIMIT_FAILURES": "1000 per minute",
        "RATE_LIMIT_VERIFY": "1000 per minute", "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp.port, "SMTP_STARTTLS": False, "SMTP_FROM": "legal@capstone.test"})
    app.test_client_class = ClosingClient

    def fault() -> str:
        raise RuntimeError("a fault, to see the page a server error shows")

    # (Added before the first request, as Flask requires.)
    app.add_url_rule("/letters/fault-for-tests", "fault_for_tests", fault)
    with app.app_context(), get_db().transaction() as session:
        token = create_api_token(session, STAFF[0], "accessibility tests")
    api = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    terms = reference_terms_module
    site = Site(url="", app=app)

    def letter(name: str, *, generate: bool = True) -> int:
        with app.app_context(), get_db().transaction() as session:
            user = session.scalars(select(User).where(User.email == STAFF[0])).one()
            site.letters[name] = create_letter(session, "separation_letter", terms, user).id
        if generate:
            _generate(app, converter)
        return site.letters[name]

    def send(name: str, signers: list[dict[str, Any]] = SIGNERS, **body: Any) -> None:
        answer = client.post(f"/api/letters/{site.letters[name]}/envelope", headers=api,
                             json={"signers": signers, **body})
        assert answer.status_code == 201, answer.text
        site.links[name] = [s["link"] for s in answer.json["signers"]]
        site.counterparts[name] = [s["counterpart_id"] for s in answer.json["signers"]]

    def token_of(link: str) -> str:
        return link.rsplit("/", 1)[1]

    def seed() -> None:
        _seed(site, client, api, terms, letter, send, token_of, converter)

    # Sealing runs its own asyncio loop: seed in a thread of its own, outside the one that
    # Playwright's synchronous API runs in.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(seed).result()

    with LiveServer(app) as server:
        site.url = server.url
        yield site
    smtp.stop()
    app.extensions["counterpart.documents"].close()
    app.extensions["counterpart.db"].dispose()


def _seed(site: Site, client: Any, api: dict[str, str], terms: dict[str, Any], letter: Any,
          send: Any, token_of: Any, converter: Any) -> None:
    """Make a letter in each state, as staff and signers would through the API."""
    app = site.app
    letter("draft", generate=False)
    letter("generated")
    letter("out")
    send("out", [{**SIGNERS[0], "verify_email": True}, SIGNERS[1]])
    letter("executed")
    send("executed")
    for link in site.links["executed"]:
        signed = client.post(f"/api/sign/{token_of(link)}", json={
            "consent": True, "signature": {"type": "typed", "text": "Signed"}})
        assert signed.status_code == 200, signed.text
    executed = client.post(f"/api/letters/{site.letters['executed']}/executed.pdf", headers=api)
    assert executed.status_code == 200, executed.text
    site.executed_pdf = executed.data
    site.letter_pdf = client.get(f"/api/letters/{site.letters['executed']}/document.pdf",
                                 headers=api).data
    letter("declined")
    send("declined")
    declined = client.post(f"/api/sign/{token_of(site.links['declined'][1])}/decline",
                           json={"reason": "The consulting period is too short."})
    assert declined.status_code == 200, declined.text
    letter("voided")
    send("voided")
    voided = client.post(f"/api/letters/{site.letters['voided']}/envelope/void", headers=api,
                         json={"reason": "Terms to be changed."})
    assert voided.status_code == 200, voided.text
    letter("revised")
    revised = client.put(f"/api/letters/{site.letters['revised']}/terms", headers=api,
                         json={"terms": {**terms, "hourly_rate": "650"}})
    assert revised.status_code == 200, revised.text
    _generate(app, converter)
    letter("expired")
    send("expired")
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Envelope).where(Envelope.letter_id == site.letters["expired"])
                        .values(expires_at=utcnow() - dt.timedelta(days=1)))
    letter("ordered")
    send("ordered", signing_order=True)
    letter("keyboard")
    send("keyboard")
    letter("phone")
    send("phone")


@pytest.fixture(scope="module")
def reference_terms_module() -> dict[str, Any]:
    from workflow.schema import load_template, sample_terms

    return sample_terms(load_template("separation_letter"))


class Audit:
    """Run axe on pages and keep every violation, to report them all at the end."""

    def __init__(self) -> None:
        from axe_playwright_python.sync_playwright import Axe

        self.axe = Axe()
        self.checked: list[str] = []
        self.failures: list[str] = []

    def check(self, page: Any, what: str) -> None:
        page.wait_for_load_state()
        results = self.axe.run(page, options=WCAG_AA)
        assert results.response["passes"], f"axe ran no rule on {what}"
        self.checked.append(what)
        if results.violations_count:
            self.failures.append(f"--- {what} ({page.url})\n{results.generate_report()}")

    def assert_clean(self) -> None:
        assert not self.failures, "\n".join(self.failures)


def new_page(browser: Any, site: Site, **options: Any) -> Any:
    context = browser.new_context(base_url=site.url, **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def sign_in(page: Any, account: tuple[str, str]) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email address").fill(account[0])
    page.get_by_label("Password").fill(account[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/letters")


def path(link: str) -> str:
    return "/sign/" + link.rsplit("/", 1)[1]


def test_staff_pages_meet_wcag_aa(browser, site):
    audit = Audit()
    page = new_page(browser, site)
    try:
        page.goto("/sign-in")
        audit.check(page, "sign-in")
        page.get_by_label("Email address").fill(STAFF[0])
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        audit.check(page, "sign-in, wrong password")
        sign_in(page, STAFF)
        audit.check(page, "letters list")
        page.goto("/letters?q=no+such+letter")
        audit.check(page, "letters list, nothing found")
        page.goto("/letters/new")
        audit.check(page, "new letter: choose a template")
        page.goto("/letters/new?template=separation_letter&start=reference")
        audit.check(page, "new letter form")
        page.locator("#term-vested_option_shares").fill("2500000")
        page.locator("#term-company_name").fill("")
        page.get_by_role("button", name="Create the letter").click()
        page.locator("#error-summary").wait_for()
        audit.check(page, "new letter form with errors")

        for state in ("draft", "generated", "out", "executed", "declined", "voided", "revised",
                      "expired", "ordered"):
            page.goto(f"/letters/{site.letters[state]}")
            audit.check(page, f"letter page: {state}")
        page.goto(f"/letters/{site.letters['revised']}?version=1")
        audit.check(page, "letter page: an earlier version")
        page.goto(f"/letters/{site.letters['revised']}/edit")
        audit.check(page, "change the terms")

        # The send form with a mistake in it.
        page.goto(f"/letters/{site.letters['generated']}")
        page.locator("#signers-0-email").fill("not an address")
        page.get_by_role("button", name="Send for signature").click()
        page.wait_for_load_state()
        audit.check(page, "send form with errors")

        # A paper scan, previewed before it counts.
        letter_id, cid = site.letters["out"], site.counterparts["out"][1]
        scan = scan_of(site.letter_pdf, signed_by=["executive"], angle=1.2, paper="a4")
        page.goto(f"/letters/{letter_id}")
        page.locator(f"#scan-{cid}").set_input_files(
            files=[{"name": "scan.pdf", "mimeType": "application/pdf", "buffer": scan}])
        page.locator(f"#signed-on-{cid}").fill(utcnow().date().isoformat())
        page.get_by_role("button", name="Upload the scan of John R. Tucker").click()
        page.wait_for_url(f"**/letters/{letter_id}/counterparts/{cid}/upload")
        audit.check(page, "paper scan preview")

        page.goto("/account/password")
        audit.check(page, "change password")
        page.goto("/account/two-factor")
        audit.check(page, "two-factor settings")
        page.goto("/account/two-factor/setup")
        audit.check(page, "two-factor setup")
        page.get_by_role("button", name="Turn on two-factor sign-in").click()
        page.wait_for_load_state()
        audit.check(page, "two-factor setup, no code typed")

        # Error pages: forbidden, not found, a wrong method, a server error, a form without
        # its CSRF token.
        for url, code in (("/admin/users", 403), ("/letters/999999", 404),
                          (f"/letters/{site.letters['executed']}/executed.pdf", 405),
                          ("/letters/fault-for-tests", 500)):
            answer = page.goto(url)
            assert answer.status == code, url
            audit.check(page, f"error page {code}")
        with page.expect_response("**/sign-out") as refused:
            page.evaluate("""() => { const form = document.createElement("form");
                form.method = "post"; form.action = "/sign-out";
                document.body.append(form); form.submit(); }""")
        assert refused.value.status == 400
        # The answer arrives before the browser has shown it: wait for the page itself.
        page.wait_for_url("**/sign-out")
        page.wait_for_load_state()
        audit.check(page, "error page 400")
        page.close()

        admin = new_page(browser, site)
        sign_in(admin, ADMIN)
        admin.goto("/admin/users")
        audit.check(admin, "users admin")
        admin.goto("/admin/settings")
        audit.check(admin, "settings")
        admin.goto("/admin/templates")
        audit.check(admin, "template library")
        admin.goto("/admin/templates/separation_letter")
        audit.check(admin, "a template")
        admin.goto("/admin/templates/separation_letter/versions/1")
        audit.check(admin, "a published template version")
        admin.get_by_role("button", name="Make a new draft from this version").click()
        admin.wait_for_url("**/versions/2")
        audit.check(admin, "a draft template version")
        admin.get_by_role("button", name="Make a test render").click()
        admin.locator("#test-render .page-preview img").first.wait_for()
        audit.check(admin, "a draft with its test render")
        admin.locator("#schema-list_columns").fill("no_such_term")
        admin.get_by_role("button", name="Save the schema").click()
        admin.locator("#error-summary").wait_for()
        audit.check(admin, "a draft template version with problems")
        admin.close()
    finally:
        page.context.close()
    assert len(audit.checked) == 37
    audit.assert_clean()


def test_signing_and_verify_pages_meet_wcag_aa(browser, site, tmp_path):
    audit = Audit()
    page = new_page(browser, site)
    try:
        # The checker itself finds what it should: the muted grey the pages had before is
        # too faint on the page's background.
        page.goto("/verify")
        page.evaluate("""() => { const faint = document.createElement("p");
            faint.textContent = "Too faint";  // styled through the DOM: CSP forbids style=""
            faint.style.color = "#6b7a8c"; faint.style.background = "#f3f5f8";
            document.querySelector("main").append(faint); }""")
        faint = audit.axe.run(page, options=WCAG_AA).response["violations"]
        assert [v["id"] for v in faint] == ["color-contrast"]

        page.goto(path(site.links["out"][0]))
        page.get_by_role("button", name="Send me a code").wait_for()
        audit.check(page, "signing: the code to open the link")
        page.get_by_role("button", name="Send me a code").click()
        page.wait_for_load_state()
        audit.check(page, "signing: the code was sent")
        page.get_by_label("The 6-digit code from the email").fill("000000")
        page.get_by_role("button", name="Open the letter").click()
        page.wait_for_load_state()
        audit.check(page, "signing: a wrong code")

        page.goto(path(site.links["out"][1]))
        audit.check(page, "signing: reading")
        page.get_by_text("Read the letter as text", exact=True).click()
        audit.check(page, "signing: the letter as text")
        page.get_by_label("Draw it").check()
        audit.check(page, "signing: drawing the signature")
        page.get_by_label("Type it").check()
        page.get_by_role("button", name="Sign the letter").click()  # no consent
        page.wait_for_load_state()
        audit.check(page, "signing: consent missing")
        page.get_by_text("Decline to sign").first.click()
        audit.check(page, "signing: decline opened")

        page.goto(path(site.links["executed"][0]))
        audit.check(page, "signing: signed, fully executed")
        page.goto(path(site.links["declined"][1]) + "/done")
        audit.check(page, "signing: declined")
        for state, index, code in (("declined", 0, 410), ("expired", 0, 410),
                                   ("voided", 0, 410), ("ordered", 1, 200)):
            answer = page.goto(path(site.links[state][index]))
            assert answer.status == code, state
            audit.check(page, f"signing: {state} link")
        answer = page.goto("/sign/not-a-real-link-at-all")
        assert answer.status == 404
        audit.check(page, "signing: unknown link")

        page.goto("/verify")
        audit.check(page, "verify: the form")
        good = tmp_path / "executed.pdf"
        good.write_bytes(site.executed_pdf)
        page.locator("#verify-file").set_input_files(str(good))
        page.get_by_role("button", name="Check the file").click()
        page.wait_for_load_state()
        assert page.locator(".verify-result--good").count() == 1
        audit.check(page, "verify: a good result")
        writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(site.executed_pdf)))
        writer.add_metadata({"/Note": "amended after execution"})
        tampered = tmp_path / "tampered.pdf"
        with tampered.open("wb") as handle:
            writer.write(handle)
        page.goto("/verify")
        page.locator("#verify-file").set_input_files(str(tampered))
        page.get_by_role("button", name="Check the file").click()
        page.wait_for_load_state()
        assert page.locator(".verify-result--bad").count() == 1
        audit.check(page, "verify: a tampered PDF")
    finally:
        page.context.close()
    audit.assert_clean()


def focused(page: Any) -> str:
    """Describe the focused element: its tag, id, name and classes."""
    return page.evaluate("""() => { const e = document.activeElement;
        return [e.tagName.toLowerCase(), e.id, e.getAttribute("name") || "",
                e.className || ""].join(" "); }""")


def tab_to(page: Any, wanted: str, limit: int = 40) -> None:
    """Press Tab until the focused element's description holds ``wanted``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if wanted in focused(page):
            return
    raise AssertionError(f"Tab never reached {wanted!r}; last: {focused(page)!r}")


def test_a_signer_signs_with_the_keyboard_alone(browser, site):
    from playwright.sync_api import expect

    page = new_page(browser, site, viewport={"width": 1280, "height": 800})
    try:
        page.goto(path(site.links["keyboard"][0]))
        page.locator(".page-preview img").first.wait_for()
        # The box of pages is reached with Tab and scrolled with the arrow keys.
        tab_to(page, "pages-frame")
        frame = page.locator("[data-pages-frame]")
        assert frame.evaluate("e => e.scrollHeight > e.clientHeight")  # it does scroll
        for _ in range(5):
            page.keyboard.press("ArrowDown")
        page.keyboard.press("PageDown")
        expect(frame).not_to_have_js_property("scrollTop", 0)
        tab_to(page, "consent")
        page.keyboard.press("Space")
        expect(page.get_by_label("I have read the above")).to_be_checked()
        tab_to(page, "signature-text")
        page.keyboard.press("ControlOrMeta+A")
        page.keyboard.type("Eliot Protsch")
        expect(page.locator("[data-typed-preview]")).to_have_text("Eliot Protsch")
        tab_to(page, "button button--primary button--large")
        page.keyboard.press("Enter")
        page.wait_for_url("**/done")
        expect(page.locator("h1")).to_have_text("You signed this letter")
    finally:
        page.context.close()


def test_the_signing_page_gives_the_letters_words_as_text(browser, site, reference_words):
    from playwright.sync_api import expect

    page = new_page(browser, site)
    try:
        page.goto(path(site.links["out"][1]))
        region = page.get_by_role("region", name="The letter's pages")
        expect(region.get_by_role("img")).to_have_count(3)
        expect(region.get_by_role("img", name="Page 2 of 3 of the letter")).to_have_count(1)
        text = page.locator("[data-letter-text]")
        expect(text.locator(".letter-text__body")).to_be_hidden()
        tab_to(page, "summary")  # the "Read the letter as text" switch, by keyboard
        page.keyboard.press("Enter")
        expect(text.locator(".letter-text__body")).to_be_visible()
        expect(text.get_by_role("heading")).to_have_text(
            ["Page 1 of 3", "Page 2 of 3", "Page 3 of 3"])
        # Word for word the letter being signed, in paragraphs a screen reader reads in order.
        paragraphs = text.locator("p")
        assert letter_words("\n".join(paragraphs.all_inner_texts())) == reference_words
        assert paragraphs.count() > 20
        assert paragraphs.nth(1).inner_text() == "Dear John,"
    finally:
        page.context.close()


def test_the_signing_page_on_a_phone_uses_the_whole_width(browser, site):
    from playwright.sync_api import expect

    page = new_page(browser, site, viewport={"width": 390, "height": 844},
                    device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page.goto(path(site.links["phone"][0]))
        images = page.locator(".page-preview img")
        expect(images).to_have_count(3)
        content = page.evaluate("""() => { const main = document.querySelector("main");
            const style = getComputedStyle(main);
            return main.clientWidth - parseFloat(style.paddingLeft)
                   - parseFloat(style.paddingRight); }""")
        assert content > 340
        for index in range(3):
            box = images.nth(index).bounding_box()
            assert box["width"] >= content - 4, (index, box, content)
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        page.get_by_text("Read the letter as text", exact=True).click()
        body = page.locator(".letter-text__body").bounding_box()
        panel = page.locator(".panel--reading").bounding_box()
        assert panel["width"] >= content - 1
        assert body["width"] >= panel["width"] - 40  # the panel's width, less its padding
        # Nothing scrolls sideways, with the text open too.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    finally:
        page.context.close()


def test_the_letter_page_of_an_executed_letter_shows_the_executed_pages(browser, site):
    from playwright.sync_api import expect

    executed_pages = len(pypdf.PdfReader(io.BytesIO(site.executed_pdf)).pages)
    assert executed_pages >= 6  # the letter, two signature pages, the certificate
    page = new_page(browser, site)
    try:
        sign_in(page, STAFF)
        letter_id = site.letters["executed"]
        page.goto(f"/letters/{letter_id}")
        expect(page.locator("#preview-title")).to_contain_text("The executed letter")
        images = page.locator(".page-preview img")
        expect(images).to_have_count(executed_pages)
        for index in range(executed_pages):
            assert images.nth(index).get_attribute("src") == \
                f"/letters/{letter_id}/executed/pages/{index + 1}.png"
        last = images.nth(executed_pages - 1)
        last.scroll_into_view_if_needed()
        expect(last).to_have_js_property("naturalWidth", 850)
        expect(last).to_have_attribute(
            "alt", f"Page {executed_pages} of {executed_pages} of the executed letter")
        # The pictures are the executed PDF's pages: its third page carries the signatures the
        # unsigned letter's third page lacks.
        from web.previews import PagePreviews

        shown = page.request.get(f"/letters/{letter_id}/executed/pages/3.png").body()
        previews = PagePreviews(dpi=site.app.config["PREVIEW_DPI"])
        assert shown == previews.png("executed", 3, lambda: site.executed_pdf)
        assert shown != previews.png("letter", 3, lambda: site.letter_pdf)
        # A letter not executed shows its own version's pages, and has no executed pages.
        generated = site.letters["generated"]
        page.goto(f"/letters/{generated}")
        expect(page.locator(".page-preview img").first).to_have_attribute(
            "src", f"/letters/{generated}/versions/1/pages/1.png")
        assert page.request.get(f"/letters/{generated}/executed/pages/1.png").status == 404
    finally:
        page.context.close()


def test_pdfs_are_tagged_with_their_language_and_title(site, tmp_path):
    from web.execution import get_sealer
    from workflow.convert import fresh_process_convert
    from workflow.models import Letter
    from workflow.seal import check_seal

    with site.app.app_context(), get_db().transaction() as session:
        title = session.get(Letter, site.letters["executed"]).title
    assert title.startswith("Separation letter of John R. Tucker")

    def catalog(pdf: bytes) -> tuple[Any, Any]:
        reader = pypdf.PdfReader(io.BytesIO(pdf))
        return reader.trailer["/Root"], reader.metadata

    root, info = catalog(site.letter_pdf)
    assert root["/Lang"] == "en-US"
    assert root["/MarkInfo"] == {"/Marked": True}
    assert "/StructTreeRoot" in root
    assert root["/ViewerPreferences"] == {"/DisplayDocTitle": True}
    assert info["/Title"] == title

    # The same with a LibreOffice of its own (the command line's export options).
    with site.app.app_context(), get_db().transaction() as session:
        from workflow.models import Document

        docx_sha = session.scalars(select(Document.blob_sha256).where(
            Document.letter_id == site.letters["executed"],
            Document.kind == "letter_docx")).first()
        from workflow.letters import blob_bytes

        (tmp_path / "letter.docx").write_bytes(blob_bytes(session, docx_sha))
    fresh_process_convert(tmp_path / "letter.docx", tmp_path / "letter.pdf")
    root, info = catalog((tmp_path / "letter.pdf").read_bytes())
    assert (root["/Lang"], root["/MarkInfo"], info["/Title"]) == \
        ("en-US", {"/Marked": True}, title)
    assert "/StructTreeRoot" in root

    # The executed PDF keeps the letter's language and title, and its seal holds.
    root, info = catalog(site.executed_pdf)
    assert root["/Lang"] == "en-US"
    assert info["/Title"] == title
    assert root["/ViewerPreferences"] == {"/DisplayDocTitle": True}
    with site.app.app_context():
        seal = check_seal(site.executed_pdf, get_sealer().certificate)
    assert seal.sealed and seal.intact and seal.signed_by_us
