"""Test speech: known sentences spoken by espeak-ng, re-encoded with PyAV, and word error rate."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please send the quarterly report to the finance team before Friday.",
)
# (container format, codec, file suffix) for each format the endpoint must read
ENCODINGS = {
    "wav": ("wav", "pcm_s16le", ".wav"),
    "flac": ("flac", "flac", ".flac"),
    "mp3": ("mp3", "libmp3lame", ".mp3"),
    "m4a": ("ipod", "aac", ".m4a"),
    "ogg": ("ogg", "libopus", ".ogg"),
    "webm": ("webm", "libopus", ".webm"),
}


def speak(text: str, path: Path, silence_before_s: float = 0.0) -> Path:
    """A WAV of espeak-ng saying `text`, optionally after some silence."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is missing: `make test` installs it (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True)
    if silence_before_s:
        with wave.open(str(path)) as wav:
            params, frames = wav.getparams(), wav.readframes(wav.getnframes())
        pad = b"\0" * int(silence_before_s * params.framerate) * params.sampwidth * params.nchannels
        with wave.open(str(path), "wb") as wav:
            wav.setparams(params)
            wav.writeframes(pad + frames)
    return path


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def encode(wav_path: Path, encoding: str) -> bytes:
    """The WAV re-encoded in one of `ENCODINGS`, in memory."""
    import av

    container_format, codec, _ = ENCODINGS[encoding]
    with wave.open(str(wav_path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        out_rate = 48000 if codec == "libopus" else rate
        stream = container.add_stream(codec, rate=out_rate, layout="mono")
        resampler = av.audio.resampler.AudioResampler(format=stream.format.name, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance over words."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(len(ref), 1)
