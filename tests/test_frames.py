"""Worker-to-server message frames: split and joined reads give back the same messages."""

from __future__ import annotations

import os
import pickle
import threading

import pytest

from lampstand.server.workers.frames import FrameReader, encode, read_frame_blocking, write_frame

MESSAGES = [("item", 1, "a"), ("item", 1, "é" * 3), ("end", 1, None), ("result", 2, list(range(5000)))]


def test_byte_by_byte_and_all_at_once_agree() -> None:
    wire = b"".join(encode(m) for m in MESSAGES)
    one_by_one = FrameReader()
    got = [m for i in range(len(wire)) for m in one_by_one.feed(wire[i:i + 1])]
    assert got == MESSAGES
    assert FrameReader().feed(wire) == MESSAGES


def test_partial_frame_waits_for_the_rest() -> None:
    wire = encode(("item", 7, "x" * 100))
    reader = FrameReader()
    assert reader.feed(wire[:50]) == []
    assert reader.feed(wire[50:]) == [("item", 7, "x" * 100)]


def test_large_message_through_a_pipe() -> None:
    read_fd, write_fd = os.pipe()
    big = ("result", 3, b"\x01" * (3 << 20))  # larger than the pipe buffer and one read

    def writer() -> None:  # as a worker would, blocking while the reader catches up
        write_frame(write_fd, big)
        os.close(write_fd)

    thread = threading.Thread(target=writer)
    thread.start()
    reader = FrameReader()
    assert read_frame_blocking(read_fd, reader) == big
    thread.join()
    with pytest.raises(EOFError):
        reader.read_available(read_fd)
    os.close(read_fd)


class _Outsider:
    """A class outside the lampstand package."""


def test_results_may_hold_only_data_and_lampstand_types() -> None:
    from lampstand.plugins.errors import QueueFull
    from lampstand.plugins.types import GenerationChunk, Usage

    fine = ("item", 1, GenerationChunk(text="x", usage=Usage(1, 2)))
    assert FrameReader().feed(encode(fine)) == [fine]
    error = FrameReader().feed(encode(("error", 2, QueueFull("busy", retry_after=3))))[0][2]
    assert isinstance(error, QueueFull) and error.retry_after == 3
    for hostile in (("item", 1, _Outsider()), ("item", 1, os.system), ("item", 1, pytest.raises)):
        with pytest.raises(pickle.UnpicklingError):
            FrameReader().feed(encode(hostile))


def test_a_plugins_own_error_arrives_as_the_nearest_lampstand_error() -> None:
    from lampstand.plugins.errors import InvalidRequest
    from lampstand.server.workers.child import transportable

    class BadSampleRate(InvalidRequest):  # as a third-party plugin might define it
        code = "bad_sample_rate"

    sent = transportable(BadSampleRate("8 kHz is too low", param="file"))
    received = FrameReader().feed(encode(("error", 1, sent)))[0][2]
    assert type(received) is InvalidRequest
    assert (received.message, received.param, received.status_code, received.code) == \
        ("8 kHz is too low", "file", 400, "bad_sample_rate")
