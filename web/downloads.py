"""Sending stored documents: always as attachments, under their stored (generated) names,
and never stored by a browser or a proxy (``Cache-Control: no-store``): a letter, signed or
not, must not stay in a shared computer's cache after it was downloaded."""

from __future__ import annotations

import io

from flask import send_file
from werkzeug.wrappers import Response

__all__ = ["send_document"]


def send_document(data: bytes, *, filename: str, media_type: str, sha256: str | None) -> Response:
    """Answer with a document's bytes as a download."""
    response = send_file(io.BytesIO(data), mimetype=media_type, as_attachment=True,
                         download_name=filename, etag=sha256 or False, max_age=0,
                         conditional=True)
    response.headers["Cache-Control"] = "no-store"
    return response
