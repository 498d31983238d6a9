"""Durable file operations and the single-writer lock; nothing here knows what an index is.

A file is published by writing a temporary sibling, fsyncing it, renaming it over the target
and fsyncing the directory, so a reader sees either the old file or the new one, never a
half-written one, and a crash at any point leaves one of the two. The writer lock is an
advisory `flock`: the kernel releases it when its holder dies, so a killed writer never leaves
a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from .errors import StoreLocked

__all__ = ["TEMP_SUFFIX", "WriterLock", "fsync_dir", "publish_file", "write_file_atomically"]

TEMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make renames and creations inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_file(target: Path, write: Callable[[Path], object]) -> None:
    """Have `write` fill a temporary sibling of `target`, then make it `target` atomically."""
    temp = target.with_name(f"{target.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        write(temp)
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_file_atomically(target: Path, data: bytes) -> None:
    """Replace `target` with `data`, durably and atomically."""
    publish_file(target, lambda temp: temp.write_bytes(data))


class WriterLock:
    """An exclusive, non-blocking `flock` on `<directory>/write.lock`, naming its holder's pid."""

    FILE_NAME = "write.lock"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `StoreLocked` naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise StoreLocked(
                f"the index at {self.path.parent} is being written by another process "
                f"(pid {holder}); wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None
