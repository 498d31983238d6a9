"""Prose shared by Markdown, reStructuredText and plain text: blocks, sections, chunks.

A prose chunker scans its file into `Block`s (a paragraph, a fenced code block, a heading:
runs of lines that are kept together when they fit) and marks which blocks are headings.
`chunk_sections` groups the blocks into sections under their heading path and packs each
section to the budget, so a chunk never spans two sections and its `context` is the path of
headings above it, outermost first. A section holding nothing but its heading is read as
the start of the next section when that is one of its subsections.

Format-specific scanning lives in `markdown.py` and `text.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..chunks import Chunk, ChunkKind
from .budget import TokenBudget
from .packing import Document, fit, pack

__all__ = ["Block", "ChunkTarget", "chunk_blocks", "chunk_sections", "paragraphs"]


@dataclass(frozen=True)
class Block:
    """Lines `first..last` kept together; a heading has a `level` (1 = top) and a `title`."""

    first: int
    last: int
    level: int = 0
    title: str = ""

    @property
    def is_heading(self) -> bool:
        """Whether this block opens a section."""
        return self.level > 0


@dataclass(frozen=True)
class ChunkTarget:
    """Where chunks go: the file's path relative to the root, its language and kind."""

    path: str
    language: str
    kind: ChunkKind


@dataclass
class _Section:
    context: tuple[str, ...]
    level: int
    blocks: list[Block]


def paragraphs(doc: Document, first: int, last: int) -> list[Block]:
    """The runs of non-blank lines in lines `first..last`."""
    blocks: list[Block] = []
    start: int | None = None
    for number in range(first, last + 1):
        blank = not doc.line(number).strip()
        if start is None and not blank:
            start = number
        elif start is not None and blank:
            blocks.append(Block(start, number - 1))
            start = None
    if start is not None:
        blocks.append(Block(start, last))
    return blocks


def _sections(blocks: Sequence[Block]) -> list[_Section]:
    """Split blocks at headings, each section knowing its heading path."""
    sections = [_Section((), 0, [])]
    path: list[tuple[int, str]] = []
    for block in blocks:
        if block.is_heading:
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, block.title))
            sections.append(_Section(tuple(t for _, t in path), block.level, []))
        sections[-1].blocks.append(block)
    return sections


def _kept(sections: list[_Section]) -> list[_Section]:
    """Drop empty sections; a heading-only one followed by its own subsection joins it.

    The subsection's first chunk then starts at the outer heading, so the heading's words are
    searchable text and a search lands on the line where the outer section begins.
    """
    kept: list[_Section] = []
    carried: list[Block] = []
    for i, section in enumerate(sections):
        heading_only = len(section.blocks) == 1 and section.blocks[0].is_heading
        nested_next = i + 1 < len(sections) and sections[i + 1].level > section.level
        if heading_only and nested_next:
            carried += section.blocks
        elif section.blocks:
            kept.append(_Section(section.context, section.level, carried + section.blocks))
            carried = []
    return kept


def chunk_blocks(
    doc: Document,
    blocks: Sequence[Block],
    target: ChunkTarget,
    budget: TokenBudget,
    context: tuple[str, ...] = (),
) -> list[Chunk]:
    """Chunks of one run of blocks: packed to the budget, with overlap across cuts."""
    pieces = fit(doc, [doc.lines_piece(b.first, b.last) for b in blocks], budget.max_tokens)
    return [
        Chunk(
            path=target.path,
            start_line=piece.first_line,
            end_line=piece.last_line,
            language=target.language,
            kind=target.kind,
            text=doc.text_of(piece),
            context=context,
        )
        for piece in pack(pieces, budget.max_tokens, budget.overlap_tokens)
    ]


def chunk_sections(
    doc: Document, blocks: Sequence[Block], target: ChunkTarget, budget: TokenBudget
) -> list[Chunk]:
    """Chunks of each section: its blocks packed to the budget, with overlap across cuts."""
    chunks: list[Chunk] = []
    for section in _kept(_sections(blocks)):
        chunks += chunk_blocks(doc, section.blocks, target, budget, section.context)
    return chunks
