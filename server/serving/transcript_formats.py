"""A transcript in each of OpenAI's response formats: json, text, srt, vtt, verbose_json.

Pure functions from segments to a body and its media type; shared by the server and the
CLI (which renders in-process transcripts the same way). Never touches a plugin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from lampstand.plugins.languages import language_name
from lampstand.plugins.types import TranscriptionInfo, TranscriptSegment

from .. import protocol as p

__all__ = ["render_transcript", "transcript_text", "srt", "vtt", "verbose", "usage", "MEDIA_TYPES"]

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def transcript_text(segments: Sequence[TranscriptSegment]) -> str:
    """The whole text: segments joined as Whisper spaces them, outer blanks removed."""
    return "".join(s.text for s in segments).strip()


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(segment: TranscriptSegment) -> str:
    # A blank line would end the cue early; "-->" would read as a timing line.
    lines = [line.strip() for line in segment.text.strip().splitlines() if line.strip()]
    return "\n".join(lines).replace("-->", "->")


def srt(segments: Sequence[TranscriptSegment]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    return "".join(f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{_cue_text(s)}\n\n"
                   for i, s in enumerate(segments, 1))


def vtt(segments: Sequence[TranscriptSegment]) -> str:
    """WebVTT: the `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues."""
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{_cue_text(s)}\n\n"
                                  for s in segments)


def usage(info: TranscriptionInfo) -> p.AudioUsage:
    """Billed seconds, as OpenAI counts them: the audio's length, rounded up."""
    return p.AudioUsage(seconds=math.ceil(info.duration))


def verbose(info: TranscriptionInfo, segments: Sequence[TranscriptSegment], task: str,
            with_words: bool) -> p.TranscriptionVerbose:
    """verbose_json: language name, duration, every segment field, and words when asked."""
    body = p.TranscriptionVerbose(
        task=task, language=language_name(info.language), duration=round(info.duration, 3),
        text=transcript_text(segments),
        segments=[p.TranscriptionSegmentOut(
            id=s.id, seek=s.seek, start=s.start, end=s.end, text=s.text, tokens=list(s.tokens),
            temperature=s.temperature, avg_logprob=s.avg_logprob, compression_ratio=s.compression_ratio,
            no_speech_prob=s.no_speech_prob) for s in segments],
        usage=usage(info),
    )
    if with_words:
        body.words = [p.TranscriptionWordOut(word=w.word, start=w.start, end=w.end)
                      for s in segments for w in s.words]
    return body


def render_transcript(info: TranscriptionInfo, segments: Sequence[TranscriptSegment], response_format: str,
                      task: str = "transcribe", with_words: bool = False) -> tuple[str, str]:
    """The response body in `response_format` and its media type."""
    if response_format == "verbose_json":
        body = verbose(info, segments, task, with_words).to_json()
    elif response_format == "json":
        body = p.Transcription(text=transcript_text(segments), usage=usage(info)).to_json()
    else:
        body = _PLAIN_TEXT[response_format](segments)
    return body, MEDIA_TYPES[response_format]


_PLAIN_TEXT: dict[str, Callable[[Sequence[TranscriptSegment]], str]] = {
    "text": lambda segments: transcript_text(segments) + "\n", "srt": srt, "vtt": vtt}
