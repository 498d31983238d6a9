"""Serving /v1/audio/transcriptions and /v1/audio/translations.

The request is admitted to the model's queue first (429 before any decoding), then the
worker decodes the upload and yields the audio's info and its segments. They come back
whole in the requested format, or as `transcript.text.delta` events per segment when
`stream` is set. `postprocess: "llm"` sends the finished segments through a chat model
(transcript_cleanup.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Literal

from lampstand.plugins.contract import Capability
from lampstand.plugins.errors import InvalidRequest, LampstandError
from lampstand.plugins.types import TranscriptionInfo, TranscriptionRequest, TranscriptSegment

from .. import protocol as p
from ..config import ServerSettings
from ..leases import Lease
from ..model_pool import ModelPool
from .generation import admitted, sse_frames
from .transcript_cleanup import clean_segments
from .transcript_formats import render_transcript, transcript_text, usage

__all__ = ["create_transcription", "Task", "TranscriptBody"]

Task = Literal["transcribe", "translate"]
TranscriptBody = tuple[str, str]  # body, media type
_CAPABILITY = {"transcribe": Capability.TRANSCRIPTION, "translate": Capability.TRANSLATION}
Item = TranscriptionInfo | TranscriptSegment


def _request(form: p.AudioForm, audio: bytes, task: Task) -> TranscriptionRequest:
    words = "word" in form.timestamp_granularities
    if words and form.response_format != "verbose_json":
        raise InvalidRequest("timestamp_granularities[] needs response_format verbose_json",
                             param="timestamp_granularities[]")
    if form.stream and form.postprocess == "llm":
        raise InvalidRequest('postprocess "llm" works on the whole transcript; it cannot be streamed',
                             param="postprocess")
    return TranscriptionRequest(
        audio=audio, task=task, language=form.language if task == "transcribe" else None,
        prompt=form.prompt, temperature=form.temperature, word_timestamps=words,
        vad_filter=form.vad_filter, min_silence_ms=form.min_silence_ms)


async def create_transcription(pool: ModelPool, settings: ServerSettings, form: p.AudioForm, audio: bytes,
                               task: Task) -> TranscriptBody | AsyncIterator[str]:
    """The transcript as (body, media type), or SSE frames when `stream` is set."""
    hosted = pool.require(form.model, _CAPABILITY[task])
    request = _request(form, audio, task)  # checks fields only; the audio is decoded in the worker
    items = await admitted(pool, hosted, None, lambda lease: _transcribe(lease, request))
    if form.stream:
        return sse_frames(_deltas(items))
    info, segments = await _collect(items)
    if form.postprocess == "llm":
        segments = await clean_segments(pool, settings, segments, form.prompt)
    return render_transcript(info, segments, form.response_format, task, request.word_timestamps)


async def _transcribe(lease: Lease, request: TranscriptionRequest) -> AsyncIterator[Item]:
    metrics, model = lease.pool.metrics, lease.hosted.id
    arrived = time.monotonic()
    async with lease:
        worker = await lease.worker()
        async for item in worker.stream("transcribe", request, lease.deadline):
            if isinstance(item, TranscriptionInfo):
                metrics.audio_seconds.labels(model).inc(item.duration)
            yield item
    metrics.e2e.labels(model).observe(time.monotonic() - arrived)


async def _first_info(items: AsyncIterator[Item]) -> TranscriptionInfo:
    info = await anext(items)
    if not isinstance(info, TranscriptionInfo):
        raise LampstandError("the transcription plugin did not report the audio's info first")
    return info


async def _collect(items: AsyncIterator[Item]) -> tuple[TranscriptionInfo, list[TranscriptSegment]]:
    info = await _first_info(items)
    return info, [segment async for segment in items if isinstance(segment, TranscriptSegment)]


async def _deltas(items: AsyncIterator[Item]) -> AsyncIterator[str]:
    info = await _first_info(items)
    segments: list[TranscriptSegment] = []
    async for segment in items:
        if isinstance(segment, TranscriptSegment):
            segments.append(segment)
            text = segment.text if len(segments) > 1 else segment.text.lstrip()
            yield p.TranscriptTextDelta(delta=text, start=segment.start, end=segment.end,
                                        duration=info.duration).to_json()
    yield p.TranscriptTextDone(text=transcript_text(segments), usage=usage(info)).to_json()
