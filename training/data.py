"""Training files: JSON Lines in OpenAI's chat fine-tuning format or as prompt/completion pairs.

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "...", "weight": 0}, ...]}
    {"prompt": "...", "completion": "..."}

Every line is checked before anything is trained, and every bad line is reported at once (up
to a cap) with its line number, in one `DataError`. This module reads files only; turning rows
into tokens is `encode`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lampstand.plugins.errors import InvalidRequest

from .manifest import file_sha256

__all__ = ["DataError", "Message", "Example", "TrainingData", "load_training_file", "MAX_REPORTED_ERRORS"]

MAX_REPORTED_ERRORS = 20
STOP_AFTER_ERRORS = 1000  # a file this broken is not read to its end
ROLES = ("system", "user", "assistant")
Format = Literal["chat", "prompt_completion"]


class DataError(InvalidRequest):
    """A training file that cannot be used; the message lists the bad lines."""

    code = "invalid_training_file"


@dataclass(frozen=True)
class Message:
    """One chat turn; `weight` 0 keeps an assistant turn out of the loss."""

    role: str
    content: str
    weight: int = 1


@dataclass(frozen=True)
class Example:
    """One training row, as chat turns, with the line it came from."""

    line: int
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class TrainingData:
    """A validated training file."""

    path: Path
    format: Format
    examples: tuple[Example, ...]
    sha256: str


def _content(value: Any) -> str | None:
    """Message content as text: a string, or a list of OpenAI text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                       and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    return None


def _message(index: int, raw: Any) -> Message | str:
    """One message, or why it is not one."""
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        return f"{where} is not an object"
    role = raw.get("role")
    if role not in ROLES:
        return f"{where}.role must be one of {', '.join(ROLES)} (got {role!r})"
    if "content" not in raw:
        return f"{where} has no 'content'"
    content = _content(raw["content"])
    if content is None:
        return f"{where}.content must be a string"
    weight = raw.get("weight", 1)
    if "weight" in raw and (role != "assistant" or weight not in (0, 1) or isinstance(weight, bool)):
        return f"{where}.weight must be 0 or 1, on assistant messages only"
    return Message(role, content, int(weight))


def _chat_row(line: int, row: dict[str, Any]) -> tuple[Example | None, str | None]:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return None, "'messages' must be a non-empty list"
    parsed: list[Message] = []
    for index, raw in enumerate(messages):
        message = _message(index, raw)
        if isinstance(message, str):
            return None, message
        parsed.append(message)
    if not any(m.role == "assistant" for m in parsed):
        return None, "no assistant message"
    if not any(m.role == "assistant" and m.weight for m in parsed):
        return None, "every assistant message has weight 0: nothing to learn"
    return Example(line, tuple(parsed)), None


def _pair_row(line: int, row: dict[str, Any]) -> tuple[Example | None, str | None]:
    prompt, completion = row.get("prompt"), row.get("completion")
    if not isinstance(prompt, str):
        return None, "'prompt' must be a string"
    if not isinstance(completion, str) or not completion:
        return None, "'completion' must be a non-empty string"
    return Example(line, (Message("user", prompt), Message("assistant", completion))), None


def _row_format(row: Any) -> Format | None:
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "chat"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    return None


def _summary(path: Path, errors: list[str], count: int, stopped_at: int | None) -> str:
    shown = "; ".join(errors)
    more = f"; and {count - len(errors)} more" if count > len(errors) else ""
    if stopped_at is not None:
        more += f" (stopped reading at line {stopped_at})"
    noun = "bad line" if count == 1 else "bad lines"
    return f"{path.name}: {count}{'+' if stopped_at else ''} {noun}: {shown}{more}"


class _Errors:
    """The first `MAX_REPORTED_ERRORS` problems and how many there were: a file of a million
    bad lines costs a counter, not a million messages."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_REPORTED_ERRORS:
            self.shown.append(message)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(number, line) of the file, read as it goes."""
    try:
        with path.open(encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except FileNotFoundError as exc:
        raise DataError(f"training file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read training file {path}: {exc}") from exc


def load_training_file(path: Path) -> TrainingData:
    """Read and validate a JSONL training file, streaming; `DataError` names the bad lines."""
    path = Path(path)
    examples: list[Example] = []
    errors = _Errors()
    file_format: Format | None = None
    stopped_at: int | None = None
    for line_no, line in _lines(path):
        if errors.count >= STOP_AFTER_ERRORS:
            stopped_at = line_no
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.add(f"line {line_no}: not valid JSON ({exc.msg})")
            continue
        except RecursionError:
            errors.add(f"line {line_no}: nested too deeply")
            continue
        row_format = _row_format(row)
        if row_format is None:
            errors.add(f"line {line_no}: expected an object with 'messages', or 'prompt' and 'completion'")
            continue
        file_format = file_format or row_format
        if row_format != file_format:
            errors.add(f"line {line_no}: a {row_format} row in a {file_format} file (mixed formats)")
            continue
        example, problem = (_chat_row if row_format == "chat" else _pair_row)(line_no, row)
        if problem:
            errors.add(f"line {line_no}: {problem}")
        elif not errors.count:  # once a line is bad the rows are not needed, only the report
            examples.append(example)  # type: ignore[arg-type]
    if errors.count:
        raise DataError(_summary(path, errors.shown, errors.count, stopped_at))
    if not examples:
        raise DataError(f"{path.name}: no training rows (the file is empty)")
    return TrainingData(path, file_format or "chat", tuple(examples), file_sha256(path))
