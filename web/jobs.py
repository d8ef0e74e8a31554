"""The job queue of the app: its storage from the app's settings, and the runtime jobs use.

:func:`init_app` points this process's queue (:mod:`workflow.jobs`) at the storage the
settings choose and builds the :class:`workflow.jobs.Runtime` from the app's resources: the
database, the LibreOffice converter, the seal, the mail settings and ``BASE_URL``. The web
process only enqueues (unless the queue is ``immediate``); ``counterpart worker`` makes the
same app and runs the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from workflow import jobs
from workflow.db import Database

__all__ = ["init_app", "get_runtime", "smtp_settings_from", "worker_options",
           "no_worker_note", "NO_WORKER_NOTE"]

EXTENSION = "counterpart.jobs"
NO_WORKER_NOTE = ("The PDF is waiting for a background worker, and none is running: start "
                  "`counterpart worker`, or restart the server.")

log = logging.getLogger(__name__)


def init_app(app: Flask, db: Database) -> jobs.Runtime:
    """Configure the queue from ``QUEUE_URL``/``DATABASE_URL``/``DATA_DIR`` and give the app
    its job runtime (set as this process's runtime); import every module that declares jobs."""
    config = app.config
    jobs.configure(jobs.queue_url_for(config))
    jobs.discover_tasks()

    def converter() -> Any:
        from .documents import get_documents

        with app.app_context():
            return get_documents().converter

    def sealer() -> Any:
        from .execution import get_sealer

        with app.app_context():
            return get_sealer()

    rt = jobs.Runtime(db, converter=config.get("PDF_CONVERTER") or converter, sealer=sealer,
                      smtp=smtp_settings_from(config), base_url=config["BASE_URL"],
                      settings=dict(config))
    jobs.set_runtime(rt)
    app.extensions[EXTENSION] = rt
    return rt


def get_runtime(app: Flask) -> jobs.Runtime:
    """Return the app's job runtime."""
    return app.extensions[EXTENSION]


def smtp_settings_from(config: Mapping[str, Any]) -> Any:
    """The outgoing mail settings of a configuration, or None without ``SMTP_HOST``."""
    from workflow.mail import SmtpSettings

    if not config.get("SMTP_HOST"):
        return None
    port = int(config["SMTP_PORT"])
    # Port 465 speaks TLS from the first byte; the others upgrade with STARTTLS if asked.
    security = "ssl" if port == 465 else "starttls" if config["SMTP_STARTTLS"] else "none"
    username = config.get("SMTP_USERNAME")
    sender = config.get("SMTP_FROM") or (username if username and "@" in username
                                         else "counterpart@localhost")
    return SmtpSettings(host=config["SMTP_HOST"], port=port, sender=sender, username=username,
                        password=config.get("SMTP_PASSWORD"), security=security)


def worker_options(config: Mapping[str, Any], *, workers: int | None = None) -> jobs.WorkerOptions:
    """The worker settings of a configuration (``WORKER_THREADS``, ``QUEUE_*``)."""
    poll = config["QUEUE_POLL_MS"] / 1000
    return jobs.WorkerOptions(
        workers=workers or config["WORKER_THREADS"],
        heartbeat_seconds=float(config["QUEUE_HEARTBEAT_SECONDS"]),
        dead_after_seconds=float(config["QUEUE_DEAD_AFTER_SECONDS"]),
        poll_seconds=min(0.1, poll), max_poll_seconds=poll)


def no_worker_note(config: Mapping[str, Any]) -> str | None:
    """Return :data:`NO_WORKER_NOTE` when no worker has heartbeated within
    ``QUEUE_DEAD_AFTER_SECONDS``, else None (also when the queue cannot be read: the page
    then says nothing it does not know). Only reads."""
    try:
        running = jobs.worker_running(float(config["QUEUE_DEAD_AFTER_SECONDS"]))
    except jobs.JobsError as exc:
        log.warning("%s", exc)
        return None
    return None if running else NO_WORKER_NOTE
