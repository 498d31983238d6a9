"""lampstand.indexer.evaluation: how well an index finds and answers, measured on question files.

- `qa`: JSONL question files (retrieval: question -> path and lines; answers: question ->
  reference answer), validated with the line number in every error, and hit matching;
- `metrics`: recall@k, MRR, nDCG@10, ROUGE-L F1, corpus BLEU, hit rates (pure functions);
- `runner`: scores search and rag callables mode by mode into plain dataclasses;
- `stdlib_corpus` and `docstrings`: a corpus copied from the interpreter's standard library
  with questions derived from its docstrings (they stay in the text: lookup, not retrieval);
- `heldout`: held-out questions from any folder, the asked text removed from the indexed copy;
- `baseline`: BM25 over 40-line windows (bm25s), the naive baseline beside every report.

Nothing here talks HTTP or renders output: `lampstand.clients.evaluate` makes the callables
from a server's API and `lampstand.clients.eval_cli` prints the tables.
"""

from __future__ import annotations

from .baseline import BASELINE_MODE, WindowBM25
from .errors import CorpusError, MissingDependency, QAFileError, RerankerUnavailable
from .metrics import (
    corpus_bleu,
    first_relevant_rank,
    hit_rate,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    rouge_l_f1,
    rouge_l_f1_scores,
)
from .heldout import HeldoutCorpus, build_heldout_corpus
from .qa import (
    AnswerRow,
    RetrievalQuery,
    RetrievalRow,
    Target,
    group_queries,
    hit_matches,
    load_answer_qa,
    load_retrieval_qa,
)
from .runner import (
    MODES,
    AnswerFn,
    AnswerReport,
    ModeScores,
    RetrievalMode,
    RetrievalReport,
    SearchFn,
    evaluate_answers,
    evaluate_retrieval,
)
from .stdlib_corpus import DEFAULT_MODULES, CorpusInfo, build_stdlib_corpus

__all__ = [
    "BASELINE_MODE",
    "DEFAULT_MODULES",
    "MODES",
    "AnswerFn",
    "AnswerReport",
    "AnswerRow",
    "CorpusError",
    "CorpusInfo",
    "HeldoutCorpus",
    "MissingDependency",
    "ModeScores",
    "QAFileError",
    "RerankerUnavailable",
    "RetrievalMode",
    "RetrievalQuery",
    "RetrievalReport",
    "RetrievalRow",
    "SearchFn",
    "Target",
    "WindowBM25",
    "build_heldout_corpus",
    "build_stdlib_corpus",
    "corpus_bleu",
    "evaluate_answers",
    "evaluate_retrieval",
    "first_relevant_rank",
    "group_queries",
    "hit_matches",
    "hit_rate",
    "load_answer_qa",
    "load_retrieval_qa",
    "ndcg_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "rouge_l_f1",
    "rouge_l_f1_scores",
]
