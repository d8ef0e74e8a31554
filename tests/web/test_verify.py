"""/verify and /api/verify: every answer in true words, on the page and in the API; files too
complex to check refused at once; a full queue answered 503; a limit per client; and, on a
real server, sign-in and the letters page answering while verifications run."""

from __future__ import annotations

import datetime as dt
import html
import io
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pypdf
import pytest
from scans import scan_of
from serving import ServerProcess

from web.testing import csrf_token
from web.verify import RETRY_AFTER_SECONDS, verification_queue
from workflow.seal import load_or_create_sealer, seal_pdf

CASES = Path(__file__).resolve().parents[1] / "data" / "cases"
CASE = CASES / "verify-3000-signature-fields.pdf"
TITLE = "“Separation letter of John R. Tucker, Capstone Turbine Corporation”"
BROKEN = "The seal is broken: changed after sealing."
NOT_OURS = "Not an executed letter of this system"
SYSTEM_FILE = "A file of this system, not an executed letter"


def api_check(client, data: bytes, **environ: Any):
    return client.post("/api/verify", data={"file": (io.BytesIO(data), "file.pdf")},
                       content_type="multipart/form-data", environ_base=environ)


def page_check(client, data: bytes, **environ: Any):
    form = client.get("/verify", environ_base=environ)
    return client.post("/verify", data={"csrf_token": csrf_token(form.text),
                                        "file": (io.BytesIO(data), "file.pdf")},
                       content_type="multipart/form-data", environ_base=environ)


@pytest.fixture()
def files(client, api, sent, reference_pdf) -> dict[str, bytes]:
    """Every kind of file: the letter, a blank counterpart, a scan and a signed counterpart,
    the executed letter and two changed copies of it, and a PDF this system never made."""
    letter_id = sent["letter_id"]
    company, executive = sent["signers"]
    base = f"/api/letters/{letter_id}"
    letter_pdf = client.get(f"{base}/document.pdf", headers=api).data
    blank = client.post(f"{base}/counterparts/{company['counterpart_id']}/blank.pdf",
                        headers=api)
    assert blank.status_code == 200 and blank.data.startswith(b"%PDF-"), blank.text
    scan = scan_of(letter_pdf, signed_by=["executive"])
    uploaded = client.post(f"{base}/counterparts/{executive['counterpart_id']}/upload",
                           headers=api, content_type="multipart/form-data", data={
                               "file": (io.BytesIO(scan), "tucker-signed.pdf"),
                               "signed_on": dt.date.today().isoformat()})
    assert uploaded.status_code == 201, uploaded.text
    signed = client.post(f"/api/sign/{company['token']}", json={
        "consent": True, "signature": {"type": "typed", "text": "Eliot Protsch"}})
    assert signed.status_code == 200, signed.text
    # Downloads of signed documents are written in the audit record, so they are POSTs.
    executed = client.post(f"{base}/executed.pdf", headers=api)
    assert executed.status_code == 200, executed.text
    executed_pdf = executed.data
    middle = len(executed_pdf) // 3
    writer = pypdf.PdfWriter(io.BytesIO(executed_pdf), incremental=True)
    writer.add_metadata({"/Note": "amended after execution"})
    appended = io.BytesIO()
    writer.write(appended)
    return {
        "executed": executed_pdf,
        "flipped": executed_pdf[:middle] + bytes([executed_pdf[middle] ^ 0x01])
        + executed_pdf[middle + 1:],
        "appended": appended.getvalue(),
        "letter": letter_pdf,
        "blank": blank.data,
        "scan": scan,
        "signed": client.post(f"{base}/counterparts/{company['counterpart_id']}/signed.pdf",
                              headers=api).data,
        "stranger": reference_pdf,
    }


# name: (heading, message or its start, seal row, known row)
ANSWERS = {
    "executed": ("Genuine and unchanged",
                 f"This is the executed {TITLE}, exactly as this system sealed it on ",
                 "Intact, made by this system", "Yes, as an executed letter"),
    "flipped": ("Changed after it was sealed", f"{BROKEN} This copy of the executed {TITLE} "
                "differs from the document this system sealed.",
                "Broken: changed after sealing", "Yes, as an executed letter"),
    "appended": ("Changed after it was sealed", f"{BROKEN} Something was added to this copy "
                 f"of the executed {TITLE} after it was sealed on ",
                 "Broken: changed after sealing", "Yes, as an executed letter"),
    "letter": (SYSTEM_FILE, f"This is the unsigned letter, version 1, of {TITLE}, as sent to "
               f"its signers (the blank counterpart they sign) — not an executed document.",
               "None", "Yes: the unsigned letter, version 1, of"),
    "blank": (SYSTEM_FILE, f"This is the unsigned letter, version 1, of {TITLE}, as sent to "
              f"its signers (the blank counterpart they sign) — not an executed document.",
              "None", "Yes: the unsigned letter, version 1, of"),
    "scan": (SYSTEM_FILE, f"This is the scan of the counterpart, version 1, of {TITLE}, "
             f"signed on paper by John R. Tucker (the executive), as uploaded — one signer's "
             f"copy, not the executed document.", "None", "Yes: the scan of the counterpart"),
    "signed": (SYSTEM_FILE, f"This is the counterpart, version 1, of {TITLE}, signed "
               f"electronically by Eliot Protsch (the company, by its chair) — one signer's "
               f"copy, not the executed document.", "None", "Yes: the counterpart, version 1, of"),
    "stranger": (NOT_OURS, "This PDF carries no seal. It is not an executed letter of this "
                 "system.", "None", "No"),
}


def test_every_answer_is_true_on_the_page_and_in_the_api(app, files):
    visitor = app.test_client()  # no account, no token
    for name, (heading, message, seal, known) in ANSWERS.items():
        answer = api_check(visitor, files[name])
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json["message"].startswith(message), (name, answer.json["message"])
        assert answer.json["intact"] is (name == "executed"), name
        assert answer.json["modified"] is (name in ("flipped", "appended")), name
        assert (answer.json["document"] is not None) is (heading == SYSTEM_FILE), name
        page = page_check(visitor, files[name])
        assert page.status_code == 200, name
        text = html.unescape(page.text)
        assert f'<h2 id="verify-answer">{heading}</h2>' in text, name
        assert message in text, name
        assert f"<dt>Seal</dt><dd>{seal}</dd>" in text, name
        assert f"<dt>Known to this system</dt><dd>{known}" in text, name
        # A changed copy of an executed letter is never said to be sealed by someone else.
        for words in ("someone else", "not with this system's seal"):
            assert words not in answer.json["message"] and words not in text, name


def test_a_pdf_with_3000_signature_fields_is_refused_at_once(app):
    visitor = app.test_client()
    data = CASE.read_bytes()
    started = time.monotonic()
    answer = api_check(visitor, data)
    page = page_check(visitor, data)
    assert time.monotonic() - started < 20  # each used to hold a request for 20 s
    assert answer.status_code == 422
    assert answer.json["error"].startswith("This PDF was not checked: it has more than 10 "
                                           "signature fields")
    assert page.status_code == 422
    assert "This PDF was not checked: it has more than 10 signature fields" in page.text


@pytest.fixture()
def one_place(app_config):
    """One check at a time and none waiting."""
    app_config.update(VERIFY_WORKERS=1, VERIFY_WAITING=0)


def test_a_full_queue_answers_503_at_once(one_place, app, reference_pdf):
    queue = verification_queue(app)
    running, release = threading.Event(), threading.Event()

    def slow_check() -> None:
        running.set()
        release.wait(60)

    holder = threading.Thread(target=queue.run, args=(slow_check,))
    holder.start()
    try:
        assert running.wait(30)
        visitor = app.test_client()
        busy = api_check(visitor, reference_pdf)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert "busy checking other files" in busy.json["error"]
        page = page_check(visitor, reference_pdf)
        assert page.status_code == 503 and "busy checking other files" in page.text
        assert page.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    finally:
        release.set()
        holder.join(60)
    assert api_check(app.test_client(), reference_pdf).status_code == 200


@pytest.fixture()
def two_checks_a_minute(app_config):
    app_config["RATE_LIMIT_VERIFY"] = "2 per minute"


def test_each_client_may_check_so_many_files_a_minute(two_checks_a_minute, app):
    visitor = app.test_client()
    not_a_pdf = b"a text file, not a PDF"
    assert api_check(visitor, not_a_pdf).status_code == 200
    assert page_check(visitor, not_a_pdf).status_code == 200
    refused = api_check(visitor, not_a_pdf)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json["error"].startswith("Too many files checked from your address.")
    page = page_check(visitor, not_a_pdf)
    assert page.status_code == 429 and "Too many files checked" in page.text
    # Someone else is not affected.
    assert api_check(visitor, not_a_pdf, REMOTE_ADDR="192.0.2.44").status_code == 200


# --- a real server --------------------------------------------------------------------------

def test_sign_in_and_letters_answer_while_files_are_checked(data_dir, database_url,
                                                            credentials, reference_pdf,
                                                            tmp_path):
    """Six clients keep the verification queue full (a sealed PDF pyHanko validates in full,
    and the 3,000-field case) while a member of staff signs in and opens the letters."""
    sealed = seal_pdf(reference_pdf, load_or_create_sealer(tmp_path / "other seal"))
    case = CASE.read_bytes()
    # One check at a time and none waiting in each web process: the six clients' connections
    # put at least three on one process, so its queue is seen full however fast checks are.
    server = ServerProcess(data_dir, database_url,
                           environment={"COUNTERPART_RATE_LIMIT_VERIFY": "10000 per minute",
                                        "COUNTERPART_VERIFY_WORKERS": "1",
                                        "COUNTERPART_VERIFY_WAITING": "0"})
    stop, statuses, lock = threading.Event(), Counter(), threading.Lock()
    retry_after: set[str | None] = set()

    def keep_checking(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as checker:
            while not stop.is_set():
                data = case if number % 3 == 0 else sealed
                answer = checker.post("/api/verify", files={"file": ("f.pdf", data)})
                with lock:
                    statuses[answer.status_code] += 1
                    if answer.status_code == 503:
                        retry_after.add(answer.headers.get("Retry-After"))
                if answer.status_code == 503:
                    time.sleep(0.02)  # a client told to wait does not ask again at once

    with server:
        checkers = [threading.Thread(target=keep_checking, args=(n,)) for n in range(6)]
        for checker in checkers:
            checker.start()
        try:
            deadline = time.monotonic() + 60
            while not statuses[503] and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting for the queue to be seen full, not for time
            assert statuses[503], statuses
            email, password = credentials["staff"]
            with httpx.Client(base_url=server.url, timeout=120) as staff:
                started = time.monotonic()
                form = staff.get("/sign-in")
                signed_in = staff.post("/sign-in", data={
                    "email": email, "password": password,
                    "csrf_token": csrf_token(form.text)})
                letters = staff.get("/letters")
                took = time.monotonic() - started
            assert (form.status_code, signed_in.status_code, letters.status_code) == (
                200, 302, 200)
            assert "Letters" in letters.text
            assert took < 30, took  # generous: a full queue holds one thread of each process
            deadline = time.monotonic() + 120
            while not (statuses[200] and statuses[422]) and time.monotonic() < deadline:
                time.sleep(0.05)  # the checks that got a place end with their answers
        finally:
            stop.set()
            for checker in checkers:
                checker.join(120)
    assert set(statuses) <= {200, 422, 503}, statuses
    assert statuses[200] and statuses[422], statuses
    assert retry_after == {str(RETRY_AFTER_SECONDS)}
