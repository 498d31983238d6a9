"""Indexing runs in the server: one background task per index at a time, with its progress.

A job opens the index's store for writing, runs `update_index` and records how it went.
Cancelling a job (shutdown, removal) keeps what it committed; the next update resumes.
This module never parses requests; `indexes.py` decides when jobs start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lampstand.indexer.pipeline import IndexProgress
from lampstand.plugins.errors import LampstandError

from .. import protocol as p

__all__ = ["IndexJob", "IndexJobs"]

log = logging.getLogger(__name__)
Run = Callable[[Callable[[IndexProgress], None]], Awaitable[IndexProgress]]


@dataclass
class IndexJob:
    """One run: its task, its latest progress, and how it ended."""

    name: str
    progress: IndexProgress = field(default_factory=IndexProgress)
    status: str = "running"
    error: str | None = None
    started_at: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)
    finished_at: int | None = None
    finished_seconds: float | None = None
    task: asyncio.Task[None] | None = None

    def observe(self, progress: IndexProgress) -> None:
        """The pipeline's progress callback."""
        self.progress = progress

    def card(self) -> p.IndexJob:
        """The job as the API shows it."""
        done = self.progress
        return p.IndexJob(
            status=self.status, phase=done.phase, files_seen=done.files_seen, files_total=done.files_total,
            files_done=done.files_done, files_unchanged=done.files_unchanged, files_deleted=done.files_deleted,
            chunks_added=done.chunks_added, chunks_removed=done.chunks_removed,
            embeddings_per_second=round(done.embeddings_per_second, 2),
            seconds=round(self.finished_seconds or time.monotonic() - self.started, 3), started_at=self.started_at,
            finished_at=self.finished_at, error=self.error, skipped=done.skipped)

    async def wait(self) -> None:
        """Until the job has ended (however it ended)."""
        if self.task is not None:
            await asyncio.shield(asyncio.wait([self.task]))

    def _end(self, status: str, error: str | None = None) -> None:
        self.status, self.error = status, error
        self.finished_at = int(time.time())
        self.finished_seconds = time.monotonic() - self.started


class IndexJobs:
    """The latest job of each index; at most one running per index."""

    def __init__(self) -> None:
        self.latest: dict[str, IndexJob] = {}

    def running(self, name: str) -> IndexJob | None:
        """The job running on `name`, if any."""
        job = self.latest.get(name)
        return job if job is not None and job.status == "running" else None

    def start(self, name: str, run: Run) -> IndexJob:
        """Start `run` for `name`, or return the job already running there."""
        if (job := self.running(name)) is not None:
            return job
        job = IndexJob(name)
        self.latest[name] = job
        job.task = asyncio.create_task(self._run(job, run), name=f"index {name}")
        return job

    async def _run(self, job: IndexJob, run: Run) -> None:
        try:
            job.progress = await run(job.observe)
            job._end("succeeded")
            log.info("index updated", extra={"index": job.name, "files": job.progress.files_done,
                                             "chunks": job.progress.chunks_added,
                                             "seconds": round(job.finished_seconds or 0, 3)})
        except asyncio.CancelledError:
            job._end("cancelled", "the run was cancelled; committed work is kept and the next update resumes")
            raise
        except LampstandError as exc:
            job._end("failed", exc.message)
        except Exception as exc:  # an unexpected failure still ends the job with its reason
            log.exception("indexing failed", extra={"index": job.name})
            job._end("failed", f"{type(exc).__name__}: {exc}")

    async def cancel(self, name: str) -> None:
        """Stop the job running on `name` and wait until it has stopped."""
        job = self.running(name)
        if job is not None and job.task is not None:
            job.task.cancel()
            await asyncio.wait([job.task])

    def forget(self, name: str) -> None:
        """Drop the record of `name`'s jobs (after removal)."""
        self.latest.pop(name, None)

    async def close(self) -> None:
        """Cancel every running job (shutdown)."""
        for name in list(self.latest):
            await self.cancel(name)
