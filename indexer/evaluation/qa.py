"""Question files for evaluation: JSON Lines, validated row by row, with the line in every error.

Retrieval rows ask a question and name where the answer lives::

    {"question": "Remove any common leading whitespace from every line", "path": "textwrap.py",
     "start_line": 414, "end_line": 460}

`path` is relative to the indexed root with `/` separators; `start_line`/`end_line` (1-based,
inclusive, both or neither) narrow the target to a line range. A question with several
acceptable sources is written as several rows with the same question text.

Answer rows ask a question and give a reference answer, optionally with the source the
answer should cite (`path`, optionally with lines)::

    {"question": "...", "answer": "...", "path": "textwrap.py"}

Both kinds may carry a free-text `symbol` (what the target is called, for people reading the
file). Any other key is an error, so a misspelt `start_lines` is not silently ignored. A hit
(a search result or a rag source) matches a target when the paths are equal and, when the
target has lines, the line ranges overlap. This module reads files and never talks to a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import QAFileError

__all__ = [
    "AnswerRow",
    "RetrievalQuery",
    "RetrievalRow",
    "Target",
    "group_queries",
    "hit_matches",
    "load_answer_qa",
    "load_retrieval_qa",
    "matched_targets",
    "write_jsonl",
]


@dataclass(frozen=True)
class Target:
    """Where an answer lives: a file, or lines `start_line..end_line` of it (inclusive)."""

    path: str
    start_line: int | None = None
    end_line: int | None = None

    def matches(self, path: str, start_line: int, end_line: int) -> bool:
        """True when a hit on `path` lines `start_line..end_line` falls on this target."""
        if path != self.path:
            return False
        if self.start_line is None or self.end_line is None:
            return True
        return start_line <= self.end_line and self.start_line <= end_line

    def as_dict(self) -> dict[str, Any]:
        """The row fields of this target (lines only when given)."""
        lines = {} if self.start_line is None else {"start_line": self.start_line, "end_line": self.end_line}
        return {"path": self.path, **lines}


@dataclass(frozen=True)
class RetrievalRow:
    """One row of a retrieval question file; `line` is its line number in the file."""

    question: str
    target: Target
    line: int
    symbol: str | None = None


@dataclass(frozen=True)
class AnswerRow:
    """One row of an answer question file; `target` is the source the answer should cite."""

    question: str
    answer: str
    target: Target | None
    line: int
    symbol: str | None = None


@dataclass(frozen=True)
class RetrievalQuery:
    """A question with every target it accepts (rows sharing the question, in file order)."""

    question: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class _Where:
    """The file and line a row came from, to name in errors."""

    source: str
    line: int

    def error(self, problem: str) -> QAFileError:
        return QAFileError(self.source, self.line, problem)


_DRIVE = re.compile(r"^[A-Za-z]:")
_RETRIEVAL_KEYS = frozenset({"question", "path", "start_line", "end_line", "symbol"})
_ANSWER_KEYS = frozenset({"question", "answer", "path", "start_line", "end_line", "symbol"})


def hit_matches(hit: Mapping[str, Any], target: Target) -> bool:
    """True when a search result or rag source (`path`, `start_line`, `end_line`) hits `target`."""
    return target.matches(str(hit["path"]), int(hit["start_line"]), int(hit["end_line"]))


def matched_targets(hit: Mapping[str, Any], targets: Iterable[Target]) -> frozenset[int]:
    """The indices of the targets that `hit` falls on."""
    return frozenset(i for i, target in enumerate(targets) if hit_matches(hit, target))


def group_queries(rows: Iterable[RetrievalRow]) -> list[RetrievalQuery]:
    """One query per distinct question, in order of first appearance, with all its targets."""
    targets: dict[str, list[Target]] = {}
    for row in rows:
        found = targets.setdefault(row.question, [])
        if row.target not in found:
            found.append(row.target)
    return [RetrievalQuery(question, tuple(found)) for question, found in targets.items()]


def _objects(path: Path) -> Iterator[tuple[_Where, dict[str, Any]]]:
    """Each non-blank line of a JSONL file, parsed, with where it came from."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QAFileError(str(path), None, f"cannot read: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = _Where(str(path), number)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise where.error(f"not valid JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            raise where.error(f"expected a JSON object, got {type(value).__name__}")
        yield where, value


def _check_keys(where: _Where, row: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise where.error(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _text(where: _Where, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"{key!r} must be a non-empty string")
    return value.strip()


def _optional_text(where: _Where, row: dict[str, Any], key: str) -> str | None:
    return None if row.get(key) is None else _text(where, row, key)


def _relative_path(where: _Where, value: str) -> str:
    posix = PurePosixPath(value.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or _DRIVE.match(value):
        raise where.error(f"'path' must be relative to the indexed root, got {value!r}")
    return posix.as_posix()


def _line_number(where: _Where, row: dict[str, Any], key: str) -> int:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise where.error(f"{key!r} must be a positive integer, got {value!r}")
    return value


def _target(where: _Where, row: dict[str, Any]) -> Target:
    path = _relative_path(where, _text(where, row, "path"))
    has_lines = ("start_line" in row, "end_line" in row)
    if not all(has_lines):
        if any(has_lines):
            raise where.error("give both 'start_line' and 'end_line', or neither")
        return Target(path)
    start, end = _line_number(where, row, "start_line"), _line_number(where, row, "end_line")
    if start > end:
        raise where.error(f"'start_line' {start} is after 'end_line' {end}")
    return Target(path, start, end)


def _optional_target(where: _Where, row: dict[str, Any]) -> Target | None:
    if row.get("path") is not None:
        return _target(where, row)
    if "start_line" in row or "end_line" in row:
        raise where.error("'start_line'/'end_line' need a 'path'")
    return None


def _retrieval_row(where: _Where, row: dict[str, Any]) -> RetrievalRow:
    _check_keys(where, row, _RETRIEVAL_KEYS)
    return RetrievalRow(_text(where, row, "question"), _target(where, row), where.line,
                        _optional_text(where, row, "symbol"))


def _answer_row(where: _Where, row: dict[str, Any]) -> AnswerRow:
    _check_keys(where, row, _ANSWER_KEYS)
    return AnswerRow(_text(where, row, "question"), _text(where, row, "answer"),
                     _optional_target(where, row), where.line, _optional_text(where, row, "symbol"))


def load_retrieval_qa(path: str | Path) -> list[RetrievalRow]:
    """The rows of a retrieval question file; `QAFileError` names the line of the first bad row."""
    rows = [_retrieval_row(where, row) for where, row in _objects(Path(path))]
    if not rows:
        raise QAFileError(str(path), None, "no questions in the file")
    return rows


def load_answer_qa(path: str | Path) -> list[AnswerRow]:
    """The rows of an answer question file; `QAFileError` names the line of the first bad row."""
    rows = [_answer_row(where, row) for where, row in _objects(Path(path))]
    if not rows:
        raise QAFileError(str(path), None, "no questions in the file")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write one compact JSON object per line (UTF-8, keys in the given order); the row count."""
    lines = [json.dumps(dict(row), ensure_ascii=False) for row in rows]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
