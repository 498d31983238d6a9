"""`<out>/metrics.jsonl`: one JSON object per line, appended as training goes (and on resume).

    {"type": "step", "step", "epoch", "loss", "lr", "tokens_per_s", "eta_s", "tokens", "time"}
    {"type": "eval", "step", "epoch", "eval_loss", "perplexity", "time"}
    {"type": "checkpoint", "step", "path", "time"}
    {"type": "done", "step", "train_loss", "eval_loss", "perplexity", "adapter", "gguf", "trained_tokens", "time"}

`tokens` and `trained_tokens` count the input tokens trained on so far (padding excluded).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "METRICS_FILE"]

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends one record per event, flushed at once so a follower sees it."""

    def __init__(self, path: Path, fresh: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.write_text("", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append `{"type": kind, **fields, "time": now}` and return it."""
        record = {"type": kind, **fields, "time": round(time.time(), 3)}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return record
