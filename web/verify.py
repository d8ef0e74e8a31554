"""The public verification page: anyone uploads a PDF and learns, in words, whether it is an
executed letter of this system exactly as it was sealed, and who signed it.

Checks run on a small fixed pool of threads, each check in a sandboxed child process of its
own, taken from a pool of warm children that have imported pyHanko already (see
:mod:`workflow.sandbox`; ``COUNTERPART_SANDBOX_SPARE`` sets how many wait, 0 starts each check
cold), with a bounded number waiting their turn: a request thread waits for its own answer, but
no more than ``VERIFY_WORKERS + VERIFY_WAITING`` request threads can be waiting at once, and
beyond that a check is answered 503 with Retry-After at once. So files that are slow to check
cannot take every request thread and stop sign-in or the letters page. Each client is also
limited in how many files it may check a minute (see :mod:`web.ratelimit`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from werkzeug.wrappers import Response

from workflow.errors import DocumentError
from workflow.proof import verify_document

from .auth import public
from .database import get_db
from .execution import get_sealer, upload_limit

__all__ = ["bp", "VerificationQueue", "VerificationBusy", "verify_upload", "api_answer",
           "RETRY_AFTER_SECONDS"]

bp = Blueprint("verify", __name__)

EXTENSION = "counterpart.verify"
RETRY_AFTER_SECONDS = 10
BUSY_MESSAGE = ("The server is busy checking other files. Try again in a few seconds; the "
                "file was not kept.")
_queue_lock = threading.Lock()
T = TypeVar("T")


class VerificationBusy(Exception):
    """Every worker is checking a file and every waiting place is taken."""


class VerificationQueue:
    """Run checks on ``workers`` threads, with at most ``waiting`` more queued behind them."""

    def __init__(self, workers: int, waiting: int) -> None:
        self.workers = workers
        self.waiting = waiting
        self._places = threading.BoundedSemaphore(workers + waiting)
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="counterpart-verify")

    def run(self, check: Callable[..., T], *args: Any) -> T:
        """Run ``check(*args)`` on the pool and return its result; VerificationBusy if full."""
        if not self._places.acquire(blocking=False):
            raise VerificationBusy(BUSY_MESSAGE)
        try:
            future = self._executor.submit(check, *args)
        except BaseException:
            self._places.release()
            raise
        future.add_done_callback(lambda _done: self._places.release())
        return future.result()

    def close(self) -> None:
        """Finish the checks under way and stop the threads."""
        self._executor.shutdown(wait=True)


def verification_queue(app: Flask | None = None) -> VerificationQueue:
    """Return the app's queue of checks, made on first use from its settings."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    queue = app.extensions.get(EXTENSION)
    if queue is None:
        with _queue_lock:
            queue = app.extensions.get(EXTENSION)
            if queue is None:
                queue = VerificationQueue(app.config.get("VERIFY_WORKERS", 2),
                                          app.config.get("VERIFY_WAITING", 2))
                app.extensions[EXTENSION] = queue
    return queue


def verify_upload(data: bytes) -> dict[str, Any]:
    """Check uploaded bytes on the queue: VerificationBusy if it is full, DocumentError if
    the file is over the limits of a check."""
    return verification_queue().run(verify_document, get_db(), data, get_sealer())


def api_answer(data: bytes) -> Response:
    """Answer ``POST /api/verify`` for uploaded bytes: 200, 422 over a limit, 503 when busy."""
    try:
        response = jsonify(verify_upload(data))
    except DocumentError as exc:
        response = jsonify(error=str(exc))
        response.status_code = 422
    except VerificationBusy as exc:
        response = jsonify(error=str(exc))
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _form(error: str, status: int) -> tuple[str, int]:
    return render_template("verify.html", result=None, public_page=True, error=error), status


@bp.route("/verify", methods=["GET", "POST"])
@public
def verify() -> tuple[str, int] | Response:
    """The form, and after an upload the answer for that file."""
    if request.method == "GET":
        return render_template("verify.html", result=None, public_page=True), 200
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _form("Choose a PDF file to check.", 400)
    limit = upload_limit()
    data = upload.read(limit + 1)
    if len(data) > limit:
        return _form(f"The file is larger than {limit // (1024 * 1024)} MB, the largest file "
                     f"accepted.", 413)
    try:
        result = verify_upload(data)
    except DocumentError as exc:
        return _form(str(exc), 422)
    except VerificationBusy as exc:
        page, status = _form(str(exc), 503)
        response = current_app.make_response((page, status))
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    result["sealed_at_time"] = _when(result.get("sealed_at"))
    for signer in result["signers"]:
        signer["signed_at_time"] = _when(signer.get("signed_at"))
    return render_template("verify.html", result=result, filename=upload.filename[:120],
                           size=len(data), public_page=True), 200
