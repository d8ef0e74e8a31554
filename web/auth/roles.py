"""What each role may do, for every route: checked before every request, like signing in.

Roles (:data:`workflow.accounts.ROLES`): ``admin`` may do everything; ``staff`` may work on
letters (create, edit, send, upload, void) but not manage templates, users, webhooks or
settings; ``read_only`` sees letters and downloads them and changes nothing.

The rule for a route, first match wins:

1. a view marked :func:`requires` (or :func:`any_role`) needs that role;
2. the endpoints of :data:`READ_ONLY_ACTIONS` are POSTs any signed-in account may make (the
   recorded downloads, one's own password and two-factor sign-in) and those of
   :data:`STAFF_PAGES` are pages that lead only to changes (the forms of a new letter, of new
   terms, of a paper upload's review), for staff;
3. every route of an admin area (an ``admin`` blueprint, ``/admin/…`` or ``/api/admin/…``)
   needs an administrator, and so does any change to the template library through the API
   (a POST, PUT, PATCH or DELETE under ``/api/templates``);
4. any other GET or HEAD may be made by every role, and anything else needs staff.

So a route added later is at worst closed to read-only accounts, and an admin area's new page
is closed to all but administrators, without anyone remembering to say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import current_app, g, jsonify, make_response, render_template, request
from werkzeug.wrappers import Response

from workflow.accounts import ROLE_LABELS, role_at_least

__all__ = ["requires", "any_role", "required_role", "check_role", "READ_ONLY_ACTIONS",
           "STAFF_PAGES", "ADMIN_BLUEPRINT_PREFIX"]

F = TypeVar("F", bound=Callable[..., object])

READ_ONLY_ACTIONS = frozenset({
    # Recorded downloads: a POST only so that the download is written in the audit record.
    "letters.executed_pdf", "letters.signed_counterpart", "letters.counterparts_zip",
    "letters.blank_counterpart", "api.executed_pdf", "api.signed_counterpart",
    "api.counterparts_zip", "api.blank_counterpart",
    # One's own account.
    "auth.change_password", "auth.two_factor", "auth.two_factor_setup", "auth.two_factor_disable",
    "auth.recovery_codes", "auth.two_factor_settings",
})
STAFF_PAGES = frozenset({"letters.new_letter", "letters.edit", "letters.review_upload"})
ADMIN_BLUEPRINT_PREFIX = "admin"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reading these is for everyone (letters are made from templates); changing them is not.
ADMIN_WRITE_PATHS = ("/api/templates",)


def requires(role: str) -> Callable[[F], F]:
    """Mark a view as needing ``role`` (or a more powerful one)."""
    def mark(view: F) -> F:
        view.required_role = role  # type: ignore[attr-defined]
        return view
    return mark


def any_role(view: F) -> F:
    """Mark a view, even one that changes something, as open to every signed-in role."""
    view.required_role = "read_only"  # type: ignore[attr-defined]
    return view


def _in_admin_area(endpoint: str, path: str) -> bool:
    blueprint = endpoint.rpartition(".")[0]
    return blueprint == ADMIN_BLUEPRINT_PREFIX or blueprint.startswith(
        ADMIN_BLUEPRINT_PREFIX + "_") or path == "/admin" or path.startswith(
        ("/admin/", "/api/admin/"))


def required_role(endpoint: str, method: str, path: str) -> str:
    """Name the least role that may make this request (see the module's rule)."""
    view = current_app.view_functions.get(endpoint)
    marked = getattr(view, "required_role", None)
    if isinstance(marked, str):
        return marked
    if endpoint in READ_ONLY_ACTIONS:
        return "read_only"
    if endpoint in STAFF_PAGES:
        return "staff"
    if _in_admin_area(endpoint, path):
        return "admin"
    if method not in SAFE_METHODS and (path in ADMIN_WRITE_PATHS or path.startswith(
            tuple(prefix + "/" for prefix in ADMIN_WRITE_PATHS))):
        return "admin"
    return "read_only" if method in SAFE_METHODS else "staff"


def _refusal(needed: str) -> Response:
    role = g.user.role
    if needed == "admin":
        message = ("Only administrators may manage templates, users, webhooks and settings; "
                   f"your account's role is {ROLE_LABELS.get(role, role)}.")
    else:
        message = ("Your account is read-only: it may see letters and download them, but not "
                   "change anything. Ask an administrator if you need to.")
    if request.path.startswith("/api/") or getattr(
            current_app.view_functions.get(request.endpoint or ""), "answers_json", False):
        response = jsonify(error=message, role=role, required_role=needed)
    else:
        response = make_response(render_template("error.html", code=403, title="Not allowed",
                                                 message=message))
    response.status_code = 403
    return response


def check_role() -> Response | None:
    """Answer 403 before the view runs when the signed-in account's role may not do this."""
    if request.endpoint is None or g.get("user") is None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "is_public", False):
        return None
    needed = required_role(request.endpoint, request.method, request.path)
    if role_at_least(g.user.role, needed):
        return None
    return _refusal(needed)
