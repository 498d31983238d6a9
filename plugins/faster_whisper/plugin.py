"""The `faster_whisper` plugin: transcription and translation with a CTranslate2 Whisper model.

`faster_whisper` and `ctranslate2` are imported only inside `load` and `transcribe`. The
model comes from a local CTranslate2 folder (`config.json`, `model.bin`) or an HF repo id
that the pool has fetched; the device and compute type follow the hardware unless set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from lampstand.plugins.contract import Capability, Footprint, Plugin, Transcriber
from lampstand.plugins.errors import InvalidRequest, ModelUnavailable
from lampstand.plugins.types import TranscriptionInfo, TranscriptionRequest, TranscriptSegment, TranscriptWord

from .audio import SAMPLE_RATE, decode_upload
from .options import FasterWhisperOptions

__all__ = ["FasterWhisperPlugin"]

RUNTIME_BYTES = 192 * 1024 * 1024  # CTranslate2, the VAD's onnxruntime and PyAV in the worker
MAX_AUDIO_SECONDS = 4 * 3600.0


class FasterWhisperPlugin(Plugin, Transcriber):
    """One Whisper model."""

    name = "faster_whisper"
    Options = FasterWhisperOptions
    options: FasterWhisperOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._batched: Any = None
        self._device = "cpu"

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.TRANSCRIPTION, Capability.TRANSLATION})

    def _weights_bytes(self) -> int:
        weights = self.path / "model.bin"
        return weights.stat().st_size if weights.is_file() else 0

    def estimate_footprint(self) -> Footprint:
        weights = self._weights_bytes()
        if self._wants_gpu():
            return Footprint(ram_bytes=RUNTIME_BYTES, vram_bytes=weights + weights // 2)
        return Footprint(ram_bytes=weights + RUNTIME_BYTES)

    def _wants_gpu(self) -> bool:
        if self.options.device != "auto":
            return self.options.device == "cuda"
        try:
            import ctranslate2
        except ImportError:
            return False
        return ctranslate2.get_cuda_device_count() > 0

    def _compute_type(self) -> str:
        if self.options.compute_type != "auto":
            return self.options.compute_type
        return "float16" if self._device == "cuda" else "int8"

    def load(self) -> None:
        try:
            from faster_whisper import BatchedInferencePipeline, WhisperModel
        except ImportError as exc:
            raise ModelUnavailable("the faster_whisper plugin needs `pip install lampstand[whisper]`") from exc
        if not (self.path / "model.bin").is_file():
            raise ModelUnavailable(f"{self.path.name} is not a CTranslate2 Whisper folder (no model.bin)")
        self._device = "cuda" if self._wants_gpu() else "cpu"
        try:
            self._model = WhisperModel(
                str(self.path), device=self._device, compute_type=self._compute_type(),
                cpu_threads=self.options.cpu_threads or os.cpu_count() or 1, local_files_only=True,
            )
        except Exception as exc:  # a broken folder or an unsupported compute type
            raise ModelUnavailable(f"faster-whisper could not load {self.path.name}: {exc}") from exc
        self._batched = BatchedInferencePipeline(self._model) if self.options.batch_size else None

    def unload(self) -> None:
        self._model = None
        self._batched = None

    def measured_footprint(self) -> Footprint | None:
        if self._model is None:
            return None
        weights = self._weights_bytes()
        return Footprint(ram_bytes=RUNTIME_BYTES, vram_bytes=weights) if self._device == "cuda" else None

    def transcribe(self, request: TranscriptionRequest) -> Iterator[TranscriptionInfo | TranscriptSegment]:
        self._check(request)
        audio = decode_upload(request.audio, MAX_AUDIO_SECONDS)
        vad = self.options.vad_filter if request.vad_filter is None else request.vad_filter
        silence = self.options.min_silence_ms if request.min_silence_ms is None else request.min_silence_ms
        # An English-only model already writes English: translating is transcribing there.
        task = request.task if self._model.model.is_multilingual else "transcribe"
        settings: dict[str, Any] = dict(
            language=request.language, task=task, initial_prompt=request.prompt or None,
            temperature=request.temperature or [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            beam_size=self.options.beam_size, word_timestamps=request.word_timestamps,
            vad_filter=vad, vad_parameters={"min_silence_duration_ms": silence} if vad else None,
        )
        # Batched decoding cuts the audio at VAD pauses and decodes the pieces together: about
        # 1.9x faster on long recordings (bench/speech.py), so long audio with VAD on takes it.
        if self._batched is not None and vad and audio.size >= self.options.batch_min_seconds * SAMPLE_RATE:
            segments, info = self._batched.transcribe(audio, batch_size=self.options.batch_size, **settings)
        else:
            segments, info = self._model.transcribe(audio, **settings)
        yield TranscriptionInfo(language=info.language, language_probability=float(info.language_probability),
                                duration=float(info.duration), duration_after_vad=float(info.duration_after_vad))
        duration = float(info.duration)
        for segment in segments:
            yield _segment(segment, duration)

    def _check(self, request: TranscriptionRequest) -> None:
        supported = self._model.supported_languages
        if request.language is not None and request.language not in supported:
            raise InvalidRequest(f"unknown language {request.language!r}; model {self.model_id!r} knows "
                                 f"{', '.join(supported[:12])}{' ...' if len(supported) > 12 else ''}",
                                 param="language")


def _segment(segment: Any, duration: float) -> TranscriptSegment:
    """Our segment from faster-whisper's, with times kept inside the audio.

    Whisper's timestamps come in 20 ms steps per 30 s window, and the batched pipeline ends
    a segment at its chunk's rounded end: either can fall past the last sample.
    """
    def within(t: float) -> float:
        return min(max(float(t), 0.0), duration)

    words = tuple(TranscriptWord(word=w.word, start=within(w.start), end=within(w.end),
                                 probability=float(w.probability)) for w in segment.words or ())
    return TranscriptSegment(
        id=int(segment.id), seek=int(segment.seek), start=within(segment.start), end=within(segment.end),
        text=segment.text, tokens=tuple(int(t) for t in segment.tokens),
        temperature=float(segment.temperature or 0.0), avg_logprob=float(segment.avg_logprob),
        compression_ratio=float(segment.compression_ratio), no_speech_prob=float(segment.no_speech_prob),
        words=words,
    )
