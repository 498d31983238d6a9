"""Uploaded bytes to 16 kHz mono float32 samples, in process, with a ceiling on length.

PyAV (FFmpeg's libraries, bundled with faster-whisper) reads wav, mp3, m4a, ogg, flac, webm
and the rest from memory: no file is written and no program is run. A small compressed file
can expand to hours of samples, so decoding stops with a 400 once `max_seconds` of audio
have come out, before the samples fill memory. Imported only inside the plugin's methods.
"""

from __future__ import annotations

import io

import numpy as np

from lampstand.plugins.errors import InvalidRequest

__all__ = ["SAMPLE_RATE", "decode_upload"]

SAMPLE_RATE = 16000


def decode_upload(data: bytes, max_seconds: float) -> np.ndarray:
    """The samples of an uploaded audio file; `InvalidRequest` if it is not one."""
    import av

    if not data:
        raise InvalidRequest("the audio file is empty", param="file")
    limit = int(max_seconds * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    count = 0
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidRequest("the file has no audio stream", param="file")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    count += pieces[-1].size
                if count > limit:
                    raise InvalidRequest(f"the audio is longer than the limit of {max_seconds:.0f} seconds",
                                         param="file")
            for out in resampler.resample(None):  # what the resampler still holds
                pieces.append(out.to_ndarray().reshape(-1))
    except InvalidRequest:
        raise
    except (av.FFmpegError, ValueError, IndexError, RuntimeError) as exc:
        raise InvalidRequest(f"the file could not be decoded as audio: {exc}", param="file") from exc
    if not pieces or sum(p.size for p in pieces) == 0:
        raise InvalidRequest("the audio file has no samples", param="file")
    return np.concatenate(pieces).astype(np.float32) / 32768.0
