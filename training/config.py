"""What a training run is asked to do (`TrainConfig`) and where its adapter goes.

Standard library only, so the server's fine-tuning jobs can build a config and its command
line without importing torch. Values are checked here, once; the modules that train trust them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from lampstand.plugins.errors import InvalidRequest

__all__ = ["TrainConfig", "Schedule", "Precision", "ADAPTER_NAME", "resolve_output", "RESUME_KEYS"]

Schedule = Literal["cosine", "linear", "constant"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")

# Settings a resumed run must share with the run it continues (the rest may change).
RESUME_KEYS = ("rank", "alpha", "dropout", "target_modules", "epochs", "max_steps", "batch_size", "grad_accum",
               "lr", "schedule", "warmup_ratio", "max_grad_norm", "max_seq_len", "packing", "seed", "qlora", "precision")


@dataclass
class TrainConfig:
    """One `lampstand train` run: base, data, output and hyperparameters."""

    base: str
    data: Path
    out: str
    eval_data: Path | None = None
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the architecture's defaults
    epochs: int = 3
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    schedule: Schedule = "cosine"
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    max_seq_len: int = 512
    packing: bool = False
    seed: int = 0
    gradient_checkpointing: bool = False
    qlora: bool = False
    precision: Precision = "auto"
    save_every: int | None = None  # steps between checkpoints (epoch ends always save)
    resume: bool = False
    max_memory: int | None = None  # bytes; overrides what the device reports as available
    threads: int | None = None
    base_cache: bool = True  # keep a GGUF base's dequantised weights for later runs (`base_cache`)
    config_path: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.eval_data = Path(self.eval_data) if self.eval_data is not None else None
        self.validate()

    def validate(self) -> None:
        """Raise `InvalidRequest` naming the first option out of range."""
        checks = [
            (self.rank >= 1, "--rank must be at least 1"),
            (self.alpha > 0, "--alpha must be positive"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.schedule in ("cosine", "linear", "constant"), "--schedule must be cosine, linear or constant"),
            (0 <= self.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
            (self.max_grad_norm > 0, "--max-grad-norm must be positive"),
            (self.max_seq_len >= 8, "--max-seq-len must be at least 8"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), "--precision must be auto, fp32, bf16 or fp16"),
            (self.save_every is None or self.save_every >= 1, "--save-every must be at least 1"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1"),
            (self.max_memory is None or self.max_memory > 0, "--max-memory must be positive"),
            (not self.target_modules or all(t.strip() for t in self.target_modules),
             "--target-modules has an empty name"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequest(message)

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that shape the adapter, as recorded in its manifest and checkpoints."""
        values = asdict(self)
        return {key: values[key] for key in RESUME_KEYS} | {"gradient_checkpointing": self.gradient_checkpointing}

    def cli_args(self) -> list[str]:
        """The `lampstand train ...` arguments that run this config (for a subprocess)."""
        args = ["train", "--base", self.base, "--data", str(self.data), "--out", self.out]
        for spec in fields(self)[3:]:
            value = getattr(self, spec.name)
            if value == spec.default:
                continue
            flag = _FLAGS.get(spec.name, "--" + spec.name.replace("_", "-"))
            if isinstance(value, bool):
                args.append(flag)
            else:
                args += [flag, ",".join(value) if isinstance(value, list) else str(value)]
        return args


_FLAGS = {"eval_data": "--eval", "config_path": "--config", "base_cache": "--no-base-cache"}


def resolve_output(out: str, adapters_dir: Path) -> tuple[str, Path]:
    """(name, folder) for `--out`: a bare NAME lives under the adapters dir; a path is used as is."""
    if "/" in out or "\\" in out:
        folder = Path(out).expanduser().resolve()
        name = folder.name
    else:
        name, folder = out, Path(adapters_dir) / out
    if not ADAPTER_NAME.match(name):
        raise InvalidRequest(f"adapter name {name!r} must use only A-Z a-z 0-9 . _ - and not start with a dot")
    return name, folder
