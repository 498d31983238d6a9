"""The shared machinery of every chunker: lines, measured pieces, and packing them to a budget.

A `Document` is a file's text split into lines (1-based, `\\n` only, a final newline not
counting as an extra line). A `Piece` is a measured run of it: whole lines, or, for a single
line over the budget, a sentence, a word or a window of characters of that line. `fit`
refines pieces over the limit (lines, then sentences, then words, then characters) and
`pack` joins consecutive pieces greedily up to the limit, repeating a tail of up to
`overlap` tokens at the start of the next group. A packed piece of whole lines is exactly
those lines of the file.

Nothing here knows about Markdown or syntax trees.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .budget import TokenCounter

__all__ = ["Document", "Piece", "fit", "pack", "window"]

_SENTENCE_GAP = re.compile(r"[.!?][\"')\]]*(\s+)")  # group 1: the space between sentences
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Piece:
    """A measured span of a document: characters `[start, end)` on lines `first..last`."""

    start: int
    end: int
    first_line: int
    last_line: int
    tokens: int


class Document:
    """A file's text as lines, with cached per-line token counts."""

    def __init__(self, text: str, count: TokenCounter) -> None:
        self.text = text.replace("\r\n", "\n")
        self.count = count
        lines = self.text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self.lines: list[str] = lines
        self._starts: list[int] = []
        offset = 0
        for line in lines:
            self._starts.append(offset)
            offset += len(line) + 1
        self._tokens: list[int | None] = [None] * len(lines)

    @property
    def n_lines(self) -> int:
        """How many lines the text has."""
        return len(self.lines)

    def line(self, number: int) -> str:
        """Line `number` (1-based), without its newline."""
        return self.lines[number - 1]

    def lines_text(self, first: int, last: int) -> str:
        """Lines `first..last` (inclusive) joined by newlines."""
        return "\n".join(self.lines[first - 1 : last])

    def line_tokens(self, number: int) -> int:
        """The token count of one line, computed once."""
        cached = self._tokens[number - 1]
        if cached is None:
            cached = self._tokens[number - 1] = self.count(self.lines[number - 1])
        return cached

    def lines_piece(self, first: int, last: int) -> Piece:
        """Lines `first..last` as one piece."""
        start = self._starts[first - 1]
        end = self._starts[last - 1] + len(self.lines[last - 1])
        tokens = sum(self.line_tokens(n) for n in range(first, last + 1))
        return Piece(start, end, first, last, tokens)

    def line_pieces(self, first: int, last: int) -> list[Piece]:
        """One piece per line of `first..last`."""
        return [self.lines_piece(n, n) for n in range(first, last + 1)]

    def text_of(self, piece: Piece) -> str:
        """The characters a piece covers."""
        return self.text[piece.start : piece.end]

    def span_piece(self, start: int, end: int, line: int) -> Piece:
        """Characters `[start, end)` of one line as a piece."""
        return Piece(start, end, line, line, self.count(self.text[start:end]))


def _spans(doc: Document, piece: Piece, pattern: re.Pattern[str], split: bool) -> list[Piece]:
    """Sub-pieces of a one-line piece: around `pattern`'s group 1, or its whole matches."""
    text = doc.text_of(piece)
    if split:
        bounds, last = [], 0
        for m in pattern.finditer(text):
            bounds.append((last, m.start(1)))
            last = m.end(1)
        bounds.append((last, len(text)))
    else:
        bounds = [(m.start(), m.end()) for m in pattern.finditer(text)]
    base, line = piece.start, piece.first_line
    return [doc.span_piece(base + a, base + b, line) for a, b in bounds if b > a]


def _char_windows(doc: Document, piece: Piece, max_tokens: int) -> list[Piece]:
    """Cut one unbreakable word into windows of characters that each fit."""
    out: list[Piece] = []
    start = piece.start
    while start < piece.end:
        size = min(piece.end - start, max_tokens * 4)
        while size > 1 and doc.count(doc.text[start : start + size]) > max_tokens:
            size //= 2
        out.append(doc.span_piece(start, start + size, piece.first_line))
        start += size
    return out


def _refine(doc: Document, piece: Piece, max_tokens: int) -> list[Piece]:
    """The next finer split of a piece over the limit."""
    if piece.first_line < piece.last_line:
        return doc.line_pieces(piece.first_line, piece.last_line)
    sentences = _spans(doc, piece, _SENTENCE_GAP, split=True)
    if len(sentences) > 1:
        return sentences
    words = _spans(doc, piece, _WORD, split=False)
    if len(words) > 1:
        return words
    return _char_windows(doc, piece, max_tokens)


def fit(doc: Document, pieces: Sequence[Piece], max_tokens: int) -> list[Piece]:
    """The pieces, with every one over `max_tokens` replaced by finer pieces that fit."""
    out: list[Piece] = []
    for piece in pieces:
        if piece.tokens <= max_tokens:
            out.append(piece)
        else:
            out.extend(fit(doc, _refine(doc, piece, max_tokens), max_tokens))
    return out


def _trim(group: list[Piece]) -> list[Piece]:
    """Drop blank pieces at both ends of a group."""
    lo, hi = 0, len(group)
    while lo < hi and group[lo].tokens == 0:
        lo += 1
    while hi > lo and group[hi - 1].tokens == 0:
        hi -= 1
    return group[lo:hi]


def _tail(group: list[Piece], overlap: int, room: int) -> list[Piece]:
    """The longest tail of `group` within `overlap` tokens and the `room` left for it."""
    limit, total, size = min(overlap, room), 0, 0
    for piece in reversed(group):
        if total + piece.tokens > limit:
            break
        total += piece.tokens
        size += 1
    return _trim(group[len(group) - size :]) if size else []


def _merge(group: list[Piece]) -> Piece:
    first, last = group[0], group[-1]
    tokens = sum(p.tokens for p in group)
    return Piece(first.start, last.end, first.first_line, last.last_line, tokens)


def pack(pieces: Sequence[Piece], max_tokens: int, overlap: int) -> list[Piece]:
    """Join consecutive pieces greedily into groups of at most `max_tokens`.

    Each new group starts with the tail of the previous one that fits in `overlap` tokens.
    Pieces must already fit (see `fit`); blank pieces at the ends of a group are dropped.
    """
    groups: list[list[Piece]] = []
    current: list[Piece] = []
    total = 0
    for piece in pieces:
        if current and total + piece.tokens > max_tokens:
            groups.append(current)
            current = _tail(current, overlap, max_tokens - piece.tokens)
            total = sum(p.tokens for p in current)
        current.append(piece)
        total += piece.tokens
    groups.append(current)
    return [_merge(g) for g in map(_trim, groups) if g]


def window(doc: Document, first: int, last: int, max_tokens: int, overlap: int) -> list[Piece]:
    """Lines `first..last` cut into overlapping windows of whole lines that fit."""
    return pack(fit(doc, doc.line_pieces(first, last), max_tokens), max_tokens, overlap)
