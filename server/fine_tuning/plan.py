"""A create request becomes a job record: its data linked in, its hyperparameters resolved, the
trainer's command line built by the trainer's own `TrainConfig` (its defaults stand for "auto").
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from lampstand.training.config import TrainConfig

from .. import protocol as p
from .files import FileStore
from .jobs import JobRecord

__all__ = ["plan_job", "clean_suffix", "base_fingerprint"]


def clean_suffix(suffix: str | None) -> str | None:
    """Letters, digits, `.`, `_` and `-` only (runs of anything else become one `-`)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", suffix or "").strip("-._")
    return cleaned or None


def _requested(body: p.FineTuningJobCreateRequest) -> p.FineTuningHyperparametersIn:
    """`method.supervised.hyperparameters`, else the deprecated top-level `hyperparameters`."""
    if body.method is not None and body.method.supervised is not None and body.method.supervised.hyperparameters:
        return body.method.supervised.hyperparameters
    return body.hyperparameters or p.FineTuningHyperparametersIn()


def _train_config(body: p.FineTuningJobCreateRequest, base: Path, data: Path, eval_data: Path | None,
                  out: Path) -> tuple[TrainConfig, float]:
    """The trainer's config and the learning-rate multiplier it was built with."""
    asked = _requested(body)
    config = TrainConfig(base=str(base), data=data, out=str(out), eval_data=eval_data,
                         seed=body.seed if body.seed is not None else secrets.randbelow(2**31))
    if asked.n_epochs not in (None, "auto"):
        config.epochs = asked.n_epochs
    if asked.batch_size not in (None, "auto"):
        config.batch_size = asked.batch_size
    multiplier = 1.0 if asked.learning_rate_multiplier in (None, "auto") else float(asked.learning_rate_multiplier)
    config.lr *= multiplier
    config.validate()
    return config, multiplier


def plan_job(body: p.FineTuningJobCreateRequest, job_id: str, folder: Path, model_id: str, base: Path,
             files: FileStore, adapters_dir: Path) -> JobRecord:
    """The queued job's first record (blocking: links the data files into `folder`)."""
    data = files.link_into(body.training_file, folder / "training.jsonl", "training_file")
    eval_data = (files.link_into(body.validation_file, folder / "validation.jsonl", "validation_file")
                 if body.validation_file else None)
    out = adapters_dir / job_id
    config, multiplier = _train_config(body, base, data, eval_data, out)
    resolved = p.FineTuningHyperparameters(batch_size=config.batch_size, learning_rate_multiplier=multiplier,
                                           n_epochs=config.epochs)
    job = p.FineTuningJob(
        id=job_id, created_at=int(time.time()), error=None, fine_tuned_model=None, finished_at=None,
        hyperparameters=resolved, model=model_id, seed=config.seed, status="queued", trained_tokens=None,
        training_file=body.training_file, validation_file=body.validation_file,
        method=p.FineTuningMethod(supervised=p.SupervisedMethod(hyperparameters=resolved)),
        metadata=body.metadata, estimated_finish=None)
    return JobRecord(job=job, suffix=clean_suffix(body.suffix), base_path=str(base),
                     base_stat=base_fingerprint(base), adapter_dir=str(out), command=config.cli_args())


def base_fingerprint(base: Path) -> tuple[int, int]:
    """(size, newest mtime_ns) of a base model: its file, or every file of its folder (a
    Hugging Face folder's weights change inside it while the folder's own entry stays)."""
    if not base.is_dir():
        stat = base.stat()
        return stat.st_size, stat.st_mtime_ns
    stats = [entry.stat() for entry in base.rglob("*") if entry.is_file()]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
