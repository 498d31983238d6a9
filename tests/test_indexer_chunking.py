"""Chunking: budgets, exact line ranges and context, on real files and small inline sources.

The Python standard library that ships with the interpreter provides files nobody here
wrote; Python's own `ast` module is the independent judge of where definitions are.
"""

from __future__ import annotations

import ast
import inspect
import json.decoder
import re
import textwrap
from itertools import pairwise
from pathlib import Path

import pytest

from lampstand.indexer.chunking import (
    CHUNKERS,
    DEFAULT_BUDGET,
    TokenBudget,
    approx_token_count,
    chunk_file,
)
from lampstand.indexer.chunking.grammars import GRAMMARS, Grammar
from lampstand.indexer.chunks import Chunk
from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path

MINILM = bundled_path(BUNDLED_MODELS[1])
TOKENIZER = MINILM / "tokenizer.json" if MINILM else None
needs_tokenizer = pytest.mark.skipif(
    TOKENIZER is None or not TOKENIZER.exists(), reason="bundled MiniLM tokenizer missing"
)

STDLIB_MODULES = [textwrap, json.decoder, ast, inspect]


def lines_of(text: str, chunk: Chunk) -> str:
    return "\n".join(text.split("\n")[chunk.start_line - 1 : chunk.end_line])


def header_of(text: str, chunk: Chunk) -> list[str]:
    """The header lines before a code chunk's own lines; each is a file line or `...`."""
    body = lines_of(text, chunk)
    assert chunk.text.endswith(body), (chunk.start_line, chunk.end_line)
    head = chunk.text[: len(chunk.text) - len(body)]
    return head.split("\n")[:-1] if head else []


def covered(chunks: list[Chunk]) -> set[int]:
    return {n for c in chunks for n in range(c.start_line, c.end_line + 1)}


@pytest.fixture(scope="module")
def exact_budget() -> TokenBudget:
    if TOKENIZER is None or not TOKENIZER.exists():
        pytest.skip("bundled MiniLM tokenizer missing")
    return TokenBudget.from_tokenizer_file(TOKENIZER)


# -- budgets -----------------------------------------------------------------------------


def test_default_budget_is_minilm_sized() -> None:
    assert (DEFAULT_BUDGET.max_tokens, DEFAULT_BUDGET.overlap_tokens) == (256, 32)
    assert DEFAULT_BUDGET.count is approx_token_count


@needs_tokenizer
def test_tokenizer_budget_counts_word_pieces_without_specials(exact_budget: TokenBudget) -> None:
    assert exact_budget.max_tokens == 254  # 256 minus [CLS] and [SEP]
    assert exact_budget.count("hello world") == 2
    long = "word " * 400  # the tokenizer file truncates at 128; the counter must not
    assert exact_budget.count(long) == 400


@needs_tokenizer
def test_estimate_tracks_the_real_tokenizer(exact_budget: TokenBudget) -> None:
    text = Path(inspect.getsourcefile(textwrap) or "").read_text()
    ratio = approx_token_count(text) / exact_budget.count(text)
    assert 1.0 <= ratio <= 1.3


@pytest.mark.parametrize(
    ("max_tokens", "overlap"), [(4, 0), (64, 33), (64, -1), (256, 200)]
)
def test_bad_budgets_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="tokens"):
        TokenBudget(max_tokens, overlap)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="html"):
        chunk_file("a.html", "text", "html", "html")  # type: ignore[arg-type]
    assert set(CHUNKERS) == {"markdown", "text", "rst", "code", "pdf"}


@pytest.mark.parametrize("kind", ["markdown", "text", "rst", "code", "pdf"])
def test_empty_files_have_no_chunks(kind: str) -> None:
    assert chunk_file("empty", "", "python", kind) == []  # type: ignore[arg-type]
    assert chunk_file("blank", "\n\n  \n", "python", kind) == []  # type: ignore[arg-type]


# -- code on the standard library ---------------------------------------------------------


def stdlib_source(module: object) -> tuple[str, str]:
    path = inspect.getsourcefile(module)  # type: ignore[arg-type]
    assert path is not None
    return Path(path).name, Path(path).read_text(encoding="utf-8")


def definitions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [node for node in ast.walk(tree) if isinstance(node, kinds)]


@pytest.mark.parametrize("use_tokenizer", [False, True], ids=["estimate", "tokenizer"])
@pytest.mark.parametrize("module", STDLIB_MODULES, ids=lambda m: m.__name__)
def test_stdlib_chunks_fit_and_match_the_file(
    module: object, use_tokenizer: bool, request: pytest.FixtureRequest
) -> None:
    budget = request.getfixturevalue("exact_budget") if use_tokenizer else DEFAULT_BUDGET
    name, text = stdlib_source(module)
    chunks = chunk_file(name, text, "python", "code", budget)
    file_lines = text.split("\n")
    for chunk in chunks:
        assert budget.count(chunk.text) <= budget.max_tokens
        assert (chunk.path, chunk.language, chunk.kind) == (name, "python", "code")
        for line in header_of(text, chunk):  # a header is signature lines and `...`
            assert line.strip() == "..." or line in file_lines
    starts = [c.start_line for c in chunks]
    assert starts == sorted(starts)
    non_blank = {n for n, line in enumerate(file_lines, 1) if line.strip()}
    assert non_blank <= covered(chunks)


@pytest.mark.parametrize("module", STDLIB_MODULES, ids=lambda m: m.__name__)
def test_stdlib_small_definitions_are_whole_chunks(module: object) -> None:
    """Every top-level function or class that fits is exactly one chunk, named."""
    name, text = stdlib_source(module)
    chunks = chunk_file(name, text, "python", "code")
    by_context: dict[tuple[str, ...], list[Chunk]] = {}
    for chunk in chunks:
        by_context.setdefault(chunk.context, []).append(chunk)
    tree = ast.parse(text)
    checked = 0
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        label = "class" if isinstance(node, ast.ClassDef) else "def"
        source = "\n".join(text.split("\n")[first - 1 : node.end_lineno])
        found = by_context.get((f"{label} {node.name}",), [])
        assert found, node.name
        if approx_token_count(source) <= DEFAULT_BUDGET.max_tokens - 40:  # room for comments
            (whole,) = found
            assert whole.start_line <= first and whole.end_line >= node.end_lineno
            checked += 1
    assert checked >= 1


def test_stdlib_definitions_are_covered_under_their_symbol(exact_budget: TokenBudget) -> None:
    """Each line of a method of a split class is in a chunk whose context names both."""
    for module in STDLIB_MODULES:
        name, text = stdlib_source(module)
        chunks = chunk_file(name, text, "python", "code", exact_budget)
        for cls in ast.parse(text).body:
            if not isinstance(cls, ast.ClassDef):
                continue
            for method in cls.body:
                if not isinstance(method, ast.FunctionDef):
                    continue
                scoped = [c for c in chunks if c.context[:1] == (f"class {cls.name}",)]
                mine = [c for c in scoped if c.context[1:2] in {(f"def {method.name}",), ()}]
                span = range(method.lineno, (method.end_lineno or 0) + 1)
                lines = {n for n in span if text.split("\n")[n - 1].strip()}
                assert lines <= covered(mine), (name, cls.name, method.name)


def test_textwrap_known_symbols(exact_budget: TokenBudget) -> None:
    name, text = stdlib_source(textwrap)
    chunks = chunk_file(name, text, "python", "code", exact_budget)
    contexts = [c.context for c in chunks]
    # small functions: whole, in one chunk each
    for function in ("indent", "shorten", "wrap", "fill"):
        (whole,) = [c for c in chunks if c.context == (f"def {function}",)]
        assert whole.text == lines_of(text, whole)
        assert re.search(rf"^def {function}\(", whole.text, re.M)  # maybe after a comment
    # `dedent` is over the budget: split at statements, every piece headed by its signature
    dedent = [c for c in chunks if c.context == ("def dedent",)]
    assert len(dedent) >= 2
    assert dedent[0].text.startswith("def dedent(text):")
    for piece in dedent[1:]:
        assert header_of(text, piece) == ["def dedent(text):", "    ..."]
    # TextWrapper does not fit: its methods are chunks of their own under the class
    assert ("class TextWrapper", "def _wrap_chunks") in contexts
    assert ("class TextWrapper", "def _munge_whitespace") in contexts
    wrap_chunks = [c for c in chunks if c.context == ("class TextWrapper", "def _wrap_chunks")]
    assert len(wrap_chunks) >= 2  # a long method, split
    for piece in wrap_chunks[1:]:
        head = header_of(text, piece)
        assert head[0] == "class TextWrapper:"
        assert head[1:3] == ["    ...", "    def _wrap_chunks(self, chunks):"]
        assert head[3].strip() == "..."  # indented like the piece's first line


def test_json_decoder_known_symbols() -> None:
    name, text = stdlib_source(json.decoder)
    chunks = chunk_file(name, text, "python", "code")
    contexts = {c.context for c in chunks}
    assert ("class JSONDecoder", "def raw_decode") in contexts
    assert ("class JSONDecoder", "def decode") in contexts
    assert ("def py_scanstring",) in contexts
    (reduce,) = [c for c in chunks if c.context == ("class JSONDecodeError", "def __reduce__")]
    assert header_of(text, reduce)[0] == "class JSONDecodeError(ValueError):"
    assert reduce.text.rstrip().endswith("return self.__class__, (self.msg, self.doc, self.pos)")


# -- code in other languages --------------------------------------------------------------

SOURCES: dict[str, tuple[str, list[tuple[str, ...]]]] = {
    "javascript": (
        """import fs from 'fs';

// adds two numbers
export function add(a, b) {
  return a + b;
}

const mul = (a, b) => a * b;

class Store {
  constructor() {
    this.items = [];
  }
  put(item) {
    this.items.push(item);
  }
}
""",
        [("function add",), ("function mul",), ("class Store",)],
    ),
    "typescript": (
        """interface Shape {
  area(): number;
}

export class Circle implements Shape {
  constructor(private r: number) {}
  area(): number {
    return Math.PI * this.r ** 2;
  }
}

export function unit<T>(x: T): T[] {
  return [x];
}
""",
        [("interface Shape",), ("class Circle",), ("function unit",)],
    ),
    "tsx": (
        """export const Hello = (props: {name: string}) => {
  return <div>Hello {props.name}</div>;
};

function Page() {
  return <Hello name="x" />;
}
""",
        [("function Hello",), ("function Page",)],
    ),
    "go": (
        """package store

import "strings"

// Store keeps items.
type Store struct {
\titems []string
}

// Add appends an item.
func (s *Store) Add(item string) {
\ts.items = append(s.items, strings.TrimSpace(item))
}

func New() *Store {
\treturn &Store{}
}
""",
        [("type Store",), ("func Add",), ("func New",)],
    ),
    "rust": (
        """use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Store {
    items: HashMap<String, u32>,
}

impl Store {
    pub fn add(&mut self, key: &str) {
        *self.items.entry(key.to_string()).or_insert(0) += 1;
    }
}

fn main() {
    let mut s = Store::default();
    s.add("x");
}
""",
        [("struct Store",), ("impl Store",), ("fn main",)],
    ),
    "java": (
        """package demo;

import java.util.List;

public class Store {
    private final List<String> items;

    public Store(List<String> items) {
        this.items = items;
    }

    public void add(String item) {
        items.add(item);
    }
}

interface Named {
    String name();
}
""",
        [("class Store",), ("interface Named",)],
    ),
    "c": (
        """#include <stdio.h>

struct point {
    int x;
    int y;
};

/* Sum of the coordinates. */
static int sum(const struct point *p)
{
    return p->x + p->y;
}

int main(void) {
    struct point p = {1, 2};
    printf("%d\\n", sum(&p));
    return 0;
}
""",
        [("struct point",), ("function sum",), ("function main",)],
    ),
    "cpp": (
        """#include <vector>

namespace shop {

class Store {
 public:
  void add(int item) { items_.push_back(item); }
 private:
  std::vector<int> items_;
};

}  // namespace shop

int Store::size() const { return 0; }

template <typename T>
T twice(T x) {
  return x + x;
}
""",
        [("namespace shop",), ("function Store::size",), ("function twice",)],
    ),
    "bash": (
        """#!/usr/bin/env bash
set -euo pipefail

greet() {
  echo "hello $1"
}

function farewell {
  echo "bye"
}

greet world
""",
        [("function greet",), ("function farewell",)],
    ),
}


@pytest.mark.parametrize("language", sorted(SOURCES))
def test_definitions_are_found_by_name(language: str) -> None:
    text, expected = SOURCES[language]
    chunks = chunk_file(f"x.{language}", text, language, "code")
    contexts = [c.context for c in chunks]
    for context in expected:
        assert context in contexts, (context, contexts)
    for chunk in chunks:
        assert chunk.text == lines_of(text, chunk)
    non_blank = {n for n, line in enumerate(text.split("\n"), 1) if line.strip()}
    assert non_blank <= covered(chunks)


@pytest.mark.parametrize(
    ("language", "max_tokens", "context"),
    [
        ("javascript", 30, ("class Store", "method put")),
        ("typescript", 40, ("class Circle", "method area")),
        ("java", 40, ("class Store", "method add")),
        ("rust", 40, ("impl Store", "fn add")),
        ("cpp", 40, ("namespace shop", "class Store", "function add")),
    ],
)
def test_members_of_split_definitions_are_named(
    language: str, max_tokens: int, context: tuple[str, ...]
) -> None:
    text, _ = SOURCES[language]
    budget = TokenBudget(max_tokens=max_tokens, overlap_tokens=0)
    chunks = chunk_file(f"x.{language}", text, language, "code", budget)
    assert context in [c.context for c in chunks]
    for chunk in chunks:
        assert budget.count(chunk.text) <= budget.max_tokens
        header_of(text, chunk)  # the chunk ends with exactly its lines


def test_comments_and_decorators_stay_with_their_definition() -> None:
    text = "import os\n\n\n# helper\n@cache\ndef helper(x):\n    return x\n"
    (imports, helper) = chunk_file("m.py", text, "python", "code")
    assert (imports.start_line, imports.end_line, imports.context) == (1, 1, ())
    assert (helper.start_line, helper.end_line, helper.context) == (4, 7, ("def helper",))


def test_a_split_method_repeats_its_signatures() -> None:
    body = "\n".join(f"        total += item.price * {n}  # line {n}" for n in range(40))
    text = (
        "class Store:\n"
        '    """Keeps items."""\n'
        "\n"
        "    def add(self, item):\n"
        "        total = 0\n"
        f"{body}\n"
        "        return total\n"
    )
    budget = TokenBudget(max_tokens=120, overlap_tokens=16)
    doc, *pieces = chunk_file("store.py", text, "python", "code", budget)
    # the class signature goes with the first item of its body: here the docstring
    assert (doc.start_line, doc.end_line, doc.context) == (1, 2, ("class Store",))
    assert doc.text == 'class Store:\n    """Keeps items."""'
    assert all(c.context == ("class Store", "def add") for c in pieces)
    assert pieces[0].start_line == 4
    assert header_of(text, pieces[0]) == ["class Store:", "    ..."]
    for chunk in pieces[1:]:
        assert header_of(text, chunk) == [
            "class Store:",
            "    ...",
            "    def add(self, item):",
            "        ...",
        ]
    assert all(budget.count(c.text) <= budget.max_tokens for c in pieces)
    assert pieces[-1].end_line == text.count("\n")
    assert pieces[1].start_line <= pieces[0].end_line  # overlap across the cut


@pytest.mark.parametrize("language", ["kotlin", "cobol"])
def test_code_without_a_grammar_falls_back_to_line_windows(language: str) -> None:
    text = "\n".join(f"fun f{n}() = {n} + {n}" for n in range(100)) + "\n"
    budget = TokenBudget(max_tokens=64, overlap_tokens=20)
    chunks = chunk_file("x.kt", text, language, "code", budget)
    assert len(chunks) > 1
    assert all(c.context == () and c.text == lines_of(text, c) for c in chunks)
    assert all(budget.count(c.text) <= 64 for c in chunks)
    assert covered(chunks) == set(range(1, 101))
    assert all(b.start_line <= a.end_line for a, b in pairwise(chunks))  # overlap


def test_a_missing_grammar_wheel_falls_back_to_line_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = Grammar("tree_sitter_not_installed", "language", {"function": "fn"})
    monkeypatch.setitem(GRAMMARS, "not-installed-lang", missing)
    text, _ = SOURCES["go"]
    chunks = chunk_file("x.go", text, "not-installed-lang", "code")
    assert [(c.start_line, c.context) for c in chunks] == [(1, ())]
    assert chunks[0].text == text.rstrip("\n")


def test_broken_code_still_chunks() -> None:
    text = "def ok():\n    return 1\n\ndef broken(:\n    pass\n\nclass Fine:\n    x = 1\n"
    chunks = chunk_file("b.py", text, "python", "code")
    assert ("def ok",) in [c.context for c in chunks]
    assert covered(chunks) >= {1, 2, 4, 5, 7, 8}


# -- Markdown -----------------------------------------------------------------------------

NOTES = """---
title: Notes
---
Intro line.

# Install

Some words about installing.

## Linux

```sh
# not a heading
apt install lampstand
```

Setext title
------------

Body under a setext heading.

# Empty parent

## Child ##

child text
"""


def test_markdown_sections_carry_their_heading_path() -> None:
    chunks = chunk_file("notes.md", NOTES, "markdown", "markdown")
    got = [(c.start_line, c.end_line, c.context) for c in chunks]
    assert got == [
        (1, 4, ()),
        (6, 8, ("Install",)),
        (10, 15, ("Install", "Linux")),
        (17, 20, ("Install", "Setext title")),
        (22, 26, ("Empty parent", "Child")),  # the heading-only parent starts its child's chunk
    ]
    for chunk in chunks:
        assert chunk.text == lines_of(NOTES, chunk)
        assert (chunk.kind, chunk.language) == ("markdown", "markdown")


def long_markdown(paragraphs: int) -> str:
    para = "This sentence talks about lamps and stands. " * 4
    fence = "```python\n" + "\n".join(f"print({n})  # {n}" for n in range(6)) + "\n```"
    parts = ["# Guide", ""]
    for n in range(paragraphs):
        parts += [f"{para}{n}", "", fence if n % 3 == 0 else f"Line {n}.", ""]
    return "\n".join(parts)


def fences(text: str) -> list[tuple[int, int]]:
    lines, spans, start = text.split("\n"), [], 0
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            if start:
                spans.append((start, n))
                start = 0
            else:
                start = n
    return spans


def test_markdown_packs_to_budget_without_cutting_fences() -> None:
    text = long_markdown(12)
    budget = TokenBudget(max_tokens=120, overlap_tokens=30)
    chunks = chunk_file("guide.md", text, "markdown", "markdown", budget)
    assert len(chunks) > 3
    for chunk in chunks:
        assert budget.count(chunk.text) <= 120
        assert chunk.text == lines_of(text, chunk)
        assert chunk.context == ("Guide",)
        for start, end in fences(text):  # a fence is inside a chunk, or outside it
            inside = chunk.start_line <= start and end <= chunk.end_line
            outside = end < chunk.start_line or start > chunk.end_line
            assert inside or outside, (chunk.start_line, chunk.end_line, start, end)
    assert any(b.start_line <= a.end_line for a, b in pairwise(chunks))  # overlap


def test_a_fence_over_the_budget_is_cut_at_lines() -> None:
    code = "\n".join(f"value_{n} = compute({n}, {n + 1})" for n in range(80))
    text = f"# Big\n\n```python\n{code}\n```\n"
    budget = TokenBudget(max_tokens=100, overlap_tokens=10)
    chunks = chunk_file("big.md", text, "markdown", "markdown", budget)
    assert len(chunks) > 2
    assert all(budget.count(c.text) <= 100 and c.text == lines_of(text, c) for c in chunks)
    assert covered(chunks) == set(range(1, 85))


def test_a_line_over_the_budget_is_cut_at_sentences() -> None:
    sentences = " ".join(f'Sentence number {n} says "something."' for n in range(60))
    text = f"# One line\n\n{sentences}\n"
    budget = TokenBudget(max_tokens=50, overlap_tokens=8)
    chunks = chunk_file("long.md", text, "markdown", "markdown", budget)
    assert all(budget.count(c.text) <= 50 and c.end_line == 3 for c in chunks)
    assert chunks[0].text.startswith("# One line\n\nSentence number 0 says")
    pieces = chunks[1:]
    assert len(pieces) > 3
    for piece in pieces:  # cut between sentences, with some overlap
        assert piece.start_line == 3
        assert piece.text in sentences and piece.text.endswith('"something."')
    numbers = {int(n) for c in chunks for n in re.findall(r"number (\d+)", c.text)}
    assert numbers == set(range(60))


def test_a_word_over_the_budget_is_cut_at_characters() -> None:
    blob = "QUJD" * 300
    chunks = chunk_file("blob.txt", f"{blob}\n", "text", "text", TokenBudget(64, 0))
    assert "".join(c.text for c in chunks) == blob
    assert all(approx_token_count(c.text) <= 64 for c in chunks)


def test_project_readme(exact_budget: TokenBudget) -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    chunks = chunk_file("README.md", text, "markdown", "markdown", exact_budget)
    assert chunks and all(exact_budget.count(c.text) <= exact_budget.max_tokens for c in chunks)
    title = next(line[2:].strip() for line in text.split("\n") if line.startswith("# "))
    assert all(c.context[:1] == (title,) for c in chunks if c.start_line > 1)


# -- plain text and reStructuredText ------------------------------------------------------


@pytest.mark.parametrize("overlap", [16, 30])  # 30: half of the budget, the most allowed (OpenAI's 800/400)
def test_text_is_packed_by_paragraph_with_overlap(overlap: int) -> None:
    paragraphs = [f"Paragraph {n} has a few short words in it." for n in range(30)]
    text = "\n\n".join(paragraphs) + "\n"
    budget = TokenBudget(max_tokens=60, overlap_tokens=overlap)
    chunks = chunk_file("notes.txt", text, "text", "text", budget)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text == lines_of(text, chunk) and chunk.context == ()
        assert chunk.text.split("\n")[0].startswith("Paragraph")  # cut at paragraphs
        assert budget.count(chunk.text) <= 60
    assert all(b.start_line <= a.end_line for a, b in pairwise(chunks))
    assert covered(chunks) >= set(range(1, 60, 2))


RST = """=====
Guide
=====

Intro paragraph.

Install
=======

How to install.

On Linux
--------

apt install it.

Use
===

Run it.
"""


def test_rst_titles_become_context() -> None:
    chunks = chunk_file("guide.rst", RST, "rst", "rst")
    got = [(c.start_line, c.end_line, c.context) for c in chunks]
    assert got == [
        (1, 5, ("Guide",)),
        (7, 10, ("Guide", "Install")),
        (12, 15, ("Guide", "Install", "On Linux")),
        (17, 20, ("Guide", "Use")),
    ]
    assert all(c.text == lines_of(RST, c) and c.kind == "rst" for c in chunks)


def test_stdlib_rst_like_text_has_exact_ranges() -> None:
    """A long real file read as plain text: every line of it lands in a chunk."""
    name, text = stdlib_source(inspect)
    chunks = chunk_file(name, text, "text", "text")
    non_blank = {n for n, line in enumerate(text.split("\n"), 1) if line.strip()}
    assert non_blank <= covered(chunks)
    for chunk in chunks:
        assert approx_token_count(chunk.text) <= 256
        if chunk.start_line < chunk.end_line:
            assert chunk.text == lines_of(text, chunk)
