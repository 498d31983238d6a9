"""Markdown chunking: sections under ATX and setext headings, packed to the token budget.

The scanner recognises just enough Markdown to cut well: YAML front matter, fenced code
blocks (``` or ~~~, closed by a fence of the same character at least as long), ATX headings
(`## Title ##`) and single-line setext headings (a line underlined with `===` or `---`).
Everything else is a paragraph: a run of non-blank lines. A fenced block is one block and is
only cut (at line boundaries) when it alone exceeds the budget; `#` lines inside it are not
headings. Line ranges are exact: a chunk's text is the file's lines `start_line..end_line`.
"""

from __future__ import annotations

import re

from ..chunks import Chunk
from .budget import TokenBudget
from .packing import Document
from .sections import Block, ChunkTarget, chunk_sections

__all__ = ["chunk_markdown", "markdown_blocks"]

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_FRONT_MATTER_END = ("---", "...")


def _fence_end(doc: Document, start: int, fence: str) -> int:
    """The line closing the fence opened at `start`, or the last line if it never closes."""
    closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    for number in range(start + 1, doc.n_lines + 1):
        if closing.match(doc.line(number)):
            return number
    return doc.n_lines


def _front_matter_end(doc: Document) -> int:
    """The last line of YAML front matter at the top of the file, or 0 if there is none."""
    if doc.n_lines < 2 or doc.line(1).rstrip() != "---":
        return 0
    for number in range(2, doc.n_lines + 1):
        if doc.line(number).rstrip() in _FRONT_MATTER_END:
            return number
    return 0


def _heading(doc: Document, number: int) -> Block | None:
    """An ATX heading on this line, or a setext heading made of it and the next line."""
    line = doc.line(number)
    atx = _ATX.match(line)
    if atx:
        return Block(number, number, len(atx.group(1)), (atx.group(2) or "").strip())
    underlined = number < doc.n_lines and _SETEXT.match(doc.line(number + 1))
    if underlined and line.strip() and not _SETEXT.match(line):
        level = 1 if doc.line(number + 1).strip()[0] == "=" else 2
        return Block(number, number + 1, level, line.strip())
    return None


def _paragraph_end(doc: Document, start: int) -> int:
    """The last line of the paragraph starting at `start`."""
    number = start
    while number < doc.n_lines:
        following = doc.line(number + 1)
        if not following.strip() or _FENCE.match(following) or _ATX.match(following):
            break
        number += 1
    return number


def _next_block(doc: Document, number: int) -> Block:
    """The block starting at non-blank line `number`."""
    fence = _FENCE.match(doc.line(number))
    if fence:
        return Block(number, _fence_end(doc, number, fence.group(1)))
    heading = _heading(doc, number)
    if heading is not None:
        return heading
    return Block(number, _paragraph_end(doc, number))


def markdown_blocks(doc: Document) -> list[Block]:
    """The blocks of a Markdown document, in order, headings marked."""
    blocks: list[Block] = []
    front = _front_matter_end(doc)
    if front:
        blocks.append(Block(1, front))
    number = front + 1
    while number <= doc.n_lines:
        if not doc.line(number).strip():
            number += 1
            continue
        block = _next_block(doc, number)
        blocks.append(block)
        number = block.last + 1
    return blocks


def chunk_markdown(
    path: str, text: str, language: str, budget: TokenBudget
) -> list[Chunk]:
    """Chunks of a Markdown file, each with its heading path as `context`."""
    doc = Document(text, budget.count)
    target = ChunkTarget(path, language, "markdown")
    return chunk_sections(doc, markdown_blocks(doc), target, budget)
