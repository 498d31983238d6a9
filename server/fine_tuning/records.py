"""What the file store and the job store share: ids, atomic JSON writes, the 404 they raise.

Ids are made here and checked here: an id from a request is matched against its exact
pattern before it is ever joined to a path, so no request string reaches the filesystem.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from lampstand.plugins.durable_files import reserve_temp, write_file_atomically
from lampstand.plugins.errors import NotFound

__all__ = ["NotFound", "new_id", "check_id", "write_atomic", "short_id", "paginate"]

_HEX = 24


class _HasId(Protocol):
    id: str


T = TypeVar("T", bound=_HasId)


def new_id(prefix: str) -> str:
    """A fresh id such as `file-<24 hex>` or `ftjob-<24 hex>`."""
    return f"{prefix}-{uuid.uuid4().hex[:_HEX]}"


def check_id(value: str, prefix: str, what: str, param: str = "id") -> str:
    """`value` if it has the shape of an id made by `new_id(prefix)`; otherwise 404 naming it."""
    if not re.fullmatch(rf"{re.escape(prefix)}-[0-9a-f]{{{_HEX}}}", value):
        raise NotFound(f"No such {what}: {value[:100]!r}", param=param)
    return value


def short_id(value: str) -> str:
    """The last eight hex digits of an id, for names a person reads."""
    return value[-8:]


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, durably: readers see the old file or the new one."""
    write_file_atomically(path, text, temp=reserve_temp(path))  # a unique temp: threads may race


def paginate(items: Sequence[T], after: str | None, limit: int) -> tuple[list[T], bool]:
    """The `limit` items that follow the one whose id is `after` (from the start without it),
    and whether more follow; 404 when no item has that id."""
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(items) if item.id == after), -1)
        if start < 0:
            raise NotFound(f"No object with id {after[:100]!r} to list after", param="after")
    page = list(items[start:start + limit])
    return page, start + limit < len(items)
