"""Scores for retrieval and answers: pure functions of ranked relevance and of texts.

Retrieval metrics take `ranked`: for each hit in rank order, the set of target indices it
falls on (empty for an irrelevant hit; see `qa.matched_targets`), plus how many targets the
question has. Relevance is binary and each target counts once: a second chunk of the same
function adds nothing. Answer metrics wrap `rouge_score` (ROUGE-L F1) and `sacrebleu`
(corpus BLEU, 0-100), imported when first used; both come with `lampstand[eval]`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import MissingDependency

__all__ = [
    "Ranked",
    "corpus_bleu",
    "first_relevant_rank",
    "hit_rate",
    "mean",
    "ndcg_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "rouge_l_f1",
    "rouge_l_f1_scores",
]

Ranked = Sequence[frozenset[int]]
"""Per hit, in rank order: the indices of the targets it falls on."""


def _found(ranked: Ranked, k: int) -> set[int]:
    return set().union(*ranked[:k]) if k > 0 else set()


def recall_at_k(ranked: Ranked, n_targets: int, k: int) -> float:
    """The share of the question's targets that some hit among the first `k` falls on."""
    return len(_found(ranked, k)) / n_targets if n_targets else 0.0


def first_relevant_rank(ranked: Ranked) -> int | None:
    """The 1-based rank of the first hit on any target, or None when no hit is relevant."""
    return next((rank for rank, targets in enumerate(ranked, start=1) if targets), None)


def reciprocal_rank(ranked: Ranked) -> float:
    """1 / the rank of the first relevant hit; 0 when none of the hits is relevant."""
    rank = first_relevant_rank(ranked)
    return 1.0 / rank if rank else 0.0


def _discount(rank: int) -> float:
    return 1.0 / math.log2(rank + 1)


def ndcg_at_k(ranked: Ranked, n_targets: int, k: int = 10) -> float:
    """Normalised discounted cumulative gain of the first `k` hits, binary relevance.

    A hit gains 1 when it falls on a target no earlier hit fell on; the ideal list has one
    hit per target at the top (at most `k` of them).
    """
    seen: set[int] = set()
    dcg = 0.0
    for rank, targets in enumerate(ranked[:k], start=1):
        if targets - seen:
            dcg += _discount(rank)
            seen |= targets
    ideal = sum(_discount(rank) for rank in range(1, min(n_targets, k) + 1))
    return dcg / ideal if ideal else 0.0


def mean(values: Iterable[float]) -> float:
    """The arithmetic mean; 0 for no values."""
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def hit_rate(hits: Iterable[bool | None]) -> float | None:
    """The share of True among judged answers (None: not judged), e.g. the citation hit rate:
    the share of answers whose citations include the expected source. None when none is judged.
    """
    judged = [hit for hit in hits if hit is not None]
    return sum(judged) / len(judged) if judged else None


def _same_length(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")


def _rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise MissingDependency("rouge-score") from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_f1_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F1 (0-1) of each prediction against its reference (lower-cased word tokens)."""
    _same_length(predictions, references)
    scorer = _rouge_scorer()
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (0-1) of one prediction against one reference."""
    return rouge_l_f1_scores([prediction], [reference])[0]


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) of the predictions, one reference each.

    sacrebleu's defaults: 13a tokenization, and exponential smoothing of n-gram orders with
    no match (so a partial match scores above 0 even without a common 4-gram).
    """
    _same_length(predictions, references)
    try:
        import sacrebleu
    except ImportError as exc:
        raise MissingDependency("sacrebleu") from exc
    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)
