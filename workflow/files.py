"""Atomic file writes: a reader sees the old file or the new one, never a part of either; and
private files and folders, which only the user running Counterpart can read."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "make_private_folder", "make_private_file", "PRIVATE_FOLDER_MODE",
           "PRIVATE_FILE_MODE"]

PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_folder(path: Path) -> Path:
    """Create a folder only its owner can enter (0700), or take others' access away from it."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        with contextlib.suppress(PermissionError):  # someone else's folder: leave it be
            os.chmod(path, mode & ~0o077 | PRIVATE_FOLDER_MODE)
    return path


def make_private_file(path: Path) -> Path:
    """Create an empty file only its owner can read (0600) if missing, or make it so."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            with contextlib.suppress(PermissionError):
                os.chmod(path, PRIVATE_FILE_MODE)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
