"""Generated images kept for a while on disk, for `response_format: "url"`.

Each image is one PNG under `[images] output_dir` with a random 128-bit name, so a URL cannot
be guessed; it is served until `url_ttl` seconds after it was written, and deleted when it is
asked for after that or at the next sweep (every save sweeps once), whichever comes first.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from lampstand.plugins.durable_files import write_file_atomically

__all__ = ["ImageOutputs"]

_NAME = re.compile(r"[0-9a-f]{32}\.png")


class ImageOutputs:
    """The folder of short-lived generated images."""

    def __init__(self, folder: Path, ttl: float) -> None:
        self.folder, self.ttl = folder, ttl

    def save(self, pngs: list[bytes]) -> list[str]:
        """Write each PNG under a new random name (after sweeping once); their names, in order."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep()
        names = []
        for png in pngs:
            name = f"{secrets.token_hex(16)}.png"
            write_file_atomically(self.folder / name, png, temp=self.folder / f".{name}.part")  # sweep finds leftovers
            names.append(name)
        return names

    def find(self, name: str) -> Path | None:
        """The file of a live image called `name`; None for a name never given out or expired."""
        if not _NAME.fullmatch(name):
            return None
        path = self.folder / name
        try:
            written = path.stat().st_mtime
        except OSError:
            return None
        if time.time() - written <= self.ttl:
            return path
        path.unlink(missing_ok=True)  # expired: gone now, not only at the next save's sweep
        return None

    def sweep(self) -> int:
        """Delete expired images (and leftovers of interrupted writes); how many went."""
        if not self.folder.is_dir():
            return 0
        cutoff, removed = time.time() - self.ttl, 0
        for entry in os.scandir(self.folder):
            ours = _NAME.fullmatch(entry.name) or entry.name.endswith(".png.part")
            if ours and entry.is_file(follow_symlinks=False):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
        return removed
