"""Options of the `faster_whisper` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lampstand.plugins.contract import PluginOptions

__all__ = ["FasterWhisperOptions"]


class FasterWhisperOptions(PluginOptions):
    """How faster-whisper loads and decodes one Whisper model."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("auto", description='CTranslate2 type; "auto" is int8 on CPU, float16 on CUDA')
    cpu_threads: int = Field(0, ge=0, description="0: all cores")
    beam_size: int = Field(5, ge=1, le=16)
    vad_filter: bool = Field(True, description="drop silence with the bundled Silero VAD before decoding")
    min_silence_ms: int = Field(2000, ge=0, description="VAD: silence that separates speech chunks")
    batch_size: int = Field(4, ge=0, description="batched decoding of long audio, this many chunks at once; 0: off")
    batch_min_seconds: float = Field(60.0, ge=0, description="audio at least this long (with VAD on) is batched")
