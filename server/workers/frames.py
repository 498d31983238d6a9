"""Length-prefixed pickled messages from a worker to the API process.

The worker writes each message as one `write` of a 4-byte big-endian length and the pickle.
The API process reads whatever the pipe holds in one `os.read` when the event loop says it
is readable and splits it into messages here, so a streamed token costs one system call on
each side and a large result never blocks the loop while the rest of it arrives.

A worker parses model files nobody vouched for, so the API process does not trust what it
sends: frames unpickle with `_ResultUnpickler`, which builds builtin values plus only the
dataclasses and exception classes of the lampstand package. A worker taken over by a
crafted file cannot make the API process import or call anything else.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import os
import pickle
import struct
from typing import Any

__all__ = ["write_frame", "FrameReader", "read_frame_blocking"]

_HEADER = struct.Struct("!I")
READ_SIZE = 1 << 20
_OWN_PACKAGE = "lampstand."


class _ResultUnpickler(pickle.Unpickler):
    """Unpickles plain data and lampstand's own dataclasses and errors, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        return _allowed_class(module, name)


@functools.cache
def _allowed_class(module: str, name: str) -> type:
    """The class `module.name` if results may hold it (looked up once per name)."""
    if module.startswith(_OWN_PACKAGE) and "." not in name:
        found = getattr(importlib.import_module(module), name, None)
        if isinstance(found, type) and (dataclasses.is_dataclass(found) or issubclass(found, BaseException)):
            return found
    raise pickle.UnpicklingError(f"a worker sent {module}.{name}, which results may not contain")


def decode(payload: bytes | bytearray) -> Any:
    """One message from its pickle, refusing anything but data (see the module docstring)."""
    return _ResultUnpickler(io.BytesIO(payload)).load()


def encode(message: Any) -> bytes:
    """One message as it travels: length, then pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def write_frame(fd: int, message: Any) -> None:
    """Write `message` to `fd` whole (a blocking descriptor; callers serialise writers)."""
    view = memoryview(encode(message))
    while view:
        view = view[os.write(fd, view):]


class FrameReader:
    """Collects bytes and hands back the complete messages among them."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Messages completed by `data`, in order; a partial one waits for more bytes."""
        self._buffer += data
        messages = []
        start = 0
        while len(self._buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer, start)
            end = start + _HEADER.size + size
            if len(self._buffer) < end:
                break
            messages.append(decode(self._buffer[start + _HEADER.size:end]))
            start = end
        del self._buffer[:start]
        return messages

    def read_available(self, fd: int) -> list[Any]:
        """Read what `fd` holds now (it must be readable) and return the complete messages.

        Raises EOFError when the writer has closed its end.
        """
        data = os.read(fd, READ_SIZE)
        if not data:
            raise EOFError
        return self.feed(data)


def read_frame_blocking(fd: int, reader: FrameReader) -> Any:
    """Wait for the next message on `fd` (used once, for the worker's first message)."""
    while True:
        messages = reader.read_available(fd)
        if messages:
            if len(messages) > 1:
                raise RuntimeError("worker sent more than one message before it was loaded")
            return messages[0]
