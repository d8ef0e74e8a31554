"""Jinja filters the pages share: times, sizes.

Staff pages write every timestamp with :func:`time_tag`: a ``<time>`` element holding the UTC
time as text (so it reads right without JavaScript) and in its ``title``; the script
``static/js/local-time.js`` then rewrites the text into the browser's own time zone, keeping
the UTC time on hover. Signers' pages use :func:`zone_time` instead: the signer's zone when
it is known, written by the server.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask
from markupsafe import Markup, escape

__all__ = ["init_app", "utc_time", "iso_time", "time_tag", "zone_time", "file_size"]


def utc_time(value: dt.datetime | None) -> str:
    """Format a timestamp as "Jul 24, 2006, 14:05 UTC"."""
    if value is None:
        return ""
    value = value.astimezone(dt.UTC)
    return f"{value:%b} {value.day}, {value.year}, {value:%H:%M} UTC"


def iso_time(value: dt.datetime | None) -> str:
    """Format a timestamp for a ``<time datetime>`` attribute."""
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value else ""


def time_tag(value: dt.datetime | None) -> Markup:
    """Write a timestamp for staff: ``<time datetime title data-local>`` with the UTC text,
    which the page's script shows in the browser's zone."""
    if value is None:
        return Markup("")
    text = utc_time(value)
    return Markup('<time datetime="{}" title="{}" data-local>{}</time>').format(
        iso_time(value), text, text)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_time(value: dt.datetime | None, zone_name: str | None = None) -> Markup:
    """Write a timestamp for a signer: in their IANA zone when known ("Jul 24, 2006, 10:05
    EDT (America/New_York)"), else in UTC; the UTC time is in the title either way."""
    if value is None:
        return Markup("")
    zone = _zone(zone_name)
    utc_text = utc_time(value)
    if zone is None or zone_name == "UTC":
        text = utc_text
    else:
        local = value.astimezone(zone)
        text = (f"{local:%b} {local.day}, {local.year}, {local:%H:%M} {local.tzname()} "
                f"({zone_name})")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        iso_time(value), utc_text, escape(text))


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
    app.add_template_filter(time_tag)
    app.add_template_filter(zone_time)
    app.add_template_filter(file_size)
