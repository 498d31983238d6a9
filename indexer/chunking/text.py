"""Plain text and reStructuredText chunking: paragraphs packed to the token budget.

Plain text is cut at blank lines only (paragraphs), then packed with overlap; a paragraph
over the budget is cut at lines, then sentences, then words. reStructuredText is read the
same way, except that section titles (a title line underlined, and optionally overlined, with
a repeated punctuation character at least as long as the title) are headings: levels follow
the order in which title styles first appear, as in docutils, and the title path is each
chunk's `context`. Line ranges are exact.
"""

from __future__ import annotations

import re

from ..chunks import Chunk
from .budget import TokenBudget
from .packing import Document
from .sections import Block, ChunkTarget, chunk_sections, paragraphs

__all__ = ["chunk_rst", "chunk_text", "rst_blocks"]

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+[ \t]*$")


def _adornment(doc: Document, number: int) -> str | None:
    """The punctuation character repeated on line `number`, if it is an adornment line."""
    if not 1 <= number <= doc.n_lines:
        return None
    match = _ADORNMENT.match(doc.line(number))
    return match.group(1) if match else None


def _is_title(doc: Document, number: int) -> bool:
    """Whether line `number` is text with an adornment at least as long on the next line."""
    if not 1 <= number < doc.n_lines or _adornment(doc, number) is not None:
        return False
    title = doc.line(number).strip()
    return bool(title) and len(doc.line(number + 1).rstrip()) >= len(title)


def _title_at(doc: Document, number: int) -> tuple[int, int, str, tuple[str, bool]] | None:
    """A section title starting at line `number`: (first, last, title, style)."""
    over = _adornment(doc, number)
    if over and _adornment(doc, number + 2) == over and _is_title(doc, number + 1):
        return number, number + 2, doc.line(number + 1).strip(), (over, True)
    under = _adornment(doc, number + 1)
    if under and _is_title(doc, number):
        return number, number + 1, doc.line(number).strip(), (under, False)
    return None


def rst_blocks(doc: Document) -> list[Block]:
    """Paragraph blocks of a reStructuredText document, section titles marked as headings."""
    blocks: list[Block] = []
    styles: list[tuple[str, bool]] = []
    for paragraph in paragraphs(doc, 1, doc.n_lines):
        number = paragraph.first
        title = _title_at(doc, number)
        if title is None:
            blocks.append(paragraph)
            continue
        first, last, text, style = title
        if style not in styles:
            styles.append(style)
        blocks.append(Block(first, last, styles.index(style) + 1, text))
        if last < paragraph.last:
            blocks.append(Block(last + 1, paragraph.last))
    return blocks


def chunk_text(path: str, text: str, language: str, budget: TokenBudget) -> list[Chunk]:
    """Chunks of a plain text file: paragraphs packed to the budget, no context."""
    doc = Document(text, budget.count)
    target = ChunkTarget(path, language, "text")
    return chunk_sections(doc, paragraphs(doc, 1, doc.n_lines), target, budget)


def chunk_rst(path: str, text: str, language: str, budget: TokenBudget) -> list[Chunk]:
    """Chunks of a reStructuredText file, each with its section title path as `context`."""
    doc = Document(text, budget.count)
    target = ChunkTarget(path, language, "rst")
    return chunk_sections(doc, rst_blocks(doc), target, budget)
