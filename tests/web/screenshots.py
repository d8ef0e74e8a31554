"""Save pictures of the main pages for the README (``make screenshots``).

Runs the app on a throwaway data folder with a few letters, drives Debian's chromium through
Playwright, and writes PNG files into the folder given (``docs/screenshots`` by default).
Not a test: pytest does not collect it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from web import create_app
from web.database import get_db
from web.documents import get_documents
from web.testing import LiveServer, launch_chromium
from workflow.accounts import create_user
from workflow.convert import PdfConverter
from workflow.letters import create_letter, generate_document, pending_documents
from workflow.schema import load_template, sample_terms

EMAIL = "counsel@example.com"
PASSWORD = "correct horse battery"
OTHER_LETTERS = [
    ("Maria L. Ortega", "Northwind Energy, Inc.", "Northwind"),
    ("David K. Chen", "Bluefield Systems Corporation", "Bluefield"),
    ("Priya Raman", "Harbor Analytics LLC", "Harbor"),
]


def _seed(app) -> int:
    """Create the account and a few letters; return the id of the reference letter."""
    spec = load_template("separation_letter")
    with app.app_context(), get_db().transaction() as session:
        user = create_user(session, EMAIL, PASSWORD, is_admin=True)
        for name, company, short in OTHER_LETTERS:
            terms = sample_terms(spec) | {
                "executive_full_name": name, "executive_first_name": name.split()[0],
                "company_name": company, "company_short_name": short}
            create_letter(session, spec.name, terms, user)
        reference = create_letter(session, spec.name, sample_terms(spec), user)
        letter_id = reference.id
    with app.app_context():
        with get_db().transaction() as session:
            pending = pending_documents(session)
        for document_id in pending:
            generate_document(get_db(), document_id, get_documents().converter)
    return letter_id


def take_screenshots(out_dir: Path) -> list[Path]:
    """Save the pictures and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="counterpart-shots-") as tmp, \
            PdfConverter(work_dir=Path(tmp)) as converter:
        app = create_app({"DATA_DIR": Path(tmp) / "data", "DATABASE_URL": None,
                          "PDF_CONVERTER": converter,
                          # No worker here: jobs (the assembly) run in the app's process.
                          "QUEUE_URL": "immediate"})
        letter_id = _seed(app)
        with LiveServer(app) as server, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def shot(name: str, *, full_page: bool = False) -> None:
                path = out_dir / f"{name}.png"
                page.screenshot(path=str(path), full_page=full_page)
                saved.append(path)

            page.goto(f"{server.url}/sign-in")
            shot("sign-in")
            page.fill("#email", EMAIL)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]:has-text('Sign in')")
            page.wait_for_url(f"{server.url}/letters")
            shot("letters")

            page.goto(f"{server.url}/letters/new?template=separation_letter"
                      "&start=reference")
            shot("new-letter")
            page.fill("#term-vested_option_shares", "2500000")
            page.click("button:has-text('Create the letter')")
            page.locator("#field-vested_option_shares").scroll_into_view_if_needed()
            shot("form-error")

            page.goto(f"{server.url}/letters/{letter_id}")
            page.wait_for_selector(".page-preview img")
            page.wait_for_load_state("networkidle")
            shot("letter")

            phone = browser.new_page(viewport={"width": 390, "height": 844},
                                     device_scale_factor=2, is_mobile=True)
            phone.context.add_cookies(page.context.cookies())
            phone.goto(f"{server.url}/letters")
            path = out_dir / "letters-phone.png"
            phone.screenshot(path=str(path))
            saved.append(path)

            # Execution in counterparts: send, sign (typed at a desk, drawn on a phone).
            page.goto(f"{server.url}/letters/{letter_id}")
            page.fill("#signers-0-email", "eliot@capstone.example")
            page.click("button:has-text('Send for signature')")
            page.wait_for_selector("[data-signing-link]")
            page.locator("#signatures").scroll_into_view_if_needed()
            shot("sent")
            links = [page.locator("[data-signing-link]").nth(i).input_value() for i in range(2)]

            desk = browser.new_page(viewport={"width": 1280, "height": 900})
            desk.goto(links[0])
            desk.check("input[name=consent]")
            desk.locator("[data-typed-preview]").scroll_into_view_if_needed()
            path = out_dir / "signing.png"
            desk.screenshot(path=str(path))
            saved.append(path)
            desk.click("button:has-text('Sign the letter')")
            desk.wait_for_url("**/done")

            signer = browser.new_page(viewport={"width": 390, "height": 844},
                                      device_scale_factor=2, is_mobile=True, has_touch=True)
            signer.goto(links[1])
            signer.check("input[name=consent]")
            signer.check("input[value=drawn]")
            canvas = signer.locator("[data-signature-canvas]")
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            x, y = box["x"] + 30, box["y"] + box["height"] * 0.7
            signer.mouse.move(x, y)
            signer.mouse.down()
            for step in range(1, 36):
                signer.mouse.move(x + step * 8, y - 30 + ((step * 37) % 50))
            signer.mouse.up()
            path = out_dir / "signing-phone.png"
            signer.screenshot(path=str(path))
            saved.append(path)
            signer.click("button:has-text('Sign the letter')")
            signer.wait_for_url("**/done")

            page.goto(f"{server.url}/letters/{letter_id}")
            page.wait_for_load_state("networkidle")
            shot("executed")
            browser.close()
        close_app(app)
    return saved


def close_app(app) -> None:
    """Stop the app's LibreOffice use and close its database."""
    app.extensions["counterpart.documents"].close()
    app.extensions["counterpart.db"].dispose()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/screenshots")
    for saved_path in take_screenshots(target):
        print(f"saved {saved_path}")
