"""What the indexer stores: a chunk of one file with where it came from.

Chunkers produce `Chunk`s; stores keep them beside their vectors; search returns them.
Engine-free and dependency-free: everything here is plain data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

__all__ = ["Chunk", "ChunkKind", "content_hash"]

ChunkKind = Literal["markdown", "text", "code", "rst", "pdf"]


def content_hash(text: str) -> str:
    """A chunk's identity by content: sha256 of its UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Chunk:
    """One searchable piece of a source file.

    `path` is relative to the indexed root, with `/` separators. Lines are 1-based and
    inclusive. `context` is the heading path of a Markdown section (`("Install", "Linux")`)
    or the symbol path of code (`("class Store", "def add")`); `text` is what is embedded and
    shown, and for code split inside a symbol it starts with the enclosing signature.
    """

    path: str
    start_line: int
    end_line: int
    language: str  # "python", "markdown", "text", ...
    kind: ChunkKind
    text: str
    context: tuple[str, ...] = ()

    @property
    def hash(self) -> str:
        """sha256 of `text`."""
        return content_hash(self.text)

    @property
    def chunk_id(self) -> str:
        """Stable id: the same text at the same place in the same file gets the same id."""
        key = f"{self.path}\0{self.start_line}\0{self.end_line}\0{self.hash}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
