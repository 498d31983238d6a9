"""Memory budgets: sizes as users write them, device totals, and what one model costs.

`[memory] cpu = "16GiB"` or `cpu = 0.75` (a fraction of the device's total). The GPU total
comes from `nvidia-smi` when it is there; no GPU means no GPU budget to enforce.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass

import psutil

from lampstand.plugins.contract import Footprint

__all__ = ["parse_size", "format_size", "parse_duration", "gpu_total_bytes", "Budget"]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
FOREVER_SECONDS = 100 * 365 * 86400.0  # a longer duration (or infinity) means forever


def parse_size(value: str | float | int, total: int | None = None) -> int:
    """Bytes from "11GiB", "500MB", 1234, or a fraction like 0.75 of `total`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 0 < value <= 1:
            if total is None:
                raise ValueError("a fraction needs a known device total")
            return int(value * total)
        if value > 1:
            return int(value)
        raise ValueError(f"size must be positive, got {value}")
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {value!r} (write e.g. \"11GiB\", \"512MB\" or a fraction like 0.8)")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    """`n` bytes for people: 1.5 GiB, 230 MiB."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def parse_duration(value: str | float | int) -> float | None:
    """Seconds from "5m", "1h30m", "90s", 300; a negative value, infinity or over a century
    means forever (None); NaN is not a duration."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite_seconds(float(value), value)
    text = str(value).strip().lower()
    if text.startswith("-"):
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return _finite_seconds(number, value)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r} (write e.g. \"5m\", \"90s\", 0 or -1)")
    return _finite_seconds(sum(float(n) * _SECONDS[u] for n, u in parts), value)


def _finite_seconds(seconds: float, value: object) -> float | None:
    if math.isnan(seconds):
        raise ValueError(f"not a duration: {value!r} is NaN (write e.g. \"5m\", \"90s\", 0 or -1)")
    return None if seconds < 0 or seconds > FOREVER_SECONDS else seconds


def gpu_total_bytes() -> int | None:
    """Total memory of the first NVIDIA GPU, or None when there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(out.splitlines()[0].strip()) * 1024**2
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Budget:
    """Bytes the loaded models may take on each device; `gpu` None means not enforced."""

    cpu: int
    gpu: int | None

    @classmethod
    def from_settings(cls, cpu: str | float, gpu: str | float) -> Budget:
        """Resolve fractions against this machine's totals."""
        gpu_total = gpu_total_bytes()
        return cls(cpu=parse_size(cpu, psutil.virtual_memory().total),
                   gpu=parse_size(gpu, gpu_total) if gpu_total is not None else None)

    def shortfall(self, used: Footprint, need: Footprint) -> str | None:
        """Why `need` does not fit beside `used`, or None when it does."""
        if used.ram_bytes + need.ram_bytes > self.cpu:
            return (f"cpu budget {format_size(self.cpu)}: {format_size(used.ram_bytes)} in use "
                    f"+ {format_size(need.ram_bytes)} needed")
        if self.gpu is not None and used.vram_bytes + need.vram_bytes > self.gpu:
            return (f"gpu budget {format_size(self.gpu)}: {format_size(used.vram_bytes)} in use "
                    f"+ {format_size(need.vram_bytes)} needed")
        return None
