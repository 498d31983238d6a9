"""A test corpus nobody here wrote: a slice of the running interpreter's standard library.

`build_stdlib_corpus(target)` copies the chosen modules' `.py` files from the interpreter's
stdlib folder (`sysconfig`) into `target`, keeping their paths relative to the stdlib
(`textwrap.py`, `json/decoder.py`), writes the language reference topics that ship with the
interpreter (`pydoc_data.topics`, when present) as one Markdown file per topic under
`pydoc_topics/`, and derives question files mechanically, with paths relative to `target`:

- `qa_retrieval.jsonl`: for each public function, class or method whose docstring summary
  is informative (see `docstrings.summary_of`) the question is the summary sentence as it
  stands, the target its file and line range. A summary shared by several definitions is
  dropped, since it would have several right answers. The docstrings stay in the corpus,
  so every question appears verbatim in the text it should find: this favours lexical
  search and measures whether retrieval works at all, not how well it paraphrases.
- `qa_retrieval_hard.jsonl`: the same targets, the questions with the definition's own
  name and its classes' names removed.
- `qa_answers.jsonl`: a smaller subset whose docstring says more than its summary; the
  question is the summary, the reference answer the docstring's first paragraph (the first
  two when the first is the summary line alone, as PEP 257 writes them).
- `corpus.json`: the interpreter version, modules and counts.

The output is deterministic for a given interpreter: files and rows are sorted and sampling
is seeded. The `.jsonl`/`.json` files are not indexed (their extension is not a source).
"""

from __future__ import annotations

import importlib
import json
import platform
import random
import re
import shutil
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .docstrings import Definition, definitions, reference_answer, summary_of, without_names
from .errors import CorpusError
from .qa import write_jsonl

__all__ = ["DEFAULT_MODULES", "CorpusInfo", "Question", "build_stdlib_corpus", "prepare_target", "stdlib_dir",
           "unambiguous"]

T = TypeVar("T")

DEFAULT_MODULES: tuple[str, ...] = (
    "argparse", "base64", "bisect", "calendar", "colorsys", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "difflib", "enum", "filecmp", "fileinput", "fnmatch",
    "fractions", "functools", "getopt", "gettext", "glob", "graphlib", "heapq", "html",
    "ipaddress", "json", "keyword", "linecache", "mimetypes", "netrc", "numbers", "optparse",
    "pprint", "queue", "quopri", "random", "reprlib", "sched", "secrets", "shlex", "shutil",
    "statistics", "string", "tempfile", "textwrap", "traceback", "uuid", "zipapp",
)
"""Pure-Python modules present from CPython 3.10 on; packages are copied whole."""

DOCS_DIR = "pydoc_topics"
_SKIPPED_DIRS = frozenset({"__pycache__", "test", "tests", "idle_test"})
_MIN_EXTRA_WORDS = 5  # an answer's reference must say this much more than its question
_MAX_ANSWER_WORDS = 120  # and not be a whole manual page


@dataclass(frozen=True)
class Question:
    """A mechanically derived question: a definition's summary and where it is."""

    path: str
    definition: Definition
    summary: str

    def retrieval_row(self, hard: bool = False) -> dict[str, Any]:
        """A `qa_retrieval.jsonl` row (the hard wording without the definition's names)."""
        question = without_names(self.summary, tuple(self.definition.qualname.split("."))) if hard else self.summary
        return {"question": question, "path": self.path, "start_line": self.definition.start_line,
                "end_line": self.definition.end_line, "symbol": self.definition.qualname}

    def answer_row(self) -> dict[str, Any]:
        """A `qa_answers.jsonl` row: the reference is `docstrings.reference_answer`."""
        return {"question": self.summary, "answer": reference_answer(self.definition.docstring),
                "path": self.path, "start_line": self.definition.start_line,
                "end_line": self.definition.end_line, "symbol": self.definition.qualname}


@dataclass(frozen=True)
class CorpusInfo:
    """What `build_stdlib_corpus` wrote."""

    root: Path
    python_version: str
    modules: tuple[str, ...]  # found and copied
    missing: tuple[str, ...]  # asked for, not in this interpreter's stdlib
    files: tuple[str, ...]  # every corpus file, relative to `root`
    doc_topics: int
    questions: int
    answer_questions: int
    retrieval_qa: Path
    retrieval_qa_hard: Path
    answers_qa: Path


def stdlib_dir() -> Path:
    """The running interpreter's pure-Python standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files(stdlib: Path, module: str) -> list[Path] | None:
    """The `.py` files of a module or package (tests left out), or None when it is absent."""
    base = stdlib.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return [base.with_suffix(".py")]
    if not (base / "__init__.py").is_file():
        return None
    return sorted(p for p in base.rglob("*.py") if not _SKIPPED_DIRS & set(p.relative_to(base).parts[:-1]))


def _copy_sources(stdlib: Path, target: Path, modules: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Copy each module's files; (relative paths written, modules found, modules missing)."""
    written: list[str] = []
    found: list[str] = []
    missing: list[str] = []
    for module in sorted(set(modules)):
        files = _module_files(stdlib, module)
        (found if files else missing).append(module)
        for source in files or []:
            rel = source.relative_to(stdlib).as_posix()
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / rel)
            written.append(rel)
    return sorted(set(written)), found, missing


def _doc_topics() -> dict[str, str]:
    """The language reference topics shipped in `pydoc_data`, or none when stripped out."""
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except (ImportError, AttributeError):
        return {}
    return {str(name): str(text) for name, text in topics.items()}


def _write_docs(target: Path) -> list[str]:
    """One Markdown file per topic, `# topic` then the text; the relative paths written."""
    written = []
    for name, text in sorted(_doc_topics().items()):
        rel = f"{DOCS_DIR}/{re.sub(r'[^A-Za-z0-9_-]', '_', name)}.md"
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_text(f"# {name}\n\n{text.strip()}\n", encoding="utf-8")
        written.append(rel)
    return written


def _questions_in(target: Path, rel: str) -> Iterator[Question]:
    try:
        found = definitions((target / rel).read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return  # a file this interpreter cannot parse has no questions
    for definition in found:
        summary = summary_of(definition.docstring)
        if summary:
            yield Question(rel, definition, summary)


def unambiguous(items: list[T], text: Callable[[T], str]) -> list[T]:
    """The items whose question `text` no other item shares (compared case- and space-blind):
    a question with several right answers cannot score a search."""
    def key(item: T) -> str:
        return " ".join(text(item).lower().split())

    counts = Counter(key(item) for item in items)
    return [item for item in items if counts[key(item)] == 1]


def _order(question: Question) -> tuple[str, int, str]:
    return question.path, question.definition.start_line, question.definition.qualname


def _sample(questions: list[Question], n: int, rng: random.Random) -> list[Question]:
    chosen = questions if len(questions) <= n else rng.sample(questions, n)
    return sorted(chosen, key=_order)


def _says_more(question: Question) -> bool:
    reference = reference_answer(question.definition.docstring).split()
    return _MIN_EXTRA_WORDS <= len(reference) - len(question.summary.split()) and len(reference) <= _MAX_ANSWER_WORDS


def prepare_target(target: Path) -> None:
    """Create `target`, refusing one that exists and is not an empty folder."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CorpusError(f"{target} exists and is not an empty folder")
    target.mkdir(parents=True, exist_ok=True)


def build_stdlib_corpus(target: Path, *, modules: Sequence[str] = DEFAULT_MODULES, docs: bool = True,
                        max_questions: int = 200, max_answers: int = 50, seed: int = 0) -> CorpusInfo:
    """Copy a stdlib slice into `target` (new or empty) and write its question files."""
    target = Path(target)
    prepare_target(target)
    sources, found, missing = _copy_sources(stdlib_dir(), target, modules)
    if not sources:
        raise CorpusError(f"none of the modules {', '.join(modules)} is in {stdlib_dir()}")
    topics = _write_docs(target) if docs else []
    rng = random.Random(seed)
    candidates = unambiguous([q for rel in sources for q in _questions_in(target, rel)], lambda q: q.summary)
    chosen = _sample(candidates, max_questions, rng)
    answers = _sample([q for q in chosen if _says_more(q)], max_answers, rng)
    info = CorpusInfo(target, platform.python_version(), tuple(found), tuple(missing),
                      tuple(sorted(sources + topics)), len(topics), len(chosen), len(answers),
                      target / "qa_retrieval.jsonl", target / "qa_retrieval_hard.jsonl", target / "qa_answers.jsonl")
    _write_outputs(info, chosen, answers, seed)
    return info


def _write_outputs(info: CorpusInfo, chosen: list[Question], answers: list[Question], seed: int) -> None:
    write_jsonl(info.retrieval_qa, (q.retrieval_row() for q in chosen))
    write_jsonl(info.retrieval_qa_hard, (q.retrieval_row(hard=True) for q in chosen))
    write_jsonl(info.answers_qa, (q.answer_row() for q in answers))
    manifest = {"python": info.python_version, "seed": seed, "modules": list(info.modules),
                "missing": list(info.missing), "files": len(info.files), "doc_topics": info.doc_topics,
                "questions": info.questions, "answer_questions": info.answer_questions}
    (info.root / "corpus.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
