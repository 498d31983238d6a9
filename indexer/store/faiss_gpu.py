"""FAISS on a CUDA GPU: exact inner-product search over a copy of the base index in GPU memory.

Needs faiss's GPU build (`pip install 'lampstand[index-gpu]'`, faiss-gpu-cu12, which replaces
faiss-cpu: both install the `faiss` module). With a GPU the base stays exact at every size (an
exact search over a million vectors takes milliseconds there), so no HNSW graph is built; the
base file on disk is the same flat FAISS file a CPU reader opens.

Not yet run on a GPU: no GPU machine was available while this was written. `bench/faiss_gpu.py`
measures it against faiss-cpu when one is.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from lampstand.plugins.errors import ConfigError

__all__ = ["MAX_GPU_K", "GpuMirror", "gpu_count", "resolve_device"]

MAX_GPU_K = 2048  # faiss's GPU k-selection handles at most this many results per query
_resources: Any = None  # one faiss.StandardGpuResources per process, made on first use
_gpu_lock = threading.Lock()  # faiss's GPU resources serve one calling thread at a time


@functools.cache
def gpu_count() -> int:
    """GPUs faiss can use here (0 with faiss-cpu, which has no GPU support, and where no NVIDIA
    driver is loaded: faiss aborts the process on a CUDA error other than "no device")."""
    count = getattr(faiss, "get_num_gpus", None)
    if count is None or not hasattr(faiss, "StandardGpuResources") or not Path("/dev/nvidiactl").exists():
        return 0
    return int(count())


def resolve_device(device: Literal["auto", "cpu", "cuda"]) -> Literal["cpu", "cuda"]:
    """`auto` is `cuda` when faiss sees a GPU; `cuda` without one is a ConfigError."""
    if device == "cpu":
        return "cpu"
    if gpu_count() > 0:
        return "cuda"
    if device == "auto":
        return "cpu"
    build = "faiss-cpu is installed" if not hasattr(faiss, "StandardGpuResources") else "it sees no GPU"
    raise ConfigError(
        f"faiss_device = 'cuda' needs faiss's GPU build and a CUDA GPU, but {build}: "
        "install lampstand[index-gpu] in place of faiss-cpu on a CUDA machine, or use 'auto'"
    )


def _gpu_resources() -> Any:
    global _resources
    if _resources is None:
        _resources = faiss.StandardGpuResources()  # type: ignore[attr-defined]
    return _resources


class GpuMirror:
    """The live vectors of a base index, uploaded to GPU 0 for exact search."""

    def __init__(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        self._ids = ids
        with _gpu_lock:
            self._index = faiss.GpuIndexFlatIP(_gpu_resources(), matrix.shape[1])  # type: ignore[attr-defined]
            if len(ids):
                self._index.add(np.ascontiguousarray(matrix, dtype=np.float32))

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the best `k`, best first."""
        k = min(k, len(self._ids), MAX_GPU_K)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        with _gpu_lock:
            scores, positions = self._index.search(query[None, :].astype(np.float32), k)
        found = positions[0] >= 0
        return self._ids[positions[0][found]], scores[0][found]
