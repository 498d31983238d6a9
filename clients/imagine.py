"""`lampstand imagine`: a prompt to PNG files through a running server, with step progress.

The request streams (`image_generation.progress` after each denoising step, then one
`image_generation.completed` per image), which drives the progress bar. Image i of n is
written to OUT, then OUT-2.png, OUT-3.png, ...
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .wire import post_events

__all__ = ["imagine_over_http", "output_paths", "Progress"]

Progress = Callable[[int, int, int], None]  # (image index, step, steps)


def output_paths(out: Path, n: int) -> list[Path]:
    """Where each of `n` images goes: OUT, then OUT-2.png, OUT-3.png, ..."""
    return [out if i == 0 else out.with_name(f"{out.stem}-{i + 1}{out.suffix or '.png'}") for i in range(n)]


def imagine_over_http(url: str, api_key: str | None, body: dict[str, Any],
                      progress: Progress) -> list[tuple[bytes, int]]:
    """Each image's PNG bytes and seed, in order."""
    images: dict[int, tuple[bytes, int]] = {}
    for event in post_events(f"{url.rstrip('/')}/v1/images/generations", body | {"stream": True}, api_key):
        if event.get("type") == "image_generation.progress":
            progress(event["image_index"], event["step"], event["steps"])
        elif event.get("type") == "image_generation.completed":
            images[event["image_index"]] = (base64.b64decode(event["b64_json"]), event["seed"])
    return [images[i] for i in sorted(images)]
