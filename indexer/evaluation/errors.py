"""The evaluation harness's errors, as a branch of lampstand's one exception tree.

LampstandError (lampstand.plugins.errors)
├── InvalidRequest
│   ├── QAFileError             400 code=invalid_qa_file (names the file and the line)
│   └── RerankerUnavailable     400 code=reranker_unavailable (the server has no reranker)
├── MissingDependency           500 code=missing_dependency (an optional extra is not installed)
└── CorpusError                 500 code=corpus_error (the target is not empty, no module found)
"""

from __future__ import annotations

from lampstand.plugins.errors import InvalidRequest, LampstandError

__all__ = ["CorpusError", "MissingDependency", "QAFileError", "RerankerUnavailable"]


class QAFileError(InvalidRequest):
    """A question file cannot be read, or one of its rows is malformed."""

    code = "invalid_qa_file"

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.line = line


class RerankerUnavailable(InvalidRequest):
    """A search asked for reranking and the server has no reranker model to do it."""

    code = "reranker_unavailable"


class MissingDependency(LampstandError):
    """An optional package the evaluation needs is not installed."""

    code = "missing_dependency"

    def __init__(self, package: str, extra: str = "eval") -> None:
        super().__init__(f"{package} is not installed; run `pip install lampstand[{extra}]`")
        self.package = package


class CorpusError(LampstandError):
    """The test corpus cannot be built where or from what was asked."""

    code = "corpus_error"
