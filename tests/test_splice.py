"""Spliced chunk JSON is byte for byte what pydantic renders."""

from __future__ import annotations

import pytest

from lampstand.server import protocol as p
from lampstand.server.serving.splice import StringSplice

AWKWARD = ["", "plain", ' "quoted" ', "back\\slash", "line\nbreak\r\t", "\x00\x01\x1f\x7f", "é漢字🙂",
           "\u2028\u2029", "\ufffd", "</script>", "\ue000lampstand-splice\ue000"]


def chunk_json(text: str) -> str:
    choice = p.ChatChunkChoice(index=2, delta=p.ChatDelta(content=text), logprobs=None, finish_reason=None)
    return p.ChatCompletionChunk(id="chatcmpl-x", created=1, model="m", choices=[choice], usage=None).to_json()


@pytest.mark.parametrize("text", AWKWARD + [chr(c) for c in range(0, 0x80)])
def test_splice_matches_pydantic(text: str) -> None:
    assert StringSplice(chunk_json)(text) == chunk_json(text)


def test_marker_in_the_rendering_falls_back_to_rendering() -> None:
    def render(text: str) -> str:
        return chunk_json(text).replace('"m"', '"\ue000lampstand-splice\ue000"')

    splice = StringSplice(render)
    assert splice("hi") == render("hi")
