"""Resumable checkpoints: `<out>/checkpoints/step-N/` with everything needed to go on exactly.

    adapter_model.safetensors, adapter_config.json   the LoRA weights (a usable adapter)
    optimizer.pt, scheduler.pt                       AdamW moments, learning-rate position
    rng.pt                                           torch (and CUDA) generator states
    state.json                                       step, epoch, batch within the epoch, tokens,
                                                     Python's random state, the run's settings

A checkpoint is written into a hidden temporary folder and renamed into place, so a crash or
a second Ctrl-C never leaves a half-written `step-N`; older checkpoints are removed after.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lampstand.plugins.durable_files import publish_folder
from lampstand.plugins.errors import InvalidRequest

from .manifest import PEFT_WEIGHTS_FILE

__all__ = ["TrainState", "save_checkpoint", "latest_checkpoint", "load_checkpoint", "CHECKPOINTS"]

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """Where a run is: optimizer steps done and the next micro-batch in the data."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already trained on
    tokens: int = 0
    seconds: float = 0.0  # training time so far, across resumes
    recent_losses: list[float] = field(default_factory=list)  # the last step losses, for the summary
    settings: dict[str, Any] = field(default_factory=dict)  # hyperparameters + data sha256


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under `out`, if any."""
    found = _checkpoints(out)
    return found[-1][1] if found else None


def save_checkpoint(out: Path, model: Any, optimizer: Any, scheduler: Any, state: TrainState) -> Path:
    """Write `checkpoints/step-N` atomically and drop the older ones."""
    import torch

    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step}"
    tmp = root / f".tmp-step-{state.step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    body = asdict(state) | {"python_random": _jsonable(random.getstate())}
    (tmp / "state.json").write_text(json.dumps(body, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    publish_folder(tmp, final)
    for _, older in _checkpoints(out)[:-1]:
        shutil.rmtree(older, ignore_errors=True)
    return final


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> TrainState:
    """Restore weights, optimizer, schedule and random generators; the state to continue from."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        body = json.loads((path / "state.json").read_text(encoding="utf-8"))
        python_random = body.pop("python_random")
        state = TrainState(**body)
        weights = load_file(str(path / PEFT_WEIGHTS_FILE), device=str(next(model.parameters()).device))
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = torch.load(path / "rng.pt", weights_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise InvalidRequest(f"cannot resume from {path}: {type(exc).__name__}: {exc}") from exc
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(_tuples(python_random))
    return state
