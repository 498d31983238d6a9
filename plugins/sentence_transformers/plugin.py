"""The `sentence_transformers` plugin: embedding models and cross-encoders (rerankers) from a
local folder or HF repo. Option `task` (or, on "auto", the folder's config.json) picks which
one a model is; the cross-encoder side lives in `cross_encoder`.

`sentence_transformers` and `torch` are imported only inside `load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lampstand.plugins.cancellation import check_cancelled
from lampstand.plugins.contract import Capability, Embedder, Footprint, Plugin, Reranker
from lampstand.plugins.fitting import expects_cuda
from lampstand.plugins.errors import CapabilityMissing, InvalidRequest, ModelUnavailable
from lampstand.plugins.types import EmbeddingResult, RerankRequest, RerankResult

from .cross_encoder import SLICE_BATCHES, Task, load_cross_encoder, score_pairs, task_of
from .options import SentenceTransformersOptions

__all__ = ["SentenceTransformersPlugin"]

WEIGHT_SUFFIX = ".safetensors"  # pickled weights (.bin, .pt) are never opened
ACTIVATION_BYTES = 64 * 1024 * 1024  # torch workspace for one batch, measured on MiniLM
RUNTIME_BYTES = 256 * 1024 * 1024  # torch and transformers in the worker: MiniLM's load adds ~400 MiB of RSS


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*" + WEIGHT_SUFFIX))


class SentenceTransformersPlugin(Plugin, Embedder, Reranker):
    """One sentence-transformers embedding model or cross-encoder."""

    name = "sentence_transformers"
    Options = SentenceTransformersOptions
    options: SentenceTransformersOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._device = "cpu"
        self.task: Task = task_of(self.path, self.options.task)

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.RERANK if self.task == "rerank" else Capability.EMBEDDINGS})

    def estimate_footprint(self) -> Footprint:
        size = _weights_bytes(self.path) + ACTIVATION_BYTES + RUNTIME_BYTES
        return Footprint(0, size) if expects_cuda(self.options.device) else Footprint(ram_bytes=size)

    def measured_footprint(self) -> Footprint | None:
        if self._model is None:
            return None
        size = sum(p.numel() * p.element_size() for p in self._model.parameters()) + ACTIVATION_BYTES
        return Footprint(ram_bytes=size) if self._device == "cpu" else Footprint(0, size)

    def _pick_device(self) -> str:
        if self.options.device != "auto":
            return self.options.device
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load(self) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelUnavailable("the sentence_transformers plugin needs `pip install lampstand[embed]`") from exc
        if self.path.is_dir() and not _weights_bytes(self.path):
            raise ModelUnavailable(f"{self.path.name} has no .safetensors weights; pickled weights are never loaded")
        self._device = self._pick_device()
        if self.task == "rerank":
            self._model = load_cross_encoder(self.path, self._device, self.options)
            return
        try:
            self._model = SentenceTransformer(
                str(self.path), device=self._device, local_files_only=True,
                trust_remote_code=self.options.trust_remote_code,
                model_kwargs={"use_safetensors": True},
            )
        except Exception as exc:  # missing files, wrong format: all a load failure
            raise ModelUnavailable(f"sentence-transformers could not load {self.path.name}: {exc}") from exc
        if self.options.max_seq_length:
            self._model.max_seq_length = self.options.max_seq_length

    def unload(self) -> None:
        self._model = None
        if self._device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def context_length(self) -> int | None:
        return int(self._model.max_seq_length) if self._model is not None else None

    def _loaded_for(self, task: Task) -> Any:
        """The model, which must have been loaded for `task` (a hub model's folder may only
        show what it is once downloaded, after its capabilities were declared)."""
        if self.task != task:
            raise CapabilityMissing(f"model {self.model_id!r} is loaded for {self.task}; "
                                    f'set task = "{task}" in its configuration to serve {task}', param="model")
        return self._model

    def rerank(self, request: RerankRequest) -> RerankResult:
        return score_pairs(self._loaded_for("rerank"), request, self.options.batch_size)

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        model = self._loaded_for("embeddings")
        tokenizer = model.tokenizer
        texts = [item if isinstance(item, str) else self._decode_ids(item) for item in inputs]
        # Longest first, in slices of a few batches, so a cancelled call stops within one slice;
        # sentence-transformers sorts each slice by length as it would the whole list.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        step = self.options.batch_size * SLICE_BATCHES
        parts = []
        for start in range(0, len(order), step):
            check_cancelled(start, len(order))
            parts.append(model.encode(
                [texts[i] for i in order[start:start + step]], batch_size=self.options.batch_size,
                normalize_embeddings=self.options.normalize, convert_to_numpy=True, show_progress_bar=False,
            ))
        vectors = np.empty((len(texts), parts[0].shape[1]), dtype=parts[0].dtype)
        vectors[order] = np.concatenate(parts)
        limit = model.max_seq_length
        counts = [min(len(ids), limit) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        return EmbeddingResult(vectors=vectors.tolist(), token_counts=counts)

    def _decode_ids(self, ids: Sequence[int]) -> str:
        size = self._model.tokenizer.vocab_size
        if any(not 0 <= t < size for t in ids):
            raise InvalidRequest(f"token ids must be in [0, {size})", param="input")
        return self._model.tokenizer.decode(list(ids), skip_special_tokens=True)
