"""Held-out questions over any folder: the asked text is removed from the copy that gets indexed.

`build_heldout_corpus(source, target)` copies the Markdown and Python files under `source` into
`target/corpus/` and writes two question files beside it (never inside the indexed folder):

- `qa_notes.jsonl`: for sampled Markdown sections, the first sentence of the section's first
  paragraph is the question, and it is deleted from the copy; the target is the section's lines.
- `qa_code.jsonl`: for sampled public functions and methods, the docstring's summary sentence is
  the question, and the whole docstring is deleted from the copy; the target is the definition.

So no question appears verbatim in the indexed text: a search has to find the section or the
function from what is left around the answer, which is what a person asking about their notes or
code needs. Deleted lines are left blank, so every line number in the copy is the original's.
Sampling is seeded and files are visited in sorted order: the same folder and seed give the same
corpus. Pure file work; nothing here indexes or searches.
"""

from __future__ import annotations

import ast
import json
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .docstrings import first_sentence, summary_of, words
from .errors import CorpusError
from .qa import write_jsonl
from .stdlib_corpus import prepare_target, unambiguous

__all__ = ["HeldoutCorpus", "build_heldout_corpus", "markdown_sections"]

NOTE_SUFFIXES = frozenset({".md", ".markdown"})
CODE_SUFFIXES = frozenset({".py"})
MIN_SENTENCE_WORDS = 6
MAX_FILE_BYTES = 2_000_000
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+\S")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_NOT_PROSE = re.compile(r"^\s*([-*+>|<]|\d+[.)]\s|!?\[|`|    |\t|#|=|\.\.)")


@dataclass(frozen=True)
class Section:
    """A Markdown section: its heading line, its last line, and its first paragraph's lines."""

    heading: str
    start_line: int
    end_line: int
    paragraph: tuple[int, int] | None  # first and last line of the first prose paragraph


@dataclass
class HeldoutCorpus:
    """What `build_heldout_corpus` wrote."""

    root: Path  # the folder to index
    notes_qa: Path
    code_qa: Path
    files: int
    notes_questions: int
    code_questions: int
    skipped: list[str] = field(default_factory=list)  # files that could not be read or parsed


def _lines(text: str) -> list[str]:
    return text.split("\n")


def markdown_sections(lines: list[str]) -> list[Section]:
    """ATX-headed sections outside fenced code, each with its first prose paragraph (1-based lines)."""
    headings: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(lines, 1):
        opened = _FENCE.match(line)
        if fence is not None:
            fence = None if opened and opened.group(1)[0] == fence[0] else fence
        elif opened:
            fence = opened.group(1)
        elif _ATX.match(line):
            headings.append((number, line.strip("# \t")))
    ends = [start - 1 for start, _ in headings[1:]] + [len(lines)] * bool(headings)
    return [Section(title, start, end, _first_paragraph(lines, start, end))
            for (start, title), end in zip(headings, ends, strict=True)]


def _first_paragraph(lines: list[str], heading: int, end: int) -> tuple[int, int] | None:
    """The first run of non-blank prose lines after the heading, past blank lines, HTML
    comments (metadata such as `<!-- YAML ... -->`) and block quotes; None when another kind
    of block (a list, a table, code) comes first."""
    number = heading + 1
    while number <= end:
        line = lines[number - 1].strip()
        if line.startswith("<!--"):
            while number < end and "-->" not in lines[number - 1]:
                number += 1
        elif line and not line.startswith(">"):
            break
        number += 1
    if number > end or _NOT_PROSE.match(lines[number - 1]):
        return None
    last = number
    while last < end and lines[last].strip() and not _NOT_PROSE.match(lines[last]):
        last += 1
    return number, last


@dataclass(frozen=True)
class _Question:
    """One question and the edit that removes its answer text from the copy."""

    row: dict[str, Any]
    edits: dict[int, str]  # 1-based line -> new text


def _note_questions(rel: str, lines: list[str]) -> Iterator[_Question]:
    for section in markdown_sections(lines):
        if section.paragraph is None:
            continue
        first, last = section.paragraph
        paragraph = " ".join(" ".join(lines[first - 1:last]).split())
        sentence = first_sentence(paragraph)
        # a paragraph that is one sentence about a code literal leaves nothing to find it by
        if len(words(sentence)) < MIN_SENTENCE_WORDS or sentence == paragraph and "`" in sentence:
            continue
        rest = paragraph[len(sentence):].strip()
        edit = {number: "" for number in range(first, last + 1)} | {first: rest}
        yield _Question({"question": sentence, "path": rel, "start_line": section.start_line,
                         "end_line": section.end_line, "symbol": section.heading[:200]}, edit)


def _code_questions(rel: str, lines: list[str]) -> Iterator[_Question]:
    try:
        tree = ast.parse("\n".join(lines))
    except (SyntaxError, ValueError):
        return
    for node, qualname in _functions(tree.body, ""):
        docstring = ast.get_docstring(node)
        summary = summary_of(docstring) if docstring else None
        expr = node.body[0]
        if summary is None or expr.lineno == node.lineno or expr.end_lineno is None:
            continue
        indent = lines[expr.lineno - 1][: expr.col_offset]
        statement = indent + "..." if len(node.body) == 1 else ""  # a body of only the docstring needs one
        edit = {number: "" for number in range(expr.lineno, expr.end_lineno + 1)} | {expr.lineno: statement}
        start = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
        yield _Question({"question": summary, "path": rel, "start_line": start,
                         "end_line": node.end_lineno or node.lineno, "symbol": qualname}, edit)


def _functions(body: list[ast.stmt], prefix: str) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    """Public functions and methods (not nested in functions), with their qualified names."""
    for node in body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node, prefix + node.name


def _source_files(source: Path) -> list[Path]:
    suffixes = NOTE_SUFFIXES | CODE_SUFFIXES
    return sorted(path for path in source.rglob("*")
                  if path.suffix.lower() in suffixes and path.is_file() and not path.is_symlink()
                  and not _SKIPPED_DIRS & set(path.relative_to(source).parts[:-1])
                  and not any(part.startswith(".") for part in path.relative_to(source).parts))


def build_heldout_corpus(source: Path, target: Path, *, max_questions: int = 100, seed: int = 0) -> HeldoutCorpus:
    """Copy `source`'s Markdown and Python into `target/corpus` with sampled answers removed."""
    source, target = Path(source).resolve(), Path(target)
    if not source.is_dir():
        raise CorpusError(f"{source} is not a folder")
    texts, skipped = _read_sources(source)
    if not texts:
        raise CorpusError(f"no Markdown or Python files under {source}")
    prepare_target(target)
    rng = random.Random(seed)
    chosen: dict[str, list[_Question]] = {}
    for kind, make, suffixes in (("notes", _note_questions, NOTE_SUFFIXES), ("code", _code_questions, CODE_SUFFIXES)):
        candidates = unambiguous([q for rel, lines in texts.items() if Path(rel).suffix.lower() in suffixes
                                  for q in make(rel, lines)], lambda q: str(q.row["question"]))
        picked = candidates if len(candidates) <= max_questions else rng.sample(candidates, max_questions)
        chosen[kind] = sorted(picked, key=lambda q: (q.row["path"], q.row["start_line"]))
    root = target / "corpus"
    _write_copy(root, texts, [q for qs in chosen.values() for q in qs])
    corpus = HeldoutCorpus(root, target / "qa_notes.jsonl", target / "qa_code.jsonl", len(texts),
                           len(chosen["notes"]), len(chosen["code"]), skipped)
    write_jsonl(corpus.notes_qa, (q.row for q in chosen["notes"]))
    write_jsonl(corpus.code_qa, (q.row for q in chosen["code"]))
    manifest = {"source": str(source), "seed": seed, "files": corpus.files, "skipped": skipped,
                "notes_questions": corpus.notes_questions, "code_questions": corpus.code_questions}
    (target / "corpus.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return corpus


def _read_sources(source: Path) -> tuple[dict[str, list[str]], list[str]]:
    texts: dict[str, list[str]] = {}
    skipped: list[str] = []
    for path in _source_files(source):
        rel = path.relative_to(source).as_posix()
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError("too large")
            texts[rel] = _lines(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            skipped.append(rel)
    return texts, skipped


def _write_copy(root: Path, texts: dict[str, list[str]], questions: list[_Question]) -> None:
    edits: dict[str, dict[int, str]] = {}
    for question in questions:
        edits.setdefault(question.row["path"], {}).update(question.edits)
    if root.exists():
        shutil.rmtree(root)
    for rel, lines in texts.items():
        edited = [edits.get(rel, {}).get(number, line) for number, line in enumerate(lines, 1)]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("\n".join(edited), encoding="utf-8")
