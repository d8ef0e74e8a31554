"""LibreOffice hanging or killed mid-conversion: the PDF's job fails cleanly and is retried, the
converter restarts, and the next conversion succeeds.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from held_jobs import run_retries

from web.testing import csrf_token
from workflow.convert import PdfConverter


@pytest.fixture()
def fragile_converter(tmp_path):
    with PdfConverter(timeout=3, work_dir=tmp_path / "lo") as converter:
        converter.start()
        yield converter


@pytest.fixture()
def app_config(app_config, fragile_converter):
    return {**app_config, "PDF_CONVERTER": fragile_converter}


def soffice_pid(converter: PdfConverter) -> int:
    [pids] = converter.worker_pids()
    return pids.soffice


def create(client, api, terms) -> int:
    """Create a letter through the API: its PDF's job runs once the request commits."""
    response = client.post("/api/letters", headers=api,
                           json={"template": "separation_letter", "terms": terms})
    assert response.status_code == 201, response.text
    return response.json["id"]


def test_a_hung_libreoffice_is_replaced_and_the_download_succeeds(client, api,
                                                                 reference_terms,
                                                                 fragile_converter):
    hung = soffice_pid(fragile_converter)
    os.kill(hung, signal.SIGSTOP)  # LibreOffice stops answering mid-conversion
    started = time.monotonic()
    letter_id = create(client, api, reference_terms)
    run_retries()  # a failed attempt is tried again, on the LibreOffice that replaced it
    response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api)
    assert response.status_code == 200, response.text
    assert response.data.startswith(b"%PDF-")
    assert time.monotonic() - started < 60
    assert soffice_pid(fragile_converter) != hung  # the hung one was killed and replaced
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)


def test_a_killed_libreoffice_fails_cleanly_then_the_next_conversion_works(
        client, api, reference_terms, fragile_converter):
    killed = soffice_pid(fragile_converter)
    timer = threading.Timer(0.05, os.kill, (killed, signal.SIGKILL))
    timer.start()
    first = create(client, api, reference_terms)
    timer.join()
    run_retries()
    response = client.get(f"/api/letters/{first}/document.pdf", headers=api)
    # Either the conversion was already done, or it was retried on a fresh LibreOffice.
    assert response.status_code == 200, response.text
    second = create(client, api, {**reference_terms, "hourly_rate": 750})
    response = client.get(f"/api/letters/{second}/document.pdf", headers=api)
    assert response.status_code == 200
    assert soffice_pid(fragile_converter) != killed


def test_when_libreoffice_keeps_failing_the_answer_says_why(client, api, staff,
                                                           reference_terms, fragile_converter,
                                                           monkeypatch):
    from workflow.errors import ConversionError
    from workflow.letters import PDF_RETRIES

    calls = []

    def broken(docx: bytes) -> bytes:
        calls.append(1)
        raise ConversionError("letter.docx: LibreOffice stopped answering and timed out")

    monkeypatch.setattr(fragile_converter, "convert_bytes", broken)
    letter_id = create(client, api, reference_terms)
    assert run_retries() == PDF_RETRIES and len(calls) == 1 + PDF_RETRIES
    response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api)
    assert response.status_code == 503
    assert "timed out" in response.json["error"]
    monkeypatch.undo()
    # "Retry" on the letter page queues the PDF again; the download then has it.
    page = staff.get(f"/letters/{letter_id}")
    assert "The PDF could not be generated." in page.text
    retried = staff.post(f"/letters/{letter_id}/versions/1/retry",
                         data={"csrf_token": csrf_token(page.text)})
    assert retried.status_code == 302
    response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api)
    assert response.status_code == 200
