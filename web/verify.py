"""The public verification page: anyone uploads a PDF and learns, in words, whether it is an
executed letter of this system exactly as it was sealed, and who signed it.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, render_template, request

from workflow.envelopes import verify_document

from .auth import public
from .database import get_db
from .execution import get_sealer, upload_limit

__all__ = ["bp"]

bp = Blueprint("verify", __name__)


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


@bp.route("/verify", methods=["GET", "POST"])
@public
def verify() -> tuple[str, int]:
    """The form, and after an upload the answer for that file."""
    if request.method == "GET":
        return render_template("verify.html", result=None, public_page=True), 200
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return render_template("verify.html", result=None, public_page=True,
                               error="Choose a PDF file to check."), 400
    limit = upload_limit()
    data = upload.read(limit + 1)
    if len(data) > limit:
        return render_template("verify.html", result=None, public_page=True,
                               error=f"The file is larger than {limit // (1024 * 1024)} MB, "
                                     "the largest file accepted."), 413
    sealer = get_sealer()
    with get_db().transaction() as session:
        result = verify_document(session, data, sealer)
    result["sealed_at_time"] = _when(result.get("sealed_at"))
    for signer in result["signers"]:
        signer["signed_at_time"] = _when(signer.get("signed_at"))
    return render_template("verify.html", result=result, filename=upload.filename[:120],
                           size=len(data), public_page=True), 200
