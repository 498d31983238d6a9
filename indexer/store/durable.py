"""The index store's durable writes and its single-writer lock; nothing here knows what an index is.

Files are published crash-safely by `lampstand.plugins.durable_files` (temp sibling, fsync,
rename, fsync the directory), re-exported here for the store's modules. The writer lock is an
advisory `flock`: the kernel releases it when its holder dies, so a killed writer never leaves
a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from lampstand.plugins.durable_files import TEMP_SUFFIX, fsync_dir, publish_file, write_file_atomically

from .errors import StoreLocked

__all__ = ["TEMP_SUFFIX", "WriterLock", "fsync_dir", "publish_file", "write_file_atomically"]


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
