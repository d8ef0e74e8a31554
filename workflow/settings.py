"""Settings administrators change in the admin pages, kept in the database so that every app
server sees the same value (environment variables are read at start; these are not)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from .models import AppSetting, utcnow

__all__ = ["get_setting", "set_setting", "REQUIRE_TWO_FACTOR", "DEFAULTS"]

REQUIRE_TWO_FACTOR = "require_two_factor"
"""True: every account must sign in with a second factor (set it up after its password)."""

DEFAULTS: dict[str, Any] = {REQUIRE_TWO_FACTOR: False}


def get_setting(session: Session, key: str) -> Any:
    """Return a setting's value, or its default when it was never set."""
    row = session.get(AppSetting, key)
    return DEFAULTS.get(key) if row is None else row.value


def set_setting(session: Session, key: str, value: Any, *, by: str) -> None:
    """Store a setting's new value with who changed it and when."""
    if key not in DEFAULTS:
        raise KeyError(f"unknown setting {key!r}")
    row = session.get(AppSetting, key, with_for_update=True)
    if row is None:
        session.add(AppSetting(key=key, value=value, updated_at=utcnow(), updated_by=by[:254]))
    else:
        row.value, row.updated_at, row.updated_by = value, utcnow(), by[:254]
    session.flush()
