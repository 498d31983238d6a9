"""The files and fine-tuning jobs behind OpenAI's `/v1/files` and `/v1/fine_tuning/jobs`.

`files` stores uploads, `jobs` stores job records and events, `trainer` runs and follows one
`lampstand train` process. None of them knows HTTP or the model pool; the serving layer
(`lampstand.server.serving.fine_tuning`) puts them together.
"""

from .files import FileStore, sanitize_filename
from .jobs import FINISHED, CheckpointRecord, JobRecord, JobStore
from .plan import base_fingerprint, clean_suffix, plan_job
from .records import NotFound, check_id, new_id, paginate, short_id, write_atomic
from .trainer import MetricsReader, TrainerProcess, last_error_line, metrics_event, stop_orphan, trained_tokens

__all__ = [
    "FileStore", "sanitize_filename", "FINISHED", "CheckpointRecord", "JobRecord", "JobStore", "NotFound",
    "base_fingerprint", "clean_suffix", "plan_job",
    "check_id", "new_id", "paginate", "short_id", "write_atomic", "MetricsReader", "TrainerProcess",
    "last_error_line", "metrics_event", "stop_orphan", "trained_tokens",
]
