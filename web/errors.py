"""Errors as answers: a page for people, JSON for the API, never a stack trace.

Domain errors reach the views as :class:`workflow.errors.CounterpartError` and become an HTTP
status here: not found 404, a forbidden state change 409, invalid terms 422, a signing link
that no longer works 410 (409 while it waits for earlier signers), a scan of a paper
counterpart that fails its checks 422, a full disk 507, anything else the user caused 400.
Refusals that carry a ``code`` (:class:`workflow.errors.ScanCheckError`, the signing order)
answer it beside the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response

from workflow.errors import (
    CounterpartError,
    IdentityError,
    LinkError,
    NotFoundError,
    ScanCheckError,
    StateError,
    StorageFullError,
    TermsError,
)

from .auth import is_api_request

__all__ = ["init_app", "wants_json", "answers_json"]

F = TypeVar("F", bound=Callable[..., object])

TITLES = {
    400: "The request could not be understood",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Not possible right now",
    410: "This link no longer works",
    413: "Too large",
    415: "Unsupported format",
    422: "Please check the values",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Not ready yet",
    507: "The server is full",
}
MESSAGES = {
    404: "There is nothing at this address. It may have been mistyped, or the letter may not "
         "exist.",
    405: "This address does not accept that kind of request.",
    500: "Something went wrong on our side. The error has been logged; please try again.",
}
CSRF_MESSAGE = ("The form could not be accepted because its security token is missing or out "
                "of date. Go back, reload the page and submit it again.")


def answers_json(view: F) -> F:
    """Mark a view outside the API whose errors, like its answers, are JSON."""
    view.answers_json = True  # type: ignore[attr-defined]
    return view


def wants_json() -> bool:
    """Say whether the answer should be JSON rather than a page."""
    view = current_app.view_functions.get(request.endpoint or "")
    if is_api_request() or getattr(view, "answers_json", False):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > \
        request.accept_mimetypes["text/html"]


def _readable_size(count: int) -> str:
    if count < 1024 * 1024:
        return f"{max(1, count // 1024)} KB"
    return f"{count / (1024 * 1024):.1f}".removesuffix(".0") + " MB"


def _answer(status: int, message: str, **extra: str) -> Response:
    if wants_json():
        response = jsonify(error=message, **extra)
    else:
        response = make_response(render_template(
            "error.html", code=status, title=TITLES.get(status, "Error"), message=message))
    response.status_code = status
    return response


def handle_http_error(error: HTTPException) -> Response:
    """Answer an HTTP error with a page or JSON carrying its message."""
    code = error.code or 500
    if isinstance(error, InternalServerError):
        message = MESSAGES[500]
    elif isinstance(error, CSRFError):
        message = CSRF_MESSAGE
    elif code == 413:
        limit = request.max_content_length
        size = f" The limit is {_readable_size(limit)}." if limit else ""
        message = f"The request is too large.{size}"
    elif error.description and error.description != type(error).description:
        message = error.description
    else:
        message = MESSAGES.get(code, error.description or TITLES.get(code, "Error"))
    response = _answer(code, message)
    for name, value in error.get_headers():
        if name.lower() != "content-type":  # keep Allow, Retry-After, WWW-Authenticate
            response.headers[name] = value
    return response


def handle_domain_error(error: CounterpartError) -> Response:
    """Answer an error the domain raised on purpose."""
    if isinstance(error, TermsError):
        if wants_json():
            response = jsonify(error="The terms are not valid.", errors=error.errors)
            response.status_code = 422
            return response
        return _answer(422, str(error))
    if isinstance(error, IdentityError):
        # The signer must first confirm their email with a code (403), or asked for one too
        # soon (429).
        return _answer(429 if error.code == "too_soon" else 403, str(error), code=error.code
                       or "identity")
    if isinstance(error, LinkError):
        # Waiting for earlier signers passes; an expired, used or withdrawn link is gone.
        return _answer(409 if error.reason == "waiting" else 410, str(error),
                       reason=error.reason)
    if isinstance(error, NotFoundError):
        return _answer(404, str(error))
    if isinstance(error, StorageFullError):
        return _answer(507, str(error))
    # A refusal with a code also tells programs which one it is.
    code = {"code": error.code} if error.code else {}
    if isinstance(error, StateError):
        return _answer(409, str(error), **code)
    if isinstance(error, ScanCheckError):
        return _answer(422, str(error), **code)
    return _answer(400, str(error), **code)


def init_app(app: Flask) -> None:
    """Register the error handlers."""
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(CounterpartError, handle_domain_error)
