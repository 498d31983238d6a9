"""Source code chunking along the syntax tree (tree-sitter), with line windows as fallback.

The top-level children of a file become items: a definition (function, class, method,
type; see `grammars.py`) together with the comments and attributes above it (blank lines
between them allowed), or loose code; statements sharing a line are kept together.
A definition that fits the budget is one chunk, whole, with its symbol path as `context`
(`("class Store", "def add")`). One that does not fit is opened: its body's children are
chunked the same way, one level down, and every piece gets a header of the enclosing
signature lines, with `...` marking lines left out, e.g.::

    class Store:
        ...
        def add(self, item):
            ...
            piece of the body, as it is in the file

The signature itself (with decorators and leading comments) goes with the first item of the
body, so every line of a definition is inside some chunk's range. Consecutive loose items
are packed to the budget with overlap; a single statement over the budget is cut at lines.
A chunk's range is 1-based and inclusive, and its text is the header followed by exactly
the file's lines in that range. When the language's grammar wheel is missing or the parser
fails, the file is cut into overlapping windows of whole lines instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..chunks import Chunk
from .budget import TokenBudget
from .grammars import GRAMMARS, Grammar, definition_of, parser_for, symbol_of
from .packing import Document, Piece, fit, pack, window
from .sections import ChunkTarget

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["chunk_code"]

_ELISION = "..."
_LEADING_TYPES = frozenset({"attribute_item", "decorator", "annotation"})


@dataclass(frozen=True)
class _Item:
    """Lines `first..last` of one container: a definition, or loose code."""

    first: int
    last: int
    definition: Node | None = None
    label: str = ""
    leading: bool = False  # a comment or signature that sticks to the next definition


@dataclass(frozen=True)
class _Scope:
    """Where items sit: the symbol path and the signatures of the definitions around them."""

    context: tuple[str, ...] = ()
    header: tuple[tuple[int, int], ...] = ()


def _is_leading(node: Node) -> bool:
    return node.type.endswith("comment") or node.type in _LEADING_TYPES


class _CodeChunker:
    """Chunks one parsed file; holds the document, grammar and budget for the walk."""

    def __init__(self, doc: Document, grammar: Grammar, target: ChunkTarget,
                 budget: TokenBudget) -> None:
        self.doc, self.grammar, self.target, self.budget = doc, grammar, target, budget

    # -- items ---------------------------------------------------------------------------

    def _item(self, node: Node) -> _Item:
        first, last = node.start_point[0] + 1, node.end_point[0] + 1
        if node.end_point[1] == 0 and last > first:  # ends at the start of a line
            last -= 1
        found = definition_of(self.grammar, node)
        if found is not None:
            return _Item(first, last, found[0], found[1])
        return _Item(first, last, leading=_is_leading(node))

    def _attach(self, items: list[_Item], item: _Item) -> None:
        """Append `item`, merging it with what shares its lines or leads into it."""
        if items and item.first <= items[-1].last:
            prev = items[-1]
            last = max(prev.last, item.last)
            if prev.definition is not None and item.leading:  # a comment after the definition
                items[-1] = replace(prev, last=last)
            else:  # two statements on one line: keep them together, as loose code
                items[-1] = _Item(prev.first, last)
            return
        if item.definition is not None:
            while items and items[-1].leading and self._only_blank(items[-1].last, item.first):
                item = replace(item, first=items.pop().first)
        items.append(item)

    def _only_blank(self, after: int, before: int) -> bool:
        """Whether the lines strictly between `after` and `before` are all blank."""
        return all(not self.doc.line(n).strip() for n in range(after + 1, before))

    def _items(self, children: Sequence[Node], lead: tuple[int, int] | None,
               end: int) -> list[_Item]:
        items: list[_Item] = []
        if lead is not None:
            items.append(_Item(lead[0], lead[1], leading=True))
        for child in children:
            self._attach(items, self._item(child))
        if items:  # closing lines (a `}`) go with the last item
            tail = [n for n in range(items[-1].last + 1, end + 1) if self.doc.line(n).strip()]
            if tail:
                items[-1] = replace(items[-1], last=tail[-1])
        return items

    # -- headers -------------------------------------------------------------------------

    def _indent(self, number: int) -> str:
        line = self.doc.line(number)
        return line[: len(line) - len(line.lstrip())]

    def _header(self, scope: _Scope, first_line: int) -> str:
        """The enclosing signatures above line `first_line`, gaps marked with `...`."""
        parts: list[str] = []
        prev = None
        for start, stop in scope.header:
            if stop >= first_line:
                break
            if prev is not None and start > prev + 1:
                parts.append(self._indent(start) + _ELISION)
            parts.append(self.doc.lines_text(start, stop))
            prev = stop
        if prev is not None and first_line > prev + 1:
            parts.append(self._indent(first_line) + _ELISION)
        return "".join(p + "\n" for p in parts)

    def _reserve(self, scope: _Scope) -> int:
        """The most tokens a header of this scope can take."""
        lines = sum(self.doc.lines_piece(a, b).tokens for a, b in scope.header)
        return lines + len(scope.header) * self.doc.count(_ELISION)

    # -- chunks --------------------------------------------------------------------------

    def _chunk(self, piece: Piece, scope: _Scope) -> Chunk:
        return Chunk(
            path=self.target.path,
            start_line=piece.first_line,
            end_line=piece.last_line,
            language=self.target.language,
            kind="code",
            text=self._header(scope, piece.first_line) + self.doc.text_of(piece),
            context=scope.context,
        )

    def _pack(self, pieces: list[Piece], scope: _Scope) -> list[Chunk]:
        room = self.budget.max_tokens - self._reserve(scope)
        packed = pack(fit(self.doc, pieces, room), room, self.budget.overlap_tokens)
        return [self._chunk(p, scope) for p in packed]

    def _loose(self, items: list[_Item], scope: _Scope) -> list[Chunk]:
        return self._pack([self.doc.lines_piece(i.first, i.last) for i in items], scope)

    def _body(self, definition: Node) -> list[Node]:
        body = definition.child_by_field_name("body")
        children = body.named_children if body is not None else []
        if len(children) == 1 and children[0].type in self.grammar.body_lists:
            children = children[0].named_children
        return children

    def _inner_scope(self, scope: _Scope, symbol: str, signature: tuple[int, int]) -> _Scope:
        inner = _Scope(scope.context + (symbol,), scope.header + (signature,))
        if self._reserve(inner) > self.budget.max_tokens // 2:  # a huge signature
            return _Scope(inner.context, scope.header)
        return inner

    def _definition(self, item: _Item, definition: Node, scope: _Scope) -> list[Chunk]:
        """One chunk for a definition that fits; otherwise its body, chunked one level down."""
        symbol = symbol_of(self.grammar, definition, item.label)
        piece = self.doc.lines_piece(item.first, item.last)
        whole = _Scope(scope.context + (symbol,), scope.header)
        if piece.tokens + self._reserve(scope) <= self.budget.max_tokens:
            return [self._chunk(piece, whole)]
        children = self._body(definition)
        if not children:
            return self._pack([piece], whole)
        start = definition.start_point[0] + 1
        signature = (start, max(start, children[0].start_point[0]))
        inner = self._inner_scope(scope, symbol, signature)
        return self._container(children, inner, (item.first, signature[1]), item.last)

    def _container(self, children: Sequence[Node], scope: _Scope,
                   lead: tuple[int, int] | None, end: int) -> list[Chunk]:
        """Chunks of a file's or a body's children, definitions apart, loose code packed."""
        chunks: list[Chunk] = []
        loose: list[_Item] = []
        for item in self._items(children, lead, end):
            if item.definition is None:
                loose.append(item)
                continue
            chunks += self._loose(loose, scope) if loose else []
            loose = []
            chunks += self._definition(item, item.definition, scope)
        return chunks + (self._loose(loose, scope) if loose else [])

    def run(self, root: Node) -> list[Chunk]:
        """All chunks of the file, in line order."""
        return self._container(root.named_children, _Scope(), None, self.doc.n_lines)


def _windows(doc: Document, target: ChunkTarget, budget: TokenBudget) -> list[Chunk]:
    """The fallback: overlapping windows of whole lines, no context."""
    pieces = window(doc, 1, doc.n_lines, budget.max_tokens, budget.overlap_tokens)
    return [
        Chunk(target.path, p.first_line, p.last_line, target.language, "code",
              doc.text_of(p))
        for p in pieces
    ]


def chunk_code(path: str, text: str, language: str, budget: TokenBudget) -> list[Chunk]:
    """Chunks of a source file along its syntax tree (line windows if it cannot be parsed)."""
    doc = Document(text, budget.count)
    target = ChunkTarget(path, language, "code")
    parser = parser_for(language)
    if parser is None or doc.n_lines == 0:
        return _windows(doc, target, budget)
    try:
        root = parser.parse(doc.text.encode("utf-8")).root_node
    except Exception:  # a grammar bug must not stop indexing; windows are always valid
        return _windows(doc, target, budget)
    return _CodeChunker(doc, GRAMMARS[language], target, budget).run(root)
