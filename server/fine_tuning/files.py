"""Uploaded files on disk: `<dir>/files/<file-id>` with its `FileObject` in `<file-id>.json`.

The stored name is always the id this module made; the client's filename is kept only as
metadata, reduced to a plain base name. Uploads are copied in chunks, never held whole in
memory, and a file over the size limit is removed before the 413.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import unicodedata
from pathlib import Path
from typing import BinaryIO

from lampstand.plugins.durable_files import publish_file, reserve_temp
from lampstand.plugins.errors import PayloadTooLarge

from .. import protocol as p
from .records import NotFound, check_id, new_id, write_atomic

__all__ = ["FileStore", "sanitize_filename", "FILE_PREFIX"]

FILE_PREFIX = "file"
CHUNK = 1024 * 1024
MAX_FILENAME = 255


def sanitize_filename(name: str | None) -> str:
    """A printable base name of at most 255 characters ("upload" when nothing is left)."""
    base = re.split(r"[\\/]", name or "")[-1]
    printable = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip().lstrip(".")
    return printable[:MAX_FILENAME] or "upload"


class FileStore:
    """The uploaded files in one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        """Create the folder and drop uploads a crash left half-written."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".upload-*"):
            leftover.unlink(missing_ok=True)

    def path(self, file_id: str, param: str = "id") -> Path:
        """The stored content of an existing file; 404 otherwise."""
        path = self.root / check_id(file_id, FILE_PREFIX, "File object", param)
        if not path.is_file() or not path.with_suffix(".json").is_file():
            raise NotFound(f"No such File object: {file_id}", param=param)
        return path

    def save(self, source: BinaryIO, filename: str | None, purpose: str, max_bytes: int,
             limit_name: str = "[fine_tuning] max_file_bytes") -> p.FileObject:
        """Copy `source` into the store (blocking); 413 beyond `max_bytes` (the setting `limit_name`)."""
        file_id = new_id(FILE_PREFIX)
        target = self.root / file_id
        size = publish_file(target, lambda temp: _copy_limited(source, temp, max_bytes, limit_name),
                            temp=reserve_temp(target, prefix=".upload-", suffix=""))
        record = p.FileObject(id=file_id, bytes=size, created_at=int(time.time()), expires_at=None,
                              filename=sanitize_filename(filename), purpose=purpose)
        write_atomic(self.root / f"{file_id}.json", record.model_dump_json())
        return record

    def get(self, file_id: str, param: str = "id") -> p.FileObject:
        """The file's metadata; 404 (naming `param`) for an unknown id."""
        meta = self.path(file_id, param).with_suffix(".json")
        return p.FileObject.model_validate_json(meta.read_text(encoding="utf-8"))

    def all(self) -> list[p.FileObject]:
        """Every stored file, oldest first."""
        found = []
        for meta in self.root.glob(f"{FILE_PREFIX}-*.json"):
            try:
                found.append(p.FileObject.model_validate_json(meta.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # removed meanwhile, or not ours
        return sorted(found, key=lambda f: (f.created_at, f.id))

    def delete(self, file_id: str) -> p.FileDeleted:
        """Remove the file and its metadata (jobs keep their own links to the content)."""
        path = self.path(file_id)
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return p.FileDeleted(id=file_id, deleted=True)

    def link_into(self, file_id: str, target: Path, param: str) -> Path:
        """Give `target` the file's content (a hard link, or a copy across devices)."""
        source = self.path(file_id, param)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return target


def _copy_limited(source: BinaryIO, target: Path, max_bytes: int, limit_name: str) -> int:
    """Copy `source` into `target` in chunks; its size, or 413 beyond `max_bytes`."""
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes ({limit_name})",
                                      param="file")
            out.write(chunk)
    return size
