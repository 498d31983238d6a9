"""The named indexes in one folder: what each one indexes, and where its store lives.

Layout: `<dir>/<name>/index.json` (the definition: roots, include/exclude globs, store kind)
and `<dir>/<name>/store/` (the `ChunkStore`). A definition is written atomically; an index
folder without one is not an index. This module reads and writes definitions only; it never
scans sources, embeds or searches.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lampstand.plugins.errors import InvalidRequest

from .store import StoreConflict, StoreNotFound
from .store.durable import write_file_atomically

__all__ = ["IndexDefinition", "IndexLibrary", "check_index_name"]

DEFINITION_FILE = "index.json"
STORE_FOLDER = "store"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # whole names only: fullmatch


def check_index_name(name: str) -> str:
    """`name` if it can name an index (and a folder): lowercase letters, digits, `_.-`."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"invalid index name {name!r}: use 1-64 lowercase letters, digits, '_', '.', '-', "
            "starting with a letter or digit", param="name")
    return name


@dataclass(frozen=True)
class IndexDefinition:
    """What one index covers. `roots` are absolute folders or files; globs use gitignore syntax."""

    name: str
    roots: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    store: str = "faiss"
    created: int = field(default_factory=lambda: int(time.time()))

    def to_json(self) -> bytes:
        """The definition file's bytes."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> IndexDefinition:
        """Read a definition file; tuples come back as tuples."""
        raw = json.loads(data)
        return cls(name=raw["name"], roots=tuple(raw["roots"]), include=tuple(raw.get("include", ())),
                   exclude=tuple(raw.get("exclude", ())), store=raw.get("store", "faiss"),
                   created=int(raw.get("created", 0)))


class IndexLibrary:
    """The indexes under one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def folder(self, name: str) -> Path:
        """The folder of index `name` (which may not exist)."""
        return self.directory / check_index_name(name)

    def store_dir(self, name: str) -> Path:
        """Where index `name` keeps its `ChunkStore`."""
        return self.folder(name) / STORE_FOLDER

    def names(self) -> list[str]:
        """Every index with a definition, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.parent.name for p in self.directory.glob(f"*/{DEFINITION_FILE}")
                      if NAME_PATTERN.fullmatch(p.parent.name))

    def get(self, name: str) -> IndexDefinition:
        """The definition of `name`; `StoreNotFound` (404) when there is none."""
        path = self.folder(name) / DEFINITION_FILE
        try:
            return IndexDefinition.from_json(path.read_bytes())
        except FileNotFoundError:
            raise StoreNotFound(f"no index named {name!r}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreNotFound(f"index {name!r} has an unreadable definition: {exc}") from None

    def exists(self, name: str) -> bool:
        """Whether `name` has a definition."""
        return (self.folder(name) / DEFINITION_FILE).is_file()

    def create(self, definition: IndexDefinition) -> IndexDefinition:
        """Record a new index; `StoreConflict` (409) when the name is taken."""
        if self.exists(definition.name):
            raise StoreConflict(f"index {definition.name!r} exists; update it, or remove it first")
        self.save(definition)
        return definition

    def save(self, definition: IndexDefinition) -> None:
        """Write (or overwrite) a definition atomically."""
        folder = self.folder(definition.name)
        folder.mkdir(parents=True, exist_ok=True)
        write_file_atomically(folder / DEFINITION_FILE, definition.to_json())

    def remove(self, name: str) -> None:
        """Delete the index: its definition first (so it stops being listed), then its files."""
        folder = self.folder(name)
        if not self.exists(name):
            raise StoreNotFound(f"no index named {name!r}")
        (folder / DEFINITION_FILE).unlink()
        shutil.rmtree(folder, ignore_errors=True)
