"""Cross-encoders in the `sentence_transformers` plugin: telling one from an embedder by its
folder, loading it, and scoring (query, document) pairs.

`task_of` reads only config.json; `sentence_transformers` is imported only in `load_cross_encoder`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lampstand.plugins.cancellation import check_cancelled
from lampstand.plugins.errors import ModelUnavailable
from lampstand.plugins.types import RerankRequest, RerankResult

from .options import SentenceTransformersOptions

__all__ = ["SLICE_BATCHES", "Task", "load_cross_encoder", "score_pairs", "task_of"]

Task = Literal["embeddings", "rerank"]
RERANK_ARCHITECTURE_SUFFIX = "ForSequenceClassification"
SLICE_BATCHES = 4  # batches per slice between checks for a cancelled call


def task_of(path: Path, option: Literal["auto", "embeddings", "rerank"]) -> Task:
    """The configured task, or for "auto" the one the folder's config.json implies: a
    sequence-classification head scores pairs (a cross-encoder), anything else embeds."""
    if option != "auto":
        return option
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no folder (a hub id), no config, unreadable: the embedder default
        return "embeddings"
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if isinstance(architectures, list) and any(
        isinstance(name, str) and name.endswith(RERANK_ARCHITECTURE_SUFFIX) for name in architectures
    ):
        return "rerank"
    return "embeddings"


def load_cross_encoder(path: Path, device: str, options: SentenceTransformersOptions) -> Any:
    """A `CrossEncoder` with a one-score head, from local safetensors only."""
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(
            str(path), device=device, local_files_only=True,
            trust_remote_code=options.trust_remote_code,
            model_kwargs={"use_safetensors": True},
        )
    except Exception as exc:  # missing files, wrong format: all a load failure
        raise ModelUnavailable(f"sentence-transformers could not load the cross-encoder {path.name}: {exc}") from exc
    if model.num_labels != 1:
        raise ModelUnavailable(f"{path.name} has {model.num_labels} labels; a reranker needs a one-score head")
    if options.max_seq_length:
        model.max_seq_length = options.max_seq_length
    return model


def score_pairs(model: Any, request: RerankRequest, batch_size: int) -> RerankResult:
    """One score per document in input order, with the model's own activation (a sigmoid
    for a one-label head unless its config names another), as `CrossEncoder.predict` gives it."""
    pairs = [(request.query, document) for document in request.documents]
    if not pairs:
        return RerankResult(scores=[], token_counts=[])
    step = batch_size * SLICE_BATCHES  # a cancelled call stops within one slice
    parts = []
    for start in range(0, len(pairs), step):
        check_cancelled(start, len(pairs))
        parts.append(model.predict(pairs[start:start + step], batch_size=batch_size, convert_to_numpy=True,
                                   show_progress_bar=False).reshape(-1))
    scores = np.concatenate(parts)
    counts: list[int] = []
    for start in range(0, len(pairs), batch_size):  # the same truncation `predict` applies
        features = model.preprocess(pairs[start:start + batch_size])
        counts.extend(int(n) for n in features["attention_mask"].sum(dim=1).tolist())
    return RerankResult(scores=[float(s) for s in scores.reshape(-1).tolist()], token_counts=counts)
