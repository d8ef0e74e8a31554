"""Sending stored documents: always as attachments, under their stored (generated) names,
and never stored by a browser or a proxy (``Cache-Control: no-store``): a letter, signed or
not, must not stay in a shared computer's cache after it was downloaded.

Downloads of signed and executed documents are written in the letter's audit record, and a
GET never writes to it (browsers prefetch, link checkers follow, a reloaded tab repeats), so
those downloads start from a POST: a button on the letter page, a POST with the API.
:func:`require_post` turns away a GET of them with 405 and says why.
"""

from __future__ import annotations

import io

from flask import request, send_file
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.wrappers import Response

__all__ = ["send_document", "require_post", "RECORDED_DOWNLOAD_MESSAGE"]

RECORDED_DOWNLOAD_MESSAGE = (
    "Downloads of signed and executed documents are written in the letter's audit record, so "
    "they are asked for with POST: use the buttons on the letter page, or POST to this address "
    "with the API.")


def require_post() -> None:
    """Refuse a GET (or HEAD) of a recorded download: 405 with ``Allow: POST``."""
    if request.method != "POST":
        raise MethodNotAllowed(valid_methods=["POST"], description=RECORDED_DOWNLOAD_MESSAGE)


def send_document(data: bytes, *, filename: str, media_type: str, sha256: str | None) -> Response:
    """Answer with a document's bytes as a download."""
    response = send_file(io.BytesIO(data), mimetype=media_type, as_attachment=True,
                         download_name=filename, etag=sha256 or False, max_age=0,
                         conditional=True)
    response.headers["Cache-Control"] = "no-store"
    return response
