"""Cutting a file's text into `Chunk`s that fit the embedder: one entry, one strategy per kind.

`chunk_file` picks the strategy for the file's kind from `CHUNKERS` (Markdown sections,
plain-text and reStructuredText paragraphs, syntax-tree code, PDF pages) and sizes chunks with a
`TokenBudget`: by default at most 256 tokens (the limit of the bundled all-MiniLM-L6-v2
embedder) with about 32 tokens of overlap where text is cut mid-flow, counted by a cheap
estimate; `TokenBudget.from_tokenizer_file` counts exactly with the model's tokenizer.

Every chunk's lines are 1-based and inclusive, and its text is exactly the file's lines in
that range, with two exceptions: code pieces cut out of a large definition start with the
enclosing signatures, and a single line longer than the budget is cut at sentences, then
words, then characters, so the chunks holding it start or end inside that line. Chunkers
are pure functions of the text: no files, no engines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..chunks import Chunk, ChunkKind
from .budget import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    TokenBudget,
    TokenCounter,
    approx_token_count,
    tokenizer_counter,
)
from .code import chunk_code
from .markdown import chunk_markdown
from .pdf import chunk_pdf
from .text import chunk_rst, chunk_text

__all__ = [
    "CHUNKERS",
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_OVERLAP_TOKENS",
    "Chunker",
    "TokenBudget",
    "TokenCounter",
    "approx_token_count",
    "chunk_code",
    "chunk_file",
    "chunk_markdown",
    "chunk_pdf",
    "chunk_rst",
    "chunk_text",
    "tokenizer_counter",
]

Chunker = Callable[[str, str, str, TokenBudget], list[Chunk]]
"""`(path_rel, text, language, budget) -> chunks`: one strategy."""

CHUNKERS: Mapping[str, Chunker] = {
    "markdown": chunk_markdown,
    "text": chunk_text,
    "rst": chunk_rst,
    "code": chunk_code,
    "pdf": chunk_pdf,
}
"""Chunk kind to its strategy."""

DEFAULT_BUDGET = TokenBudget()
"""256 tokens, 32 of overlap, counted by `approx_token_count`."""


def chunk_file(
    path_rel: str,
    text: str,
    language: str,
    kind: ChunkKind,
    budget: TokenBudget = DEFAULT_BUDGET,
) -> list[Chunk]:
    """The chunks of one file's text, in line order, by the strategy for its kind.

    `path_rel` is the file's path relative to the indexed root, with `/` separators;
    `language` and `kind` are as `lampstand.indexer.sources.file_type` gives them.
    """
    chunker = CHUNKERS.get(kind)
    if chunker is None:
        raise ValueError(f"no chunker for kind {kind!r}; known: {', '.join(CHUNKERS)}")
    return chunker(path_rel, text, language, budget)
