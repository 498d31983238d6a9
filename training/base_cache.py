"""A dequantised copy of a GGUF base, kept as a Hugging Face folder so later runs skip the GGUF.

transformers reads a GGUF's metadata for the config, again for the tokenizer and the weights,
then dequantises every tensor: most of the half minute a run on SmolLM2-135M spends before its
first step. The first run on a GGUF writes `config.json`, the tokenizer files and
`model.safetensors` (float32: exactly the values transformers dequantised, so adapters come out
the same) to `<root>/train-bases/<the GGUF's sha256>/`; later runs load that folder instead.
Bases whose float32 weights exceed `MAX_CACHED_BYTES` are not cached.

A folder is written under a temporary name and renamed when complete; its marker records each
file's size, and a folder without a marker or whose files do not match it is rebuilt. File hashes
are cached too (`<root>/file-hashes/`, keyed by path, size, mtime and inode). Whether a run uses
any of this is its `TrainConfig.base_cache`; this module only keeps the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lampstand.plugins.durable_files import publish_folder, reserve_temp, write_file_atomically

from .base_model import BaseSource, load_model
from .manifest import file_sha256

__all__ = ["MARKER", "MAX_CACHED_BYTES", "base_folder", "cache_root", "cached_file_sha256", "is_complete",
           "use_cached", "write_cached", "write_marker"]

MAX_CACHED_BYTES = 4 * 1024**3  # float32 weights; a 1B model fits, a 7B one is not cached
MARKER = "lampstand-base.json"
MARKER_FORMAT = "lampstand-train-base/1"
WEIGHTS = "model.safetensors"
STALE_TEMP_S = 24 * 3600  # a temporary folder this old belongs to a killed run, not a slow one


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/lampstand` (~/.cache/lampstand)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lampstand"



def cached_file_sha256(path: Path, root: Path) -> str:
    """`file_sha256(path)`, remembered under `root` until the file's size, mtime or inode changes."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}".encode())
    record = root / "file-hashes" / key.hexdigest()
    try:
        known = record.read_text(encoding="ascii").strip()
        if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
            return known
    except (OSError, UnicodeDecodeError):
        pass
    digest = file_sha256(path)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(record, digest + "\n", temp=reserve_temp(record))
    except OSError:  # a read-only cache only costs the next run a rehash
        pass
    return digest


def base_folder(root: Path, sha256: str) -> Path:
    """Where the dequantised copy of the GGUF with this hash lives."""
    return root / "train-bases" / sha256


def is_complete(folder: Path) -> bool:
    """Whether `folder` has its marker and every file the marker lists, at the recorded size."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        files = marker["files"] if marker.get("format") == MARKER_FORMAT else {}
        return bool(files) and WEIGHTS in files and all(
            (folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False


def write_marker(folder: Path, source: Path) -> None:
    """Record the size of every file in `folder`: the last step of writing it."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MARKER}
    text = json.dumps({"format": MARKER_FORMAT, "source": str(source), "files": sizes}, indent=2) + "\n"
    (folder / MARKER).write_text(text, encoding="utf-8")


def use_cached(source: BaseSource, sha256: str, root: Path) -> BaseSource:
    """`source`, loading from its dequantised copy when the base is a GGUF with a complete one."""
    folder = base_folder(root, sha256)
    if source.gguf is None or not is_complete(folder):
        return source
    return replace(source, cached=folder)


def _save_weights(model: Any, path: Path) -> None:
    """The state dict as safetensors, a tied tensor once (under its first name, as transformers saves it)."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[name] = tensor.contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})


def _publish(tmp: Path, folder: Path) -> None:
    """Rename the finished `tmp` to `folder`, replacing a damaged one; another run's copy may win."""
    if folder.exists() and not is_complete(folder):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        publish_folder(tmp, folder)
    except OSError:
        if not is_complete(folder):  # not a race lost to another run: a real failure
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(parent: Path) -> None:
    """Temporary folders that killed runs left behind."""
    for tmp in parent.glob(".*"):
        try:
            if tmp.is_dir() and time.time() - tmp.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def write_cached(source: BaseSource, sha256: str, config: Any, tokenizer: Any, root: Path) -> BaseSource:
    """Dequantise the GGUF once into its cache folder; `source`, now loading from that folder.

    Raises OSError when the folder cannot be written (nothing is left behind).
    """
    import torch

    folder = base_folder(root, sha256)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha256[:16]}-", dir=folder.parent))
    try:
        config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _save_weights(load_model(source, torch.float32, "cpu", config=config), tmp / WEIGHTS)
        write_marker(tmp, source.path)
        _publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return replace(source, cached=folder)
