"""`lampstand transcribe`: audio files to text, SRT, VTT or JSON, from a server or in-process.

Both ways end in the same `(info, segments)` and are rendered by the server's own
`transcript_formats`, so a file written here has the bytes the API would return. Over HTTP
the request streams (`transcript.text.delta` events carry each segment's times), which
drives the progress bar; verbose_json needs every segment field and is asked for whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from lampstand.plugins.contract import TRANSCRIBE
from lampstand.plugins.errors import LampstandError
from lampstand.plugins.types import TranscriptionInfo, TranscriptionRequest, TranscriptSegment

from .wire import bearer, check, sse_events, unreachable

__all__ = ["transcribe_over_http", "transcribe_in_process", "verbose_over_http", "Progress"]

Progress = Callable[[float, float], None]  # (seconds decoded, seconds in all)
Transcript = tuple[TranscriptionInfo, list[TranscriptSegment]]


def _segment(index: int, start: float, end: float, text: str) -> TranscriptSegment:
    """A segment known only by its times and text (what a streamed delta carries)."""
    return TranscriptSegment(id=index, seek=0, start=start, end=end, text=text, tokens=(), temperature=0.0,
                             avg_logprob=0.0, compression_ratio=0.0, no_speech_prob=0.0)


def _post(url: str, api_key: str | None, path: Path, fields: dict[str, Any], stream: bool) -> Any:
    headers = bearer(api_key)
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items() if v is not None}
    files = {"file": (path.name, path.read_bytes())}
    return httpx.stream("POST", url, data=data | {"stream": str(stream).lower()}, files=files,
                        headers=headers, timeout=httpx.Timeout(10.0, read=None))


def transcribe_over_http(endpoint: str, api_key: str | None, path: Path, fields: dict[str, Any],
                         progress: Progress) -> Transcript:
    """Segments of `path` from a running server, streamed."""
    segments: list[TranscriptSegment] = []
    duration = 0.0
    try:
        with _post(endpoint, api_key, path, fields, stream=True) as response:
            check(response)
            for event in sse_events(response):
                if event["type"] == "transcript.text.delta":
                    duration = event.get("duration") or duration
                    segments.append(_segment(len(segments), event["start"], event["end"], event["delta"]))
                    progress(event["end"], duration)
    except httpx.HTTPError as exc:
        raise unreachable(endpoint, exc) from exc
    if segments:  # the first delta had its leading blank removed; the renderers strip it anyway
        segments[0] = _segment(0, segments[0].start, segments[0].end, " " + segments[0].text)
    return TranscriptionInfo(language="", language_probability=0.0, duration=duration,
                             duration_after_vad=duration), segments


def verbose_over_http(endpoint: str, api_key: str | None, path: Path, fields: dict[str, Any]) -> str:
    """The server's verbose_json body for `path`, asked for whole."""
    try:
        with _post(endpoint, api_key, path, fields | {"response_format": "verbose_json"}, stream=False) as response:
            check(response)
            return response.read().decode("utf-8")
    except httpx.HTTPError as exc:
        raise unreachable(endpoint, exc) from exc


def transcribe_in_process(settings: Any, model: str, request: TranscriptionRequest,
                          progress: Progress) -> Transcript:
    """Segments from the configured Whisper model, loaded here without a server."""
    import asyncio

    from lampstand.plugins.contract import Capability
    from lampstand.server.app import build_state

    capability = Capability.TRANSLATION if request.task == "translate" else Capability.TRANSCRIPTION

    async def run() -> Transcript:
        state = build_state(settings)
        try:
            hosted = state.pool.require(model, capability)
            info: TranscriptionInfo | None = None
            segments: list[TranscriptSegment] = []
            async with state.pool.admit(hosted) as lease:
                async for item in lease.stream(TRANSCRIBE, request):
                    if isinstance(item, TranscriptionInfo):
                        info = item
                    else:
                        segments.append(item)
                        progress(item.end, info.duration if info else 0.0)
            if info is None:
                raise LampstandError("the model reported no audio info")
            return info, segments
        finally:
            await state.pool.close()

    return asyncio.run(run())
