"""Worker processes: each loaded model lives in its own process, so a crash takes only it."""

from .handle import LoadedInfo, WorkerHandle, WorkerSpec

__all__ = ["LoadedInfo", "WorkerHandle", "WorkerSpec"]
