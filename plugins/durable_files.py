"""Crash-safe publishing of files and folders: the one place lampstand writes "atomically".

A file is published by writing a temporary sibling, fsyncing it, renaming it over the target
and fsyncing the directory, so a reader sees either the old file or the new one, never a
half-written one, and a crash at any point leaves one of the two. A folder is published the
same way: its files are fsynced, it is renamed into place, and its parent is fsynced.

Standard library only, and below every other package (the indexer's store, the training
recipe, the server's file and job stores all call it), so importing it costs nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["TEMP_SUFFIX", "fsync_dir", "publish_file", "publish_folder", "reserve_temp", "write_file_atomically"]

TEMP_SUFFIX = ".tmp"
T = TypeVar("T")


def fsync_dir(directory: Path) -> None:
    """Make renames and creations inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reserve_temp(target: Path, prefix: str | None = None, suffix: str = TEMP_SUFFIX) -> Path:
    """A new empty private (0600) file beside `target` with a name no other writer has.

    For targets that several threads or processes may publish at once; its name is
    `prefix` (default `.<target name>-`), random characters, then `suffix`.
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}-" if prefix is None else prefix, suffix=suffix,
                                dir=target.parent)
    os.close(fd)
    return Path(name)


def publish_file(target: Path, write: Callable[[Path], T], *, temp: Path | None = None) -> T:
    """Have `write` fill a temporary sibling of `target`, then make it `target` atomically.

    The sibling is `temp` (see `reserve_temp`), by default `<target>.<pid>.tmp`; it is removed
    when anything fails. Returns what `write` returned.
    """
    temp = temp if temp is not None else target.with_name(f"{target.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        result = write(temp)
        _fsync_file(temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return result


def write_file_atomically(target: Path, data: bytes | str, *, temp: Path | None = None) -> None:
    """Replace `target` with `data` (text is written as UTF-8), durably and atomically."""
    body = data.encode("utf-8") if isinstance(data, str) else data
    publish_file(target, lambda path: path.write_bytes(body), temp=temp)


def publish_folder(temp: Path, target: Path) -> None:
    """Rename the finished folder `temp` to `target` (which must not exist) once its files are durable.

    Raises OSError when the rename fails, as when another writer published `target` first.
    """
    for path in temp.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            fsync_dir(path)
        elif path.is_file():
            _fsync_file(path)
    fsync_dir(temp)
    temp.rename(target)
    fsync_dir(target.parent)
