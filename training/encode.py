"""Rows to token sequences: the base model's own chat template, loss only on assistant tokens.

Each row is rendered with `tokenizer.apply_chat_template`. The characters an assistant turn
adds are found by rendering the conversation up to that turn twice, once ending with the
generation prompt and once with the turn itself: the difference is the turn's content and its
end-of-turn token (trailing whitespace after it is not learned). The full text is tokenised
once and every token overlapping such a span is labelled; everything else is -100. This works
for any template that renders turns incrementally; one that does not is reported, never guessed.

Sequences longer than `max_seq_len` are cut at the end (counted); with packing, rows are laid
end to end up to `max_seq_len`, and position ids restart at each row so attention stays within
the row (transformers builds the block-diagonal mask from them when no attention mask is given).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

from lampstand.plugins.errors import InvalidRequest

from .data import Example, TrainingData

__all__ = ["IGNORE", "EncodedRow", "Sequence", "EncodeReport", "encode_example", "encode_dataset",
           "assistant_spans"]

IGNORE = -100  # the label cross-entropy skips


@dataclass(frozen=True)
class EncodedRow:
    """One row's tokens and labels (-100 outside assistant turns)."""

    line: int
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Sequence:
    """One training sequence: a row, or several packed rows with restarting positions."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    @property
    def label_count(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass
class EncodeReport:
    """What encoding did to a file: rows cut, tokens dropped, rows left with nothing to learn."""

    rows: int = 0
    sequences: int = 0
    tokens: int = 0
    label_tokens: int = 0
    longest_row: int = 0
    truncated_rows: int = 0
    dropped_tokens: int = 0
    empty_lines: list[int] = field(default_factory=list)  # rows whose assistant tokens were all cut
    packed: bool = False

    def summary(self) -> str:
        """One line for people."""
        text = (f"{self.rows} rows -> {self.sequences} sequences{' (packed)' if self.packed else ''}, "
                f"{self.tokens} tokens ({self.label_tokens} trained)")
        if self.truncated_rows:
            text += f"; {self.truncated_rows} rows cut to --max-seq-len, {self.dropped_tokens} tokens dropped"
        if self.empty_lines:
            shown = ", ".join(str(n) for n in self.empty_lines[:10])
            more = ", ..." if len(self.empty_lines) > 10 else ""
            text += f"; skipped (no assistant tokens left after cutting): lines {shown}{more}"
        return text


def _render(tokenizer: Any, messages: Seq[Any], generation_prompt: bool) -> str:
    chat = [{"role": m.role, "content": m.content} for m in messages]
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of its trained assistant turns."""
    messages = example.messages
    full = _render(tokenizer, messages, False)
    spans = []
    for index, message in enumerate(messages):
        if message.role != "assistant" or not message.weight:
            continue
        before = _render(tokenizer, messages[:index], True)
        through = _render(tokenizer, messages[:index + 1], False)
        if not (through.startswith(before) and full.startswith(through)):
            raise InvalidRequest(f"line {example.line}: the base model's chat template does not render turns "
                                 "one after another, so assistant tokens cannot be located")
        spans.append((len(before), len(through.rstrip())))
    return full, spans


def _plain_spans(tokenizer: Any, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """Prompt then completion then the end-of-sequence token, for a base with no chat template."""
    if any(m.role == "system" for m in example.messages) or len(example.messages) != 2:
        raise InvalidRequest("the base model has no chat template: use prompt/completion rows")
    prompt, completion = example.messages[0].content, example.messages[1].content
    text = prompt + completion + (tokenizer.eos_token or "")
    return text, [(len(prompt), len(text))]


def encode_example(tokenizer: Any, example: Example) -> EncodedRow:
    """Tokens and labels for one row, labels set on tokens overlapping an assistant span."""
    render = assistant_spans if tokenizer.chat_template else _plain_spans
    text, spans = render(tokenizer, example)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    labels = [IGNORE] * len(ids)
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        if end > start and any(start < span_end and end > span_start for span_start, span_end in spans):
            labels[position] = ids[position]
    return EncodedRow(example.line, ids, labels)


def _cut(row: EncodedRow, max_seq_len: int, report: EncodeReport) -> EncodedRow | None:
    """The row within `max_seq_len`, or None (reported) when nothing trained is left."""
    if len(row.input_ids) > max_seq_len:
        report.truncated_rows += 1
        report.dropped_tokens += len(row.input_ids) - max_seq_len
        row = EncodedRow(row.line, row.input_ids[:max_seq_len], row.labels[:max_seq_len])
    if all(label == IGNORE for label in row.labels):
        report.empty_lines.append(row.line)
        return None
    return row


def _pack(rows: list[EncodedRow], max_seq_len: int) -> list[Sequence]:
    """Rows laid end to end, in order, a new sequence whenever the next would overflow."""
    packed: list[Sequence] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for row in rows:
        if ids and len(ids) + len(row.input_ids) > max_seq_len:
            packed.append(Sequence(ids, labels, positions))
            ids, labels, positions = [], [], []
        ids, labels = ids + row.input_ids, labels + row.labels
        positions = positions + list(range(len(row.input_ids)))
    if ids:
        packed.append(Sequence(ids, labels, positions))
    return packed


def encode_dataset(tokenizer: Any, data: TrainingData, max_seq_len: int,
                   packing: bool = False) -> tuple[list[Sequence], EncodeReport]:
    """Every row of `data` as training sequences, with a report of what was cut."""
    report = EncodeReport(rows=len(data.examples), packed=packing)
    rows = []
    for example in data.examples:
        row = encode_example(tokenizer, example)
        report.longest_row = max(report.longest_row, len(row.input_ids))
        kept = _cut(row, max_seq_len, report)
        if kept is not None:
            rows.append(kept)
    if not rows:
        raise InvalidRequest(f"{data.path.name}: no row has assistant tokens within --max-seq-len {max_seq_len}")
    sequences = (_pack(rows, max_seq_len) if packing
                 else [Sequence(r.input_ids, r.labels, list(range(len(r.input_ids)))) for r in rows])
    report.sequences = len(sequences)
    report.tokens = sum(len(s.input_ids) for s in sequences)
    report.label_tokens = sum(s.label_count for s in sequences)
    return sequences, report
