"""Jinja filters the pages share: times, sizes."""

from __future__ import annotations

import datetime as dt

from flask import Flask

__all__ = ["init_app", "utc_time", "file_size"]


def utc_time(value: dt.datetime | None) -> str:
    """Format a timestamp as "Jul 24, 2006, 14:05 UTC"."""
    if value is None:
        return ""
    value = value.astimezone(dt.UTC)
    return f"{value:%b} {value.day}, {value.year}, {value:%H:%M} UTC"


def iso_time(value: dt.datetime | None) -> str:
    """Format a timestamp for a ``<time datetime>`` attribute."""
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value else ""


def file_size(size: int | None) -> str:
    """Format a byte count as "48 KB" or "1.2 MB"."""
    if size is None:
        return ""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def init_app(app: Flask) -> None:
    """Register the filters."""
    app.add_template_filter(utc_time)
    app.add_template_filter(iso_time)
    app.add_template_filter(file_size)
