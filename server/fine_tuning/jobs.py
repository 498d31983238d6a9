"""Fine-tuning job records on disk: one folder per job under `<[fine_tuning] dir>/jobs/`.

    <job-id>/job.json        the JobRecord, replaced atomically on every change
    <job-id>/events.jsonl    the job's events, appended as they happen
    <job-id>/training.jsonl  the training (and validation.jsonl) data, linked at creation
    <job-id>/train.log       the trainer's stdout and stderr

The record holds the OpenAI job object plus what this server needs to run and recover it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .. import protocol as p
from .records import NotFound, check_id, new_id, write_atomic

__all__ = ["JobRecord", "CheckpointRecord", "JobStore", "JOB_PREFIX", "FINISHED"]

log = logging.getLogger(__name__)
JOB_PREFIX = "ftjob"
EVENT_PREFIX = "ftevent"
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
Level = Literal["info", "warn", "error"]


class CheckpointRecord(BaseModel):
    """A checkpoint the trainer reported."""

    step: int
    path: str
    created_at: int
    train_loss: float | None = None
    valid_loss: float | None = None


class JobRecord(BaseModel):
    """One job: its public object and how it runs."""

    job: p.FineTuningJob
    suffix: str | None = None
    base_path: str  # the base model's file the trainer reads
    base_stat: tuple[int, int] | None = None  # its (size, mtime_ns) when the job was created
    adapter_dir: str  # the trainer's --out
    command: list[str]  # `lampstand train ...` arguments after the interpreter
    pid: int | None = None
    train_loss: float | None = None  # the latest reported
    valid_loss: float | None = None
    checkpoints: list[CheckpointRecord] = []

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def finished(self) -> bool:
        return self.job.status in FINISHED


class JobStore:
    """Job folders under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its (new, empty) folder."""
        job_id = new_id(JOB_PREFIX)
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def folder(self, job_id: str) -> Path:
        return self.root / check_id(job_id, JOB_PREFIX, "fine-tuning job")

    def discard(self, job_id: str) -> None:
        """Remove a job that was never recorded (its creation failed)."""
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def save(self, record: JobRecord) -> None:
        write_atomic(self.folder(record.id) / "job.json", record.model_dump_json(indent=1))

    def load_all(self) -> list[JobRecord]:
        """Every readable record, oldest first; unreadable ones are logged and skipped."""
        records = []
        for path in self.root.glob(f"{JOB_PREFIX}-*/job.json"):
            try:
                records.append(JobRecord.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.error("unreadable fine-tuning job record", extra={"path": str(path), "reason": str(exc)})
        return sorted(records, key=lambda r: (r.job.created_at, r.id))

    def add_event(self, job_id: str, message: str, *, level: Level = "info",
                  data: dict[str, Any] | None = None) -> p.FineTuningJobEvent:
        """Append an event (`metrics` when it carries data) to the job's log of events."""
        event = p.FineTuningJobEvent(id=new_id(EVENT_PREFIX), created_at=int(time.time()), level=level,
                                     message=message, data=data, type="metrics" if data else "message")
        with (self.folder(job_id) / "events.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(event.to_json() + "\n")
        return event

    def events(self, job_id: str) -> list[p.FineTuningJobEvent]:
        """The job's events, oldest first (blocking: reads the file)."""
        path = self.folder(job_id) / "events.jsonl"
        if not path.is_file():
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")
        events = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(p.FineTuningJobEvent.model_validate(json.loads(line)))
            except ValueError:
                continue  # a line cut short by a crash
        return events
