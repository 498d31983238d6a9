"""Serving /v1/audio/transcriptions and /v1/audio/translations.

The request is admitted to the model's queue first (429 before any decoding): as soon as the
form has named the model, before the upload is read, when the client sends `model` ahead of
`file` (as OpenAI's SDKs do); otherwise once the form is read. Then the worker decodes the
upload and yields the audio's info and its segments. They come back
whole in the requested format, or as `transcript.text.delta` events per segment when
`stream` is set. `postprocess: "llm"` sends the finished segments through a chat model
(transcript_cleanup.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Literal

from lampstand.plugins.contract import TRANSCRIBE, Capability
from lampstand.plugins.errors import InvalidRequest, LampstandError
from lampstand.plugins.types import TranscriptionInfo, TranscriptionRequest, TranscriptSegment

from .. import protocol as p
from ..config import ServerSettings
from ..leases import Lease
from ..model_pool import ModelPool
from .generation import admitted, sse_frames
from .transcript_cleanup import clean_segments
from .transcript_formats import render_transcript, transcript_text, usage

__all__ = ["create_transcription", "EarlyAdmission", "Task", "TranscriptBody"]

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


class EarlyAdmission:
    """Admits an audio request to its model's queue once the form's fields name the model.

    Called with the fields sent before the file (see `open_form`): 404, 400 or 429 then come
    before the upload is read. The lease stays here until `take` hands it to the work;
    `release` gives back a lease nobody took (the form was bad, or the work never started).
    """

    def __init__(self, pool: ModelPool, task: Task) -> None:
        self.pool, self.task = pool, task
        self.lease: Lease | None = None

    def __call__(self, fields: Mapping[str, str]) -> None:
        model = fields.get("model")
        if model is not None and self.lease is None:
            self.lease = self.pool.admit(self.pool.require(model, _CAPABILITY[self.task]))

    def take(self) -> Lease | None:
        lease, self.lease = self.lease, None
        return lease

    def release(self) -> None:
        lease = self.take()
        if lease is not None:
            lease.release()


async def create_transcription(pool: ModelPool, settings: ServerSettings, form: p.AudioForm, audio: bytes,
                               task: Task, early: EarlyAdmission | None = None) -> TranscriptBody | AsyncIterator[str]:
    """The transcript as (body, media type), or SSE frames when `stream` is set.

    `early` holds the request's lease when it was admitted while the form was read.
    """
    hosted = pool.require(form.model, _CAPABILITY[task])
    if early is not None and early.lease is not None and early.lease.hosted is not hosted:
        raise InvalidRequest("the form names more than one model", param="model")
    request = _request(form, audio, task)  # checks fields only; the audio is decoded in the worker
    lease = early.take() if early is not None else None
    items = await admitted(pool, hosted, None, lambda lease: _transcribe(lease, request), lease)
    if form.stream:
        return sse_frames(_deltas(items))
    info, segments = await _collect(items)
    if form.postprocess == "llm":
        segments = await clean_segments(pool, settings, segments, form.prompt)
    return render_transcript(info, segments, form.response_format, task, request.word_timestamps)


async def _transcribe(lease: Lease, request: TranscriptionRequest) -> AsyncIterator[Item]:
    audio_seconds = lease.metrics.audio_seconds.labels(lease.model_id)
    async with lease:
        async for item in lease.stream(TRANSCRIBE, request):
            if isinstance(item, TranscriptionInfo):
                audio_seconds.inc(item.duration)
            yield item


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
