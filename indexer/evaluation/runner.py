"""Running a question set against search and rag callables, into plain result dataclasses.

The runner never talks HTTP itself: it is handed a `SearchFn` (the search API's `data`
rows for one question) and an `AnswerFn` (one rag answer), so the same code scores a
remote server or anything else with those shapes. Rendering the results is the caller's job.

Retrieval is scored per mode, side by side: dense, lexical, hybrid and hybrid+rerank. When
the search callable raises `RerankerUnavailable`, the reranked mode is reported as skipped
with the reason instead of failing the run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import RerankerUnavailable
from .metrics import (
    corpus_bleu,
    first_relevant_rank,
    hit_rate,
    mean,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    rouge_l_f1_scores,
)
from .qa import AnswerRow, RetrievalQuery, Target, hit_matches, matched_targets

__all__ = [
    "MODES",
    "NDCG_K",
    "AnswerFn",
    "AnswerOutcome",
    "AnswerReport",
    "ModeScores",
    "QuestionOutcome",
    "RetrievalMode",
    "RetrievalReport",
    "SearchFn",
    "evaluate_answers",
    "evaluate_retrieval",
    "recall_cutoffs",
    "strip_citations",
]

SearchFn = Callable[[str, str, bool, int], Sequence[Mapping[str, Any]]]
"""`(question, mode, rerank, top_k) -> hits`, each hit with `path`, `start_line`, `end_line`."""

AnswerFn = Callable[[str], Mapping[str, Any]]
"""`question -> rag answer` with `answer`, `sources` (`id`, `path`, lines) and `citations`."""

Progress = Callable[[str], None]
"""Called after each question with the name of what is being run."""

NDCG_K = 10
_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")


@dataclass(frozen=True)
class RetrievalMode:
    """One column of the table: a search mode, with or without reranking."""

    name: str
    mode: str
    rerank: bool = False


MODES: tuple[RetrievalMode, ...] = (
    RetrievalMode("dense", "dense"),
    RetrievalMode("lexical", "lexical"),
    RetrievalMode("hybrid", "hybrid"),
    RetrievalMode("hybrid+rerank", "hybrid", rerank=True),
)


@dataclass(frozen=True)
class QuestionOutcome:
    """How one question fared in one mode."""

    question: str
    first_rank: int | None  # of the first relevant hit, None when none was returned
    found: int  # targets hit within the returned list
    targets: int


@dataclass
class ModeScores:
    """Mean scores of one mode over all questions."""

    name: str
    recall: dict[int, float]  # cutoff k -> mean recall@k
    mrr: float
    ndcg: float  # mean nDCG@10
    mean_latency_ms: float
    outcomes: list[QuestionOutcome] = field(default_factory=list)


@dataclass
class RetrievalReport:
    """Every mode's scores, plus the modes that could not run and why."""

    questions: int
    k: int
    depth: int  # hits asked for per question: max(k, 10)
    modes: list[ModeScores]
    skipped: dict[str, str] = field(default_factory=dict)


def recall_cutoffs(k: int) -> tuple[int, ...]:
    """The recall@ cutoffs reported for `--k k`: 1, 5 and k, those not above k."""
    return tuple(sorted({cut for cut in (1, 5, k) if cut <= k}))


def _ranked(hits: Sequence[Mapping[str, Any]], targets: Sequence[Target]) -> list[frozenset[int]]:
    return [matched_targets(hit, targets) for hit in hits]


def _outcome(query: RetrievalQuery, ranked: list[frozenset[int]]) -> QuestionOutcome:
    found = len(set().union(*ranked)) if ranked else 0
    return QuestionOutcome(query.question, first_relevant_rank(ranked), found, len(query.targets))


def _score_mode(mode: RetrievalMode, queries: Sequence[RetrievalQuery], search: SearchFn,
                k: int, progress: Progress | None) -> ModeScores:
    """Run every question through one mode; `RerankerUnavailable` passes through."""
    depth, cutoffs = max(k, NDCG_K), recall_cutoffs(k)
    rankings: list[tuple[RetrievalQuery, list[frozenset[int]]]] = []
    started = time.perf_counter()
    for query in queries:
        rankings.append((query, _ranked(search(query.question, mode.mode, mode.rerank, depth), query.targets)))
        if progress:
            progress(mode.name)
    elapsed = time.perf_counter() - started
    return ModeScores(
        name=mode.name,
        recall={cut: mean(recall_at_k(r, len(q.targets), cut) for q, r in rankings) for cut in cutoffs},
        mrr=mean(reciprocal_rank(r) for _, r in rankings),
        ndcg=mean(ndcg_at_k(r, len(q.targets), NDCG_K) for q, r in rankings),
        mean_latency_ms=1000 * elapsed / max(len(queries), 1),
        outcomes=[_outcome(q, r) for q, r in rankings],
    )


def evaluate_retrieval(queries: Sequence[RetrievalQuery], search: SearchFn, *, k: int = 10,
                       modes: Sequence[RetrievalMode] = MODES,
                       progress: Progress | None = None) -> RetrievalReport:
    """Score each mode on every query: recall@{1,5,k}, MRR and nDCG@10 (hits asked: max(k, 10))."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    report = RetrievalReport(len(queries), k, max(k, NDCG_K), [])
    for mode in modes:
        try:
            report.modes.append(_score_mode(mode, queries, search, k, progress))
        except RerankerUnavailable as exc:
            report.skipped[mode.name] = exc.message
    return report


@dataclass(frozen=True)
class AnswerOutcome:
    """One answered question: the answer, what it cited, and how it scored."""

    question: str
    answer: str
    cited_paths: tuple[str, ...]
    citation_hit: bool | None  # None when the row names no expected source
    source_hit: bool | None
    rouge_l: float


@dataclass
class AnswerReport:
    """Answer quality over a question set."""

    questions: int
    rouge_l: float  # mean ROUGE-L F1, 0-1
    bleu: float  # corpus BLEU, 0-100
    citation_hit_rate: float | None  # among rows with a `path`: the answer cites it
    source_hit_rate: float | None  # among rows with a `path`: it was among the sources at all
    judged: int  # rows with a `path`
    outcomes: list[AnswerOutcome] = field(default_factory=list)


def strip_citations(text: str) -> str:
    """The answer without its `[n]` citation markers, as compared with the reference."""
    return _CITATION.sub("", text).strip()


def _cited(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    cited = set(answer.get("citations") or [])
    return [source for source in answer.get("sources") or [] if source.get("id") in cited]


def _hit(sources: Sequence[Mapping[str, Any]], target: Target | None) -> bool | None:
    return None if target is None else any(hit_matches(source, target) for source in sources)


def _answer_outcome(row: AnswerRow, answer: Mapping[str, Any]) -> AnswerOutcome:
    cited = _cited(answer)
    return AnswerOutcome(row.question, str(answer.get("answer") or ""),
                         tuple(str(source["path"]) for source in cited), _hit(cited, row.target),
                         _hit(answer.get("sources") or [], row.target), 0.0)


def evaluate_answers(rows: Sequence[AnswerRow], answer: AnswerFn, *,
                     progress: Progress | None = None) -> AnswerReport:
    """Ask every question; score ROUGE-L and BLEU against the references, and the citations."""
    outcomes = []
    for row in rows:
        outcomes.append(_answer_outcome(row, answer(row.question)))
        if progress:
            progress("answers")
    predictions = [strip_citations(outcome.answer) for outcome in outcomes]
    references = [row.answer for row in rows]
    rouge = rouge_l_f1_scores(predictions, references)
    outcomes = [_with_rouge(outcome, score) for outcome, score in zip(outcomes, rouge, strict=True)]
    return AnswerReport(
        questions=len(rows), rouge_l=mean(rouge), bleu=corpus_bleu(predictions, references),
        citation_hit_rate=hit_rate(o.citation_hit for o in outcomes),
        source_hit_rate=hit_rate(o.source_hit for o in outcomes),
        judged=sum(row.target is not None for row in rows), outcomes=outcomes,
    )


def _with_rouge(outcome: AnswerOutcome, score: float) -> AnswerOutcome:
    return replace(outcome, rouge_l=score)
