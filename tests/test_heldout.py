"""Held-out question sets and the BM25-over-windows baseline, on folders written here."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from lampstand.indexer.evaluation import CorpusError, load_retrieval_qa
from lampstand.indexer.evaluation.baseline import WindowBM25, windows
from lampstand.indexer.evaluation.heldout import build_heldout_corpus, markdown_sections

CODE = '''"""A module about lamps."""


class Lamp:
    """A lamp on a stand."""

    def light(self, match: str) -> None:
        """Light the wick with the given match and wait for the flame to settle.

        The match is used once.
        """
        self.lit = True

    def trim(self) -> None:
        """Trim the cotton wick flat so that the flame does not smoke."""


@staticmethod
def polish(cloth: str) -> str:
    """Polish the brass body with a soft cloth until it shines again."""
    return cloth


def _private(x: int) -> int:
    """A private helper that must never be asked about by anyone."""
    return x
'''

NOTES = """# Oil lamps

<!-- YAML
added: v1.0.0
-->

> Stability: 2 - Stable

Paraffin oil burns cleanly in a well trimmed lamp for many hours. Keep the wick short.

```sh
# this line is code, not a heading
echo lamp
```

## Storage

- a list first: no question here

## Chimneys

Glass chimneys draw air past the flame so that it burns without flicker. Clean them weekly.
"""


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    (root / "docs").mkdir(parents=True)
    (root / "lamps.py").write_text(CODE)
    (root / "docs" / "oil.md").write_text(NOTES)
    (root / ".hidden.md").write_text("# Hidden\n\nThis sentence is hidden from everyone who looks for it.\n")
    return root


def test_sections_skip_fenced_code_and_find_prose_past_comments() -> None:
    sections = markdown_sections(NOTES.split("\n"))
    assert [s.heading for s in sections] == ["Oil lamps", "Storage", "Chimneys"]
    assert sections[0].paragraph == (9, 9) and sections[1].paragraph is None
    assert sections[0].end_line == sections[1].start_line - 1


def test_heldout_removes_every_asked_text_and_keeps_line_numbers(source: Path, tmp_path: Path) -> None:
    built = build_heldout_corpus(source, tmp_path / "out", max_questions=10)
    notes, code = load_retrieval_qa(built.notes_qa), load_retrieval_qa(built.code_qa)
    assert [row.question for row in notes] == [
        "Paraffin oil burns cleanly in a well trimmed lamp for many hours.",
        "Glass chimneys draw air past the flame so that it burns without flicker."]
    assert [row.symbol for row in code] == ["Lamp.light", "Lamp.trim", "polish"]
    assert {p.relative_to(built.root).as_posix() for p in built.root.rglob("*") if p.is_file()} == {
        "lamps.py", "docs/oil.md"}
    for row in [*notes, *code]:
        copy = (built.root / row.target.path).read_text()
        assert row.question not in copy
        assert copy.count("\n") == (source / row.target.path).read_text().count("\n")
    copy = (built.root / "lamps.py").read_text()
    ast.parse(copy)  # a body left with only its docstring still compiles
    assert "Keep the wick short." in (built.root / "docs/oil.md").read_text()
    assert "The match is used once" not in copy and "A lamp on a stand." in copy
    light = next(row for row in code if row.symbol == "Lamp.light")
    assert CODE.split("\n")[light.target.start_line - 1].strip().startswith("def light")
    polish = next(row for row in code if row.symbol == "polish")
    assert CODE.split("\n")[polish.target.start_line - 1] == "@staticmethod"


def test_heldout_is_seeded_and_refuses_a_full_target(source: Path, tmp_path: Path) -> None:
    first = build_heldout_corpus(source, tmp_path / "a", max_questions=1, seed=3)
    again = build_heldout_corpus(source, tmp_path / "b", max_questions=1, seed=3)
    assert first.code_qa.read_text() == again.code_qa.read_text() and first.code_questions == 1
    assert json.loads((tmp_path / "a" / "corpus.json").read_text())["seed"] == 3
    with pytest.raises(CorpusError, match="not an empty folder"):
        build_heldout_corpus(source, tmp_path / "a")
    with pytest.raises(CorpusError, match="no Markdown or Python"):
        build_heldout_corpus(_empty(tmp_path), tmp_path / "c")


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.bin").write_bytes(b"\0")
    return tmp_path / "empty"


@pytest.mark.parametrize("lines", [0, 1, 39, 40, 41, 70, 71, 100])
def test_windows_cover_every_line(lines: int) -> None:
    text = "\n".join(f"line {n}" for n in range(1, lines + 1))
    cut = windows("f.txt", text)
    covered = {n for w in cut for n in range(w.start_line, w.end_line + 1)}
    assert covered == set(range(1, lines + 1))
    assert all(w.end_line - w.start_line < 40 for w in cut)
    assert [w.start_line for w in cut] == list(range(1, 30 * len(cut), 30))


def test_baseline_ranks_the_file_that_holds_the_words(source: Path) -> None:
    baseline = WindowBM25([source])
    hits = baseline.search("glass chimneys flicker", "baseline", False, 5)
    assert hits[0]["path"] == "docs/oil.md" and hits[0]["start_line"] == 1
    assert baseline.search("the and of", "baseline", False, 5) == []
    assert {w.path for w in baseline.windows} == {"lamps.py", "docs/oil.md"}  # hidden files skipped, as indexed
