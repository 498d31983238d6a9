"""What a training run is asked to do (`TrainConfig`) and where its adapter goes.

Standard library only, so the server's fine-tuning jobs can build a config and its command
line without importing torch. Values are checked here, once; the modules that train trust them.
The `lampstand train` command's options are built from the fields (`cli_options`).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_type_hints

from lampstand.plugins.errors import InvalidRequest

__all__ = ["TrainConfig", "Schedule", "Precision", "ADAPTER_NAME", "resolve_output", "RESUME_KEYS", "CliOption",
           "cli_options", "NO_BASE_CACHE_ENV"]

Schedule = Literal["cosine", "linear", "constant"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
NO_BASE_CACHE_ENV = "LAMPSTAND_NO_BASE_CACHE"  # "1": like --no-base-cache, for every run (the server's jobs too)

# Settings a resumed run must share with the run it continues (the rest may change).
RESUME_KEYS = ("rank", "alpha", "dropout", "target_modules", "epochs", "max_steps", "batch_size", "grad_accum",
               "lr", "schedule", "warmup_ratio", "max_grad_norm", "max_seq_len", "packing", "seed", "qlora", "precision")


def _option(help: str, default: Any = MISSING, *, flag: str | None = None, envvar: str | None = None) -> Any:
    """A config field with its `lampstand train` option: the help text, and the flag when not `--<name>`."""
    return field(default=default, metadata={"help": help, "flag": flag, "envvar": envvar})


@dataclass
class TrainConfig:
    """One `lampstand train` run: base, data, output and hyperparameters.

    Each field's metadata is its command-line option (`cli_options`): the `lampstand train`
    command is built from these fields, so a default or a help text is written once, here.
    """

    base: str = _option("served model id, GGUF file, HF folder or HF repo id")
    data: Path = _option("training JSONL (chat messages or prompt/completion)")
    out: str = _option("adapter NAME (under the configured adapters dir) or a folder path")
    eval_data: Path | None = _option("held-out JSONL: loss and perplexity each epoch", None, flag="--eval")
    rank: int = _option("LoRA rank", 16)
    alpha: float = _option("LoRA alpha (scale = alpha / rank)", 32.0)
    dropout: float = _option("LoRA dropout", 0.05)
    target_modules: list[str] | None = _option("comma-separated layer names (default: per architecture)", None)
    epochs: int = _option("passes over the data", 3)
    max_steps: int | None = _option("optimizer steps (overrides --epochs)", None)
    batch_size: int = _option("sequences per micro-batch", 4)
    grad_accum: int = _option("micro-batches per optimizer step", 1)
    lr: float = _option("peak learning rate", 2e-4)
    schedule: Schedule = _option("cosine, linear or constant", "cosine")
    warmup_ratio: float = _option("share of steps warming up", 0.03)
    max_grad_norm: float = _option("gradient clipping norm", 1.0)
    max_seq_len: int = _option("tokens per sequence; longer rows are cut", 512)
    packing: bool = _option("pack several rows into each sequence", False)
    seed: int = _option("random seed", 0)
    gradient_checkpointing: bool = _option("recompute activations: less memory, slower", False)
    qlora: bool = _option("4-bit base weights (CUDA + bitsandbytes)", False)
    precision: Precision = _option("auto, fp32, bf16 or fp16", "auto")
    save_every: int | None = _option("checkpoint every N steps (epoch ends always)", None)
    resume: bool = _option("continue from the latest checkpoint in --out", False)
    max_memory: int | None = _option('memory the run may use, e.g. "6GiB" (default: what is free)', None)  # bytes
    threads: int | None = _option("CPU threads for torch", None)
    # keep a GGUF base's dequantised weights for later runs (`base_cache`); the flag turns it off
    base_cache: bool = _option("read a GGUF base every run instead of keeping its dequantised weights in "
                               "$XDG_CACHE_HOME/lampstand/train-bases", True, flag="--no-base-cache",
                               envvar=NO_BASE_CACHE_ENV)
    config_path: Path | None = field(default=None, repr=False, metadata={"flag": "--config"})

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
            if isinstance(value, bool):
                args.append(_flag(spec))
            else:
                args += [_flag(spec), ",".join(value) if isinstance(value, list) else str(value)]
        return args


@dataclass(frozen=True)
class CliOption:
    """How one `TrainConfig` field is spelled on the `lampstand train` command line."""

    name: str  # the field
    type: Any  # the field's type, resolved
    flag: str
    help: str
    default: Any  # MISSING for a required option
    envvar: str | None

    @property
    def required(self) -> bool:
        """Whether the command line must give it (the field has no default)."""
        return self.default is MISSING

    @property
    def negated(self) -> bool:
        """A flag only sets a boolean, so one that defaults to true is turned off by its flag (`--no-...`)."""
        return self.default is True


def _flag(spec: Field[Any]) -> str:
    return spec.metadata.get("flag") or "--" + spec.name.replace("_", "-")


def cli_options() -> list[CliOption]:
    """Every field the command line sets, in order (`--config` is the command's own option)."""
    hints = get_type_hints(TrainConfig)
    return [CliOption(spec.name, hints[spec.name], _flag(spec), spec.metadata["help"], spec.default,
                      spec.metadata.get("envvar")) for spec in fields(TrainConfig) if "help" in spec.metadata]


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
