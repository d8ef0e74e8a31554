"""The web app's settings: every one comes from the environment, with a sensible default.

:func:`config_from_env` is called by :func:`web.create_app`, never at import time, so that a
test or a command can change the environment (or pass overrides) before the app is made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import secrets
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from workflow.db import DATA_DIR_ENV, DATABASE_URL_ENV
from workflow.files import make_private_folder
from workflow.schema import DEFAULT_TEMPLATE_DIR

__all__ = ["ConfigError", "config_from_env", "load_secret_key", "check_secret_key",
           "secret_key_for", "data_dir_from_env", "SECRET_KEY_FILE", "ENV_PREFIX", "MIN_SECRET_KEY_LENGTH"]

ENV_PREFIX = "COUNTERPART_"
SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_LENGTH = 32
# An estimate of the key's randomness from its characters' frequencies: a 32-character hex
# key from secrets.token_hex(16) scores about 115 bits, "password" repeated far less.
MIN_SECRET_KEY_BITS = 96
MEGABYTE = 1024 * 1024


class ConfigError(ValueError):
    """An environment variable holds a value the app cannot use."""


def _text(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(ENV_PREFIX + name, "").strip() or default


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"{ENV_PREFIX}{name} must be at least {minimum}, not {value}.")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name).lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name} must be true or false, not {raw!r}.")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _text(env, name)
    return Path(raw).expanduser() if raw else None


def _proxy_address(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _text(env, name, default)
    if raw == "*":
        return raw
    try:
        # The server compares the peer's address as text: write it the one way it is written.
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be an IP address (such as 127.0.0.1) or *, "
                          f"not {raw!r}.") from None


def data_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """Return the data folder: ``COUNTERPART_DATA_DIR`` or ``output/`` in the working folder."""
    env = os.environ if env is None else env
    return Path(env.get(DATA_DIR_ENV, "").strip() or Path.cwd() / "output").resolve()


def config_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the app's settings from environment variables (``os.environ`` by default)."""
    env = os.environ if env is None else env
    return {
        # Where the database (by default), the secret key and later the seal certificate live.
        "DATA_DIR": data_dir_from_env(env),
        # Empty means a SQLite file in the data folder; a PostgreSQL URL works too.
        "DATABASE_URL": env.get(DATABASE_URL_ENV, "").strip() or None,
        # Empty means: generated on first run and kept in DATA_DIR/secret_key.
        "SECRET_KEY": _text(env, "SECRET_KEY") or None,
        "DOCX_TEMPLATE_DIR": Path(_text(env, "DOCX_TEMPLATE_DIR", str(DEFAULT_TEMPLATE_DIR))),
        "MAX_CONTENT_LENGTH": _integer(env, "MAX_UPLOAD_MB", 25, minimum=1) * MEGABYTE,
        "SESSION_COOKIE_SECURE": _flag(env, "SECURE_COOKIES", False),
        "SESSION_HOURS": _integer(env, "SESSION_HOURS", 12, minimum=1),
        # Behind a reverse proxy, how many proxies' X-Forwarded-* headers to trust, and (under
        # `counterpart serve`) the address the nearest proxy connects from: "*" trusts any.
        "PROXY_COUNT": _integer(env, "PROXY_COUNT", 0),
        "TRUSTED_PROXY": _proxy_address(env, "TRUSTED_PROXY", "127.0.0.1"),
        "DOWNLOAD_WAIT_SECONDS": _integer(env, "DOWNLOAD_WAIT_SECONDS", 120, minimum=1),
        "LETTERS_PER_PAGE": _integer(env, "LETTERS_PER_PAGE", 25, minimum=1),
        "PREVIEW_DPI": _integer(env, "PREVIEW_DPI", 100, minimum=36),
        # The seal of executed letters: a PKCS#12 file and its password, or (without one) a
        # self-signed certificate made on first use in DATA_DIR/seal/; and an optional RFC 3161
        # time-stamp server.
        "SEAL_PKCS12": _path(env, "SEAL_PKCS12"),
        "SEAL_PKCS12_PASSWORD": env.get(ENV_PREFIX + "SEAL_PKCS12_PASSWORD") or None,
        "TIMESTAMP_URL": _text(env, "TIMESTAMP_URL") or None,
        # Failed sign-ins, unknown API tokens and guessed signing links allowed per client.
        "RATE_LIMIT_FAILURES": _text(env, "RATE_LIMIT_FAILURES", "10 per minute"),
        # Failed sign-ins allowed per account, whatever address they come from.
        "RATE_LIMIT_ACCOUNT_FAILURES": _text(env, "RATE_LIMIT_ACCOUNT_FAILURES",
                                             "20 per 15 minutes"),
        # Files checked at /verify and /api/verify per client, failed or not.
        "RATE_LIMIT_VERIFY": _text(env, "RATE_LIMIT_VERIFY", "20 per minute"),
        # Seal checks run at once (each in a child process), and how many more may wait their
        # turn; beyond that a check is answered 503 at once instead of holding a request thread.
        "VERIFY_WORKERS": _integer(env, "VERIFY_WORKERS", 2, minimum=1),
        "VERIFY_WAITING": _integer(env, "VERIFY_WAITING", 2),
        # Shared counters (rate limits) for several app servers; empty means this process.
        "REDIS_URL": _text(env, "REDIS_URL") or None,
        # Outgoing mail: the signing links; no host means no mail is sent.
        "SMTP_HOST": _text(env, "SMTP_HOST") or None,
        "SMTP_PORT": _integer(env, "SMTP_PORT", 587, minimum=1),
        "SMTP_USERNAME": _text(env, "SMTP_USERNAME") or None,
        "SMTP_PASSWORD": env.get(ENV_PREFIX + "SMTP_PASSWORD") or None,
        "SMTP_STARTTLS": _flag(env, "SMTP_STARTTLS", True),
        "SMTP_FROM": _text(env, "SMTP_FROM") or None,
        # The app's public address, for links in emails and webhooks sent by background jobs
        # (which have no request to take it from).
        "BASE_URL": _base_url(env),
        # The job queue: empty means the embedded default (DATA_DIR/queue.db, or the
        # PostgreSQL database itself); "immediate" runs jobs in the web process (development);
        # redis://... uses Redis. See web/jobs.py.
        "QUEUE_URL": _text(env, "QUEUE_URL") or None,
        # "none": `counterpart serve` starts no worker (run `counterpart worker` beside it).
        "WORKER": _choice(env, "WORKER", ("child", "none"), "child"),
        "WORKER_THREADS": _integer(env, "WORKER_THREADS", 2, minimum=1),
        # A worker's heartbeat, and how long a silent worker's jobs wait before another takes
        # them over; how often an idle worker looks at the queue at most (milliseconds).
        "QUEUE_HEARTBEAT_SECONDS": _integer(env, "QUEUE_HEARTBEAT_SECONDS", 5, minimum=1),
        "QUEUE_DEAD_AFTER_SECONDS": _integer(env, "QUEUE_DEAD_AFTER_SECONDS", 60, minimum=2),
        "QUEUE_POLL_MS": _integer(env, "QUEUE_POLL_MS", 2000, minimum=10),
        # Webhooks go only to public addresses unless this is true (tests, private networks);
        # a receiver that has not answered within this many seconds has failed the attempt.
        "WEBHOOK_ALLOW_PRIVATE": _flag(env, "WEBHOOK_ALLOW_PRIVATE", False),
        "WEBHOOK_TIMEOUT_SECONDS": _integer(env, "WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1),
    }


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = _text(env, name, default).lower()
    if raw not in choices:
        raise ConfigError(f"{ENV_PREFIX}{name} must be one of {', '.join(choices)}, "
                          f"not {raw!r}.")
    return raw


def _base_url(env: Mapping[str, str]) -> str:
    raw = _text(env, "BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    parsed = urlsplit(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query:
        raise ConfigError(f"{ENV_PREFIX}BASE_URL must be the app's address, such as "
                          f"https://sign.example.com, not {raw!r}.")
    return raw


def _estimated_bits(key: str) -> float:
    counts = Counter(key)
    return -sum(n * math.log2(n / len(key)) for n in counts.values())


def _repeats(key: str) -> bool:
    """Say whether the key is a shorter piece written again and again ("abcabcabc...")."""
    return any(key == (key[:size] * (len(key) // size + 1))[:len(key)]
               for size in range(1, len(key) // 2 + 1))


def check_secret_key(key: str | bytes, source: str = f"{ENV_PREFIX}SECRET_KEY") -> None:
    """Refuse a secret key that is short or predictable, with a message naming ``source``."""
    text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
    problem = None
    if len(text) < MIN_SECRET_KEY_LENGTH:
        problem = f"it has {len(text)} characters; it needs at least {MIN_SECRET_KEY_LENGTH}"
    elif _repeats(text) or _estimated_bits(text) < MIN_SECRET_KEY_BITS:
        problem = "it is too regular to be random (repeated characters or a repeated pattern)"
    if problem:
        raise ConfigError(
            f"{source} is not a usable secret key: {problem}. It signs every session and "
            "form, so it must be long and random: set it to the output of "
            "`python3 -c 'import secrets; print(secrets.token_hex(32))'`, or leave it unset "
            f"to have one generated into the data folder's {SECRET_KEY_FILE} file.")


def secret_key_for(settings: Mapping[str, Any]) -> str | bytes:
    """Return the secret key the settings give, checked (:func:`check_secret_key`), or else
    the data folder's (:func:`load_secret_key`, made on first use). Raises ConfigError."""
    if settings.get("SECRET_KEY"):
        check_secret_key(settings["SECRET_KEY"])
        key: str | bytes = settings["SECRET_KEY"]
        return key
    return load_secret_key(Path(settings["DATA_DIR"]))


def load_secret_key(data_dir: Path) -> str:
    """Return the instance's secret key, generating it into the data folder on first use.

    The key is written to a private temporary file and linked into place, so two processes
    starting at once agree on one key and no reader ever sees a partial file.
    """
    make_private_folder(data_dir)
    path = data_dir / SECRET_KEY_FILE
    if not path.exists():
        tmp = data_dir / f".{SECRET_KEY_FILE}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # fails if another process got there first: use its key
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(f"{path} holds no usable secret key; delete it to make a new one.")
    check_secret_key(key, str(path))
    return key
