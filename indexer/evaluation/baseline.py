"""The naive baseline beside every retrieval report: BM25 over fixed line windows.

What a person could write in a dozen lines with `bm25s`: each file the index would hold (the
indexer's own file rules, so both see the same files) cut into 40-line windows with a stride of
30, English stop words removed, no stemming, no structure, no embeddings. A retrieval method
that does not beat this on held-out questions is not worth its complexity. `WindowBM25.search`
has the runner's `SearchFn` shape, so the baseline is scored by the same code as every mode.
Runs in the caller's process; never talks to a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sources import SourceOptions, iter_sources
from .errors import CorpusError, MissingDependency
from .runner import RetrievalMode

__all__ = ["BASELINE_MODE", "WindowBM25", "windows"]

BASELINE_MODE = RetrievalMode("bm25-windows", "baseline")
WINDOW_LINES = 40
STRIDE_LINES = 30


@dataclass(frozen=True)
class Window:
    """Lines `start_line..end_line` (1-based, inclusive) of one file."""

    path: str
    start_line: int
    end_line: int
    text: str


def windows(path: str, text: str, size: int = WINDOW_LINES, stride: int = STRIDE_LINES) -> list[Window]:
    """Overlapping windows of `size` lines every `stride` lines, the last one reaching the end."""
    lines = text.splitlines()
    if not lines:
        return []
    starts = range(0, max(len(lines) - size, 0) + stride, stride)
    return [Window(path, start + 1, min(start + size, len(lines)), "\n".join(lines[start:start + size]))
            for start in starts]


class WindowBM25:
    """BM25 (bm25s, English stop words) over the windows of every file under `roots`."""

    def __init__(self, roots: Iterable[Path], options: SourceOptions | None = None) -> None:
        try:
            import bm25s
        except ImportError as exc:
            raise MissingDependency("bm25s") from exc
        self._bm25s = bm25s
        self.windows = [w for source in iter_sources(roots, options) for w in windows(source.rel_path, source.text)]
        if not self.windows:
            raise CorpusError("the baseline found no files to index")
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize([w.text for w in self.windows], stopwords="en", show_progress=False),
                              show_progress=False)

    def search(self, question: str, mode: str, rerank: bool, top_k: int) -> Sequence[Mapping[str, Any]]:
        """The `top_k` best windows as search rows (`path`, `start_line`, `end_line`, `score`)."""
        tokens = self._bm25s.tokenize([question], stopwords="en", return_ids=False, show_progress=False)
        if not tokens[0]:
            return []
        found, scores = self._retriever.retrieve(tokens, k=min(top_k, len(self.windows)), show_progress=False)
        return [{"path": self.windows[i].path, "start_line": self.windows[i].start_line,
                 "end_line": self.windows[i].end_line, "score": float(score)}
                for i, score in zip(found[0], scores[0], strict=True) if score > 0]
