"""The adapter folder: the names of its files, its manifest, reading and writing them.

    adapter_model.safetensors, adapter_config.json   peft's LoRA weights and settings
    adapter.gguf                                     the GGUF LoRA, when the base was a GGUF
    manifest.json                                    what the adapter was trained from

The manifest names the base model by its served id, path and sha256, so the server can refuse
to attach an adapter to a base it was not trained on. Every module that reads or writes an
adapter folder takes the names from here. Standard library only: the server reads adapter
folders without torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lampstand.plugins.durable_files import reserve_temp, write_file_atomically
from lampstand.plugins.errors import InvalidRequest

__all__ = ["MANIFEST_FORMAT", "MANIFEST_FILE", "PEFT_WEIGHTS_FILE", "PEFT_CONFIG_FILE", "GGUF_FILE", "AdapterManifest",
           "BaseInfo", "DataInfo", "AdapterFiles", "file_sha256", "write_manifest", "read_manifest", "holds_peft",
           "find_gguf"]

MANIFEST_FORMAT = "lampstand-adapter/1"
MANIFEST_FILE = "manifest.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
GGUF_FILE = "adapter.gguf"
_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BaseInfo:
    """The model the adapter was trained on."""

    id: str | None  # served id, when the base is a configured model
    source: str  # what --base said
    path: str
    sha256: str
    architecture: str


@dataclass
class DataInfo:
    """The training data, by content."""

    train_sha256: str
    eval_sha256: str | None
    train_rows: int
    eval_rows: int


@dataclass
class AdapterFiles:
    """The adapter's weight files, relative to its folder."""

    peft: str = PEFT_WEIGHTS_FILE
    gguf: str | None = None


@dataclass
class AdapterManifest:
    """Everything `manifest.json` records about one trained adapter."""

    name: str
    created: int
    base: BaseInfo
    data: DataInfo
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    files: AdapterFiles = field(default_factory=AdapterFiles)
    format: str = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, `format` first."""
        body = asdict(self)
        return {"format": body.pop("format"), **body}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> AdapterManifest:
        """Parse a manifest object; KeyError/TypeError/ValueError when it is malformed."""
        if body.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format is {body.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        return cls(
            name=str(body["name"]),
            created=int(body["created"]),
            base=BaseInfo(**body["base"]),
            data=DataInfo(**body["data"]),
            hyperparameters=dict(body.get("hyperparameters") or {}),
            metrics=dict(body.get("metrics") or {}),
            files=AdapterFiles(**(body.get("files") or {})),
        )


def write_manifest(directory: Path, manifest: AdapterManifest) -> Path:
    """Write `<directory>/manifest.json` atomically (temp file, then rename)."""
    path = Path(directory) / MANIFEST_FILE
    write_file_atomically(path, json.dumps(manifest.to_dict(), indent=2) + "\n", temp=reserve_temp(path))
    return path


def read_manifest(directory: Path) -> AdapterManifest | None:
    """The manifest in `directory`; None when there is none, InvalidRequest when it is malformed."""
    path = Path(directory) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from exc
    try:
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return AdapterManifest.from_dict(body)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InvalidRequest(f"malformed adapter manifest {path}: {detail}") from exc


def holds_peft(directory: Path) -> bool:
    """Whether `directory` holds peft's adapter weights."""
    return (Path(directory) / PEFT_WEIGHTS_FILE).is_file()


def find_gguf(directory: Path, manifest: AdapterManifest | None) -> Path | None:
    """The folder's GGUF LoRA: the one its manifest names, else `adapter.gguf`, else the first `.gguf`."""
    folder = Path(directory)
    candidates = [folder / manifest.files.gguf] if manifest and manifest.files.gguf else []
    candidates += [folder / GGUF_FILE, *sorted(folder.glob("*.gguf"))]
    return next((c for c in candidates if c.is_file()), None)
