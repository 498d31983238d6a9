"""Worker processes: each loaded model lives in its own process, so a crash takes only it."""

from .handle import LoadedInfo, WorkerCall, WorkerHandle, WorkerSpec

__all__ = ["LoadedInfo", "WorkerCall", "WorkerHandle", "WorkerSpec"]
