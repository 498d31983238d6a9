"""Stop sequences over streamed text: emit what is safe, hold back what may begin a stop.

Engine-free, so every text backend cuts output at a stop string the same way.
"""

from __future__ import annotations

__all__ = ["StopMatcher"]


class StopMatcher:
    """Feeds on text deltas; reports when a stop string appears and trims it."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that can be emitted now; sets `stopped` when a stop string was completed."""
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        keep = self._held_length()
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out

    def flush(self) -> str:
        """The held-back text once generation ended without a stop."""
        out, self.pending = self.pending, ""
        return out

    def _held_length(self) -> int:
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if stop.startswith(self.pending[-size:]):
                    longest = size
                    break
        return longest
