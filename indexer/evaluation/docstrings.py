"""Questions from docstrings: public definitions of a Python file and their summary sentences.

`definitions` walks a module's syntax tree (`ast`) for public functions, classes and
methods (not nested in functions) that have a docstring. `summary_of` takes the first
sentence of the docstring's first paragraph and returns None when it says too little to be
a question: fewer than `MIN_WORDS` words, a signature line (`dumps(obj) -> str`), a doctest,
or a stock phrase ("Return self...", "Same as...", "Deprecated..."). `reference_answer` is what an answer to the
summary should say. `without_names` makes
the harder wording: every token naming the definition or its classes removed (a paraphrase
would need a language model). Pure functions of source text.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MIN_WORDS",
    "Definition",
    "definitions",
    "first_paragraph",
    "first_sentence",
    "reference_answer",
    "summary_of",
    "without_names",
    "words",
]

MIN_WORDS = 5
MAX_SUMMARY_CHARS = 300
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z(\"'`]|\s*$)")
_SIGNATURE = re.compile(r"^[\w.]+\s*\(.*\)\s*(->|$)")
_STOCK = re.compile(r"^(return self\b|same as\b|see\b|deprecated\b|alias\b|implement(s|ation)?\b"
                    r"|override\b|internal\b|helper\b|used by\b|called by\b|xxx\b|todo\b|for internal\b)",
                    re.IGNORECASE)
_IDENTIFIER = re.compile(r"[`'\"]*\b(\w+(?:\.\w+)*)(?:\(\))?[`'\"]*")
_DefNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass(frozen=True)
class Definition:
    """A public function, class or method with a docstring, and the lines it spans.

    For a function or method the range is the whole definition, decorators included; for a
    class it ends with the docstring, since the whole class would hold every method too.
    """

    qualname: str  # "TextWrapper.wrap"
    kind: Literal["def", "class"]
    start_line: int
    end_line: int
    docstring: str  # as `ast.get_docstring` cleans it


def words(text: str) -> list[str]:
    """The whitespace-separated words of `text` that contain a letter."""
    return [word for word in text.split() if re.search("[A-Za-z]", word)]


def first_paragraph(docstring: str) -> str:
    """The docstring up to its first blank line, as one line with single spaces."""
    lines = []
    for line in docstring.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(" ".join(lines).split())


def _paragraphs(docstring: str) -> list[str]:
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", docstring.strip()) if block.strip()]


def reference_answer(docstring: str) -> str:
    """The docstring's first paragraph, or its first two when the first is one sentence only.

    PEP 257 puts a one-line summary first; the paragraph after it is what explains it.
    """
    paragraphs = _paragraphs(docstring)
    if len(paragraphs) > 1 and first_sentence(paragraphs[0]) == paragraphs[0]:
        return f"{paragraphs[0]} {paragraphs[1]}"
    return paragraphs[0] if paragraphs else ""


def first_sentence(paragraph: str) -> str:
    """The paragraph up to the end of its first sentence (all of it when no sentence ends)."""
    end = _SENTENCE_END.search(paragraph)
    return paragraph[: end.end()] if end else paragraph


def summary_of(docstring: str) -> str | None:
    """The first sentence of the first paragraph, or None when it is not informative."""
    paragraph = first_paragraph(docstring)
    summary = first_sentence(paragraph)
    if len(words(summary)) < MIN_WORDS or len(summary) > MAX_SUMMARY_CHARS:
        return None
    if _SIGNATURE.match(summary) or _STOCK.match(summary) or ">>>" in paragraph:
        return None
    return summary


def without_names(question: str, names: tuple[str, ...]) -> str:
    """`question` without the given identifiers (also dotted, quoted or called), spaces tidied.

    Returned unchanged when it names none of them.
    """
    def blank(token: re.Match[str]) -> str:
        return " " if set(token.group(1).split(".")) & set(names) else token.group(0)

    text = _IDENTIFIER.sub(blank, question)
    if text == question:
        return question
    text = re.sub(r"\s+([.,;:!?])(?=\s|$)", r"\1", re.sub(r"\s+", " ", text))
    return text.strip()


def _span(node: _DefNode) -> tuple[int, int]:
    start = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
    if isinstance(node, ast.ClassDef):
        return start, node.body[0].end_lineno or node.lineno  # the docstring's last line
    return start, node.end_lineno or node.lineno


def _walk(body: list[ast.stmt], prefix: str) -> Iterator[Definition]:
    for node in body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.name.startswith("_"):
            continue
        qualname = prefix + node.name
        docstring = ast.get_docstring(node)
        if docstring:
            kind: Literal["def", "class"] = "class" if isinstance(node, ast.ClassDef) else "def"
            yield Definition(qualname, kind, *_span(node), docstring)
        if isinstance(node, ast.ClassDef):
            yield from _walk(node.body, qualname + ".")


def definitions(source: str) -> list[Definition]:
    """Public definitions with docstrings in a module's source, in line order."""
    return sorted(_walk(ast.parse(source).body, ""), key=lambda d: (d.start_line, d.qualname))
