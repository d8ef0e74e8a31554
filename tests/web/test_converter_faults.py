"""LibreOffice hanging or killed mid-conversion: the request fails cleanly or recovers, the
converter restarts, and the next conversion succeeds.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

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


def test_a_hung_libreoffice_is_replaced_and_the_download_succeeds(client, api, make_letter,
                                                                 reference_terms,
                                                                 fragile_converter):
    letter_id = make_letter(reference_terms, generate=False)
    hung = soffice_pid(fragile_converter)
    os.kill(hung, signal.SIGSTOP)  # LibreOffice stops answering mid-conversion
    started = time.monotonic()
    response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api)
    assert response.status_code == 200, response.text
    assert response.data.startswith(b"%PDF-")
    assert time.monotonic() - started < 60
    assert soffice_pid(fragile_converter) != hung  # the hung one was killed and replaced
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)


def test_a_killed_libreoffice_fails_cleanly_then_the_next_conversion_works(
        client, api, make_letter, reference_terms, fragile_converter):
    first = make_letter(reference_terms, generate=False)
    killed = soffice_pid(fragile_converter)
    timer = threading.Timer(0.05, os.kill, (killed, signal.SIGKILL))
    timer.start()
    response = client.get(f"/api/letters/{first}/document.pdf", headers=api)
    timer.join()
    # Either the conversion was already done, or it was retried on a fresh LibreOffice.
    assert response.status_code == 200, response.text
    second = make_letter({**reference_terms, "hourly_rate": 750}, generate=False)
    response = client.get(f"/api/letters/{second}/document.pdf", headers=api)
    assert response.status_code == 200
    assert soffice_pid(fragile_converter) != killed


def test_when_libreoffice_keeps_failing_the_answer_says_why(client, api, make_letter,
                                                           reference_terms, fragile_converter,
                                                           monkeypatch):
    from workflow.errors import ConversionError

    def broken(docx: bytes) -> bytes:
        raise ConversionError("letter.docx: LibreOffice stopped answering and timed out")

    monkeypatch.setattr(fragile_converter, "convert_bytes", broken)
    letter_id = make_letter(reference_terms, generate=False)
    response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api)
    assert response.status_code == 503
    assert "timed out" in response.json["error"]
    monkeypatch.undo()
    response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api)
    assert response.status_code == 200
