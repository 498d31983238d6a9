"""Serving /v1/fine_tuning/jobs: create, list, follow and cancel jobs that run `lampstand train`.

`FineTuningService` owns the uploaded files, the job records, the FIFO queue and the running
trainers. At most `[fine_tuning] max_running_jobs` trainers run at once, each in its own
process; its metrics become the job's events. A cancelled job is `cancelled` at once; its
trainer saves a checkpoint and exits (it holds its place until then). A job that trains is loaded into this server
as the model `ft:BASE:SUFFIX` and only then `succeeded`.

Start and stop: `start()` (before the pool preloads) marks the jobs a stopped server was
running as failed, queues the queued ones again and registers the adapters of the succeeded
ones with their base model, which loads them when it next loads. `close()` stops the running
trainers (SIGTERM, then SIGKILL) and marks their jobs failed; queued jobs stay queued.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from lampstand.plugins.contract import Capability
from lampstand.plugins.errors import CapabilityMissing, FeatureDisabled, InvalidRequest, LampstandError
from lampstand.plugins.sources import fetch_from_hub, resolve_local
from lampstand.training.data import DataError, load_training_file

from .. import protocol as p
from ..adapters import LoadedAdapter
from ..config import AdapterSettings, FineTuningSettings
from ..fine_tuning import (
    FileStore,
    JobRecord,
    JobStore,
    NotFound,
    TrainerProcess,
    base_fingerprint,
    last_error_line,
    metrics_event,
    paginate,
    plan_job,
    short_id,
    stop_orphan,
    trained_tokens,
)
from ..fine_tuning.jobs import CheckpointRecord
from ..model_pool import HostedModel, ModelPool
from .adapters import adapter_files, load_adapter, resolve_adapter_file

__all__ = ["FineTuningService", "SERVER_STOPPED"]

log = logging.getLogger(__name__)
SERVER_STOPPED = "the server stopped while this job was running"
CANCEL_GRACE = 120.0  # seconds a cancelled trainer gets to finish its step and save a checkpoint
SHUTDOWN_GRACE = 10.0
MAX_NAME = 128  # the longest adapter name the server accepts
StopReason = Literal["cancel", "shutdown"]


@dataclass
class _Run:
    """A job's trainer while it runs."""

    trainer: TrainerProcess
    task: asyncio.Task[None] | None = None
    stop: StopReason | None = None


class FineTuningService:
    """Everything the files and fine-tuning routes do."""

    def __init__(self, settings: FineTuningSettings, adapters: AdapterSettings, pool: ModelPool) -> None:
        self.settings, self.adapter_settings, self.pool = settings, adapters, pool
        self.files = FileStore(settings.dir / "files")
        self.store = JobStore(settings.dir / "jobs")
        self._jobs: dict[str, JobRecord] = {}  # oldest first
        self._queue: deque[str] = deque()
        self._running: dict[str, _Run] = {}
        self._closing = False

    def require_enabled(self) -> FineTuningService:
        """This service, or 403 when `[fine_tuning] enabled` is off."""
        if not self.settings.enabled:
            raise FeatureDisabled("fine-tuning (its jobs and fine-tune files) is off; "
                                  "set enabled = true under [fine_tuning]")
        return self

    # -- start and stop --

    async def start(self) -> None:
        """Recover the recorded jobs (call before the pool preloads its models). The file store
        is prepared even when fine-tuning is off: vector stores take uploads too."""
        await asyncio.to_thread(self.files.prepare)
        if not self.settings.enabled:
            return
        records = await asyncio.to_thread(self._prepare)
        for record in records:
            self._jobs[record.id] = record
            self._recover(record)
        self._pump()

    def _prepare(self) -> list[JobRecord]:
        self.store.prepare()
        return self.store.load_all()

    def _recover(self, record: JobRecord) -> None:
        status = record.job.status
        if record.pid is not None and status != "succeeded" and stop_orphan(record.pid, record.adapter_dir):
            log.warning("stopped an orphaned trainer", extra={"job": record.id, "pid": record.pid})
        if status in ("running", "validating_files"):
            self._finish(record, "failed", error=("server_stopped", SERVER_STOPPED))
        elif status == "queued":
            self._queue.append(record.id)
        elif status == "succeeded" and record.job.fine_tuned_model:
            self._serve_again(record)

    def _serve_again(self, record: JobRecord) -> None:
        """Register a trained adapter with its base; the base's worker loads it when it starts."""
        name = record.job.fine_tuned_model or ""
        try:
            hosted = self.pool.lookup(record.job.model)
            path, _ = resolve_adapter_file(record.adapter_dir, self.adapter_settings.dir, adapter_files(hosted))
            _check_base_unchanged(record)
            adapter = LoadedAdapter(name, hosted.id, path, source=record.adapter_dir)
            self.pool.adapters.reserve(adapter, self.pool.names, self.adapter_settings.max_loaded)
            adapter.status = "loaded"
        except LampstandError as exc:
            log.warning("fine-tuned model not served", extra={"job": record.id, "model": name, "reason": exc.message})
            self.store.add_event(record.id, f"{name} is not served after the server restarted: {exc.message}",
                                 level="warn")

    async def close(self) -> None:
        """Stop the running trainers and mark their jobs failed; queued jobs stay queued."""
        self._closing = True
        runs = list(self._running.values())
        for run in runs:
            run.stop = run.stop or "shutdown"
            run.trainer.stop(SHUTDOWN_GRACE)
        tasks = [run.task for run in runs if run.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE + 2)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- creating jobs --

    async def create_job(self, body: p.FineTuningJobCreateRequest) -> p.FineTuningJob:
        """Validate the request and its files, then queue the job."""
        hosted = self._adapter_host(body.model)
        training = self._upload(body.training_file, "training_file")
        validation = self._upload(body.validation_file, "validation_file") if body.validation_file else None
        await _validate_data(training, "training_file")
        if validation is not None:
            await _validate_data(validation, "validation_file")
        base = await asyncio.to_thread(_base_file, hosted)
        job_id, folder = await asyncio.to_thread(self.store.new_folder)
        try:
            record = await asyncio.to_thread(plan_job, body, job_id, folder, hosted.id, base, self.files,
                                             self.adapter_settings.dir)
            await asyncio.to_thread(self.store.save, record)
        except BaseException:
            await asyncio.to_thread(self.store.discard, job_id)
            raise
        self._jobs[job_id] = record
        self.store.add_event(job_id, f"Created fine-tuning job: {job_id}")
        self.store.add_event(job_id, f"Validating training file: {body.training_file}")
        if body.validation_file:
            self.store.add_event(job_id, f"Validating validation file: {body.validation_file}")
        self.store.add_event(job_id, "Files validated, moving job to queued state")
        self._queue.append(job_id)
        self._pump()
        return record.job.model_copy(deep=True)

    def _adapter_host(self, name: str) -> HostedModel:
        hosted = self.pool.lookup(name)
        if Capability.ADAPTERS not in hosted.capabilities:
            raise CapabilityMissing(f"model {name!r} (plugin {hosted.plugin_cls.name}) cannot be fine-tuned: "
                                    "it does not take LoRA adapters", param="model")
        return hosted

    def _upload(self, file_id: str, param: str) -> Path:
        try:
            return self.files.path(file_id, param)
        except NotFound:
            raise InvalidRequest(f"invalid {param}: no uploaded file has the id {file_id[:100]!r}",
                                 param=param) from None

    # -- running jobs --

    def _pump(self) -> None:
        """Start queued jobs while there is room."""
        while self._queue and len(self._running) < self.settings.max_running_jobs and not self._closing:
            record = self._jobs[self._queue.popleft()]
            if record.job.status != "queued":
                continue
            folder = self.store.folder(record.id)
            run = _Run(TrainerProcess(record.command, folder, folder / "train.log",
                                      Path(record.adapter_dir) / "metrics.jsonl"))
            self._running[record.id] = run
            run.task = asyncio.create_task(self._run(record, run))
            run.task.add_done_callback(partial(self._ran, record.id))

    def _ran(self, job_id: str, _: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._pump()

    async def _run(self, record: JobRecord, run: _Run) -> None:
        try:
            code = await self._train(record, run) if run.stop is None else None
            await self._settle(record, run, code)
        except asyncio.CancelledError:
            run.trainer.kill()
            if not record.finished:
                self._finish(record, "failed", error=("server_stopped", SERVER_STOPPED))
            raise
        except Exception as exc:  # a bug here must not leave the job `running` forever
            log.exception("fine-tuning job failed", extra={"job": record.id})
            run.trainer.kill()
            self._finish(record, "failed", error=("internal_error", f"{type(exc).__name__}: {exc}"))

    async def _train(self, record: JobRecord, run: _Run) -> int | None:
        """The trainer's exit code; None when it could not start (the job has failed then)."""
        try:
            record.pid = run.trainer.start()
        except OSError as exc:
            self._finish(record, "failed", error=("training_failed", f"could not start the trainer: {exc}"))
            return None
        self._update(record, status="running")
        self.store.add_event(record.id, "Fine-tuning job started")
        log.info("fine-tuning job started", extra={"job": record.id, "pid": record.pid})
        return await run.trainer.follow(lambda metrics: self._on_metrics(record, metrics))

    def _on_metrics(self, record: JobRecord, metrics: dict[str, object]) -> None:
        kind, step = metrics.get("type"), metrics.get("step")
        if kind == "step":
            record.train_loss = _float(metrics.get("loss"))
            eta = _float(metrics.get("eta_s"))
            record.job.estimated_finish = int(time.time() + eta) if eta is not None else None
        elif kind == "eval":
            record.valid_loss = _float(metrics.get("eval_loss"))
        elif kind == "checkpoint" and isinstance(step, int):
            record.checkpoints.append(CheckpointRecord(
                step=step, path=str(metrics.get("path", "")), created_at=int(_float(metrics.get("time")) or time.time()),
                train_loss=record.train_loss, valid_loss=record.valid_loss))
        elif kind == "done":
            tokens = metrics.get("trained_tokens", metrics.get("tokens"))
            record.job.trained_tokens = tokens if isinstance(tokens, int) else record.job.trained_tokens
            if isinstance(step, int):  # the finished adapter is the last checkpoint
                record.checkpoints.append(CheckpointRecord(
                    step=step, path=record.adapter_dir, created_at=int(time.time()),
                    train_loss=_float(metrics.get("train_loss")), valid_loss=_float(metrics.get("eval_loss"))))
        if kind != "step":  # a step changes only the estimate: not worth a write per step
            self.store.save(record)
        event = metrics_event(metrics)
        if event is not None:
            message, data = event
            data = {k: v for k, v in data.items() if v is not None} if data else None
            self.store.add_event(record.id, message, data=data)

    async def _settle(self, record: JobRecord, run: _Run, code: int | None) -> None:
        if record.finished:  # cancelled while it ran, or it never started
            return
        if run.stop == "cancel":
            self._finish(record, "cancelled")
        elif run.stop == "shutdown":
            if record.job.status == "running":  # one that never started stays queued for the next start
                self._finish(record, "failed", error=("server_stopped", SERVER_STOPPED))
        elif code is None:
            return
        elif code != 0:
            message = await asyncio.to_thread(last_error_line, self.store.folder(record.id) / "train.log", code)
            self._finish(record, "failed", error=("training_failed", message))
        else:
            if record.job.trained_tokens is None:
                record.job.trained_tokens = await asyncio.to_thread(trained_tokens, Path(record.adapter_dir))
            await self._publish(record)

    async def _publish(self, record: JobRecord) -> None:
        """Serve the trained adapter as `ft:BASE:SUFFIX`; the job succeeds only once it is loaded."""
        name = self._model_name(record)
        if not self._closing:  # closing: registered at the next start instead
            body = p.LoadLoraAdapterRequest(lora_name=name, lora_path=record.adapter_dir, base_model=record.job.model,
                                            scale=1.0)
            try:
                await load_adapter(self.pool, self.adapter_settings, body, check_enabled=False)
            except LampstandError as exc:
                self._finish(record, "failed", error=("adapter_load_failed",
                                                      f"the adapter was trained but could not be loaded: {exc.message}"))
                return
        record.job.fine_tuned_model = name
        self.store.add_event(record.id, f"New fine-tuned model created: {name}")
        self._finish(record, "succeeded")

    def _model_name(self, record: JobRecord) -> str:
        base = re.sub(r"[^A-Za-z0-9._@+-]", "-", record.job.model)
        tag = ":" + short_id(record.id)
        name = f"ft:{base}:{record.suffix or short_id(record.id)}"[:MAX_NAME]
        if name in self.pool.names or self.pool.adapters.get(name) is not None:
            name = name[:MAX_NAME - len(tag)] + tag
        return name

    def _update(self, record: JobRecord, **changes: object) -> None:
        for key, value in changes.items():
            setattr(record.job, key, value)
        self.store.save(record)

    def _finish(self, record: JobRecord, status: Literal["succeeded", "failed", "cancelled"],
                error: tuple[str, str] | None = None) -> None:
        job_error = p.FineTuningJobError(code=error[0], message=error[1], param=None) if error else None
        self._update(record, status=status, finished_at=int(time.time()), estimated_finish=None, error=job_error)
        log.info("fine-tuning job finished", extra={"job": record.id, "status": status,
                                                    "reason": error[1] if error else None})
        messages = {"succeeded": "The job has successfully completed", "cancelled": "Fine-tuning job cancelled",
                    "failed": f"Fine-tuning job failed: {error[1] if error else 'unknown error'}"}
        self.store.add_event(record.id, messages[status], level="error" if status == "failed" else "info")

    # -- reading and cancelling --

    def _record(self, job_id: str) -> JobRecord:
        self.store.folder(job_id)  # 404 for anything not shaped like a job id
        record = self._jobs.get(job_id)
        if record is None:
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")
        return record

    def get_job(self, job_id: str) -> p.FineTuningJob:
        return self._record(job_id).job.model_copy(deep=True)

    def list_jobs(self, after: str | None, limit: int) -> p.FineTuningJobList:
        """Newest first."""
        page, more = paginate([r.job for r in reversed(self._jobs.values())], after, limit)
        return p.FineTuningJobList(data=[job.model_copy(deep=True) for job in page], has_more=more)

    async def list_events(self, job_id: str, after: str | None, limit: int) -> p.FineTuningJobEventList:
        """Newest first."""
        self._record(job_id)
        events = await asyncio.to_thread(self.store.events, job_id)
        page, more = paginate(events[::-1], after, limit)
        return p.FineTuningJobEventList(data=page, has_more=more)

    def list_checkpoints(self, job_id: str, after: str | None, limit: int) -> p.FineTuningJobCheckpointList:
        """The trainer's checkpoints still on disk, newest first."""
        record = self._record(job_id)
        model = record.job.fine_tuned_model or f"ft:{record.job.model}:{record.suffix or short_id(record.id)}"
        found = [p.FineTuningJobCheckpoint(
            id=f"ftckpt-{record.id.removeprefix('ftjob-')}-{c.step}", created_at=c.created_at,
            fine_tuned_model_checkpoint=f"{model}:ckpt-step-{c.step}", fine_tuning_job_id=record.id,
            metrics=p.FineTuningCheckpointMetrics(step=c.step, train_loss=c.train_loss, valid_loss=c.valid_loss),
            step_number=c.step) for c in reversed(record.checkpoints) if Path(c.path).is_dir()]
        page, more = paginate(found, after, limit)
        return p.FineTuningJobCheckpointList(data=page, first_id=page[0].id if page else None,
                                             last_id=page[-1].id if page else None, has_more=more)

    def cancel_job(self, job_id: str) -> p.FineTuningJob:
        """Cancelled now. A running trainer gets SIGTERM: it saves a checkpoint at the end of its
        step and exits (SIGKILL after `CANCEL_GRACE`); the next job starts once it has."""
        record = self._record(job_id)
        if record.finished:
            raise InvalidRequest(f"job {job_id} has already {record.job.status}; only queued or running jobs "
                                 "can be cancelled", param="fine_tuning_job_id")
        run = self._running.get(job_id)
        if run is not None:
            run.stop = run.stop or "cancel"
            run.trainer.stop(CANCEL_GRACE)
        elif job_id in self._queue:
            self._queue.remove(job_id)
        self._finish(record, "cancelled")
        return record.job.model_copy(deep=True)


async def _validate_data(path: Path, param: str) -> None:
    try:
        await asyncio.to_thread(load_training_file, path)
    except DataError as exc:
        raise DataError(exc.message, param=param) from None


def _base_file(hosted: HostedModel) -> Path:
    """The base model's file the trainer reads (blocking: may fetch from the hub cache)."""
    config = hosted.config
    if config.path is not None:
        return resolve_local(config.path, config.id)
    return fetch_from_hub(config.hf or "", config.file, config.id)


def _check_base_unchanged(record: JobRecord) -> None:
    try:
        now = base_fingerprint(Path(record.base_path))
    except OSError:
        raise InvalidRequest(f"the base model file {record.base_path} is gone") from None
    if record.base_stat is not None and now != tuple(record.base_stat):
        raise InvalidRequest(f"the base model file {record.base_path} changed since the adapter was trained; "
                             "load the adapter with /v1/load_lora_adapter if it still fits")


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
