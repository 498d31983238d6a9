"""Speech to text over HTTP: the bundled tiny Whisper, espeak-ng speech, every response format.

Word error rate: on these espeak-ng sentences the tiny model measured 0.00-0.22 per file
(at most two of nine words wrong, e.g. "brown" -> "round", "jumps" -> "jump") and 0.09 on
average over all encodings. The thresholds (0.34 per file, 0.15 on average) allow one more
error than that per file and catch a broken pipeline (wrong sample rate, lost segments,
garbage from a mis-decoded container), which gives a WER near 1.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from conftest import SMOLLM, RunningServer, start_server, stop_server
from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path
from speech_audio import ENCODINGS, SENTENCES, encode, speak, wav_seconds, word_error_rate

WHISPER = bundled_path(BUNDLED_MODELS[2])
MAX_AUDIO_BYTES = 1024 * 1024
MAX_FILE_WER, MAX_MEAN_WER = 0.34, 0.15
SRT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)$")
VTT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)$")
SEGMENT_FIELDS = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                  "compression_ratio", "no_speech_prob"}


def config() -> str:
    return f"""
[server]
max_audio_bytes = {MAX_AUDIO_BYTES}

[[models]]
id = "whisper-tiny"
plugin = "faster_whisper"
path = "{WHISPER}"
aliases = ["whisper", "whisper-1"]
cpu_threads = 2

[[models]]
id = "whisper-batched"
plugin = "faster_whisper"
path = "{WHISPER}"
cpu_threads = 2
batch_size = 4
batch_min_seconds = 0

[[models]]
id = "whisper-tight"
plugin = "faster_whisper"
path = "{WHISPER}"
cpu_threads = 2
max_concurrency = 1
max_queue = 0

[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 2048
n_threads = 2
"""


@pytest.fixture(scope="module")
def speech_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("speech"), config())
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(speech_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=speech_server.base_url, api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(speech_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=speech_server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [speak(text, folder / f"clip{i}.wav") for i, text in enumerate(SENTENCES)]


def transcribe(http: httpx.Client, audio: bytes, name: str = "clip.wav", **fields: object) -> httpx.Response:
    data = {"model": "whisper", **{k: v for k, v in fields.items() if k != "granularities"}}
    if "granularities" in fields:
        data["timestamp_granularities[]"] = fields["granularities"]
    return http.post("/v1/audio/transcriptions", files={"file": (name, audio)}, data=data)


def seconds(parts: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in parts)
    return h * 3600 + m * 60 + s + ms / 1000


# -- recognition --------------------------------------------------------------------------

def test_every_encoding_is_transcribed_within_the_error_rate(http: httpx.Client, clips: list[Path]) -> None:
    rates = []
    for clip, sentence in zip(clips, SENTENCES):
        for encoding in ENCODINGS:
            response = transcribe(http, encode(clip, encoding), name="clip" + ENCODINGS[encoding][2])
            assert response.status_code == 200, response.text
            rate = word_error_rate(sentence, response.json()["text"])
            assert rate <= MAX_FILE_WER, (encoding, response.json()["text"])
            rates.append(rate)
    assert sum(rates) / len(rates) <= MAX_MEAN_WER


def test_sdk_json_and_open_webui_request(sdk: openai.OpenAI, http: httpx.Client, clips: list[Path]) -> None:
    result = sdk.audio.transcriptions.create(model="whisper-1", file=clips[1].open("rb"))
    assert word_error_rate(SENTENCES[1], result.text) <= MAX_FILE_WER
    # Open WebUI sends only `file` and `model` and reads `text`.
    response = http.post("/v1/audio/transcriptions", files={"file": ("speech.wav", clips[1].read_bytes())},
                         data={"model": "whisper"})
    assert response.headers["content-type"] == "application/json"
    assert response.json()["text"] == result.text
    assert response.json()["usage"] == {"type": "duration", "seconds": 5}


def test_text_srt_and_vtt_are_plain_text(sdk: openai.OpenAI, http: httpx.Client, clips: list[Path]) -> None:
    audio, duration = clips[1].read_bytes(), wav_seconds(clips[1])
    text = transcribe(http, audio, response_format="text")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text.endswith("\n") and not text.text.startswith('"')
    assert word_error_rate(SENTENCES[1], text.text) <= MAX_FILE_WER

    srt = transcribe(http, audio, response_format="srt")
    assert srt.headers["content-type"].startswith("application/x-subrip")
    cues = srt.text.strip("\n").split("\n\n")
    for number, cue in enumerate(cues, 1):
        index, timing, *lines = cue.split("\n")
        assert index == str(number) and lines
        match = SRT_TIMING.match(timing)
        assert match, timing
        start, end = seconds(match.groups()[:4]), seconds(match.groups()[4:])
        assert 0 <= start < end <= duration + 0.05
    assert srt.text.endswith("\n\n")

    vtt = transcribe(http, audio, response_format="vtt")
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n")
    for cue in vtt.text[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        timing, *lines = cue.split("\n")
        assert VTT_TIMING.match(timing) and lines, cue

    assert sdk.audio.transcriptions.create(model="whisper", file=clips[1].open("rb"),
                                           response_format="srt") == srt.text


def test_verbose_json_with_words(sdk: openai.OpenAI, clips: list[Path]) -> None:
    duration = wav_seconds(clips[0])
    result = sdk.audio.transcriptions.create(
        model="whisper", file=clips[0].open("rb"), response_format="verbose_json",
        timestamp_granularities=["segment", "word"], language="en")
    assert result.language == "english"
    assert abs(result.duration - duration) < 0.05
    assert result.segments and result.words
    raw = result.model_dump()
    for segment in raw["segments"]:
        assert SEGMENT_FIELDS <= set(segment)
        assert 0 <= segment["start"] < segment["end"] <= duration + 0.05
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= duration + 0.05 for w in result.words)
    assert word_error_rate(SENTENCES[0], " ".join(w.word for w in result.words)) <= MAX_FILE_WER


def test_translation(sdk: openai.OpenAI, clips: list[Path]) -> None:
    result = sdk.audio.translations.create(model="whisper", file=clips[1].open("rb"))
    assert word_error_rate(SENTENCES[1], result.text) <= MAX_FILE_WER  # English speech stays English


def test_stream_sends_deltas_then_done(http: httpx.Client, clips: list[Path]) -> None:
    response = transcribe(http, clips[0].read_bytes(), stream="true")
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = response.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    events = [json.loads(f[len("data: "):]) for f in frames[:-2]]
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert deltas and events[-1]["type"] == "transcript.text.done"
    assert "".join(d["delta"] for d in deltas) == events[-1]["text"]
    assert word_error_rate(SENTENCES[0], events[-1]["text"]) <= MAX_FILE_WER


def test_voice_activity_filter_keeps_the_original_timeline(http: httpx.Client, tmp_path: Path) -> None:
    clip = speak(SENTENCES[1], tmp_path / "late.wav", silence_before_s=6.0)
    bodies = {vad: transcribe(http, clip.read_bytes(), response_format="verbose_json", vad_filter=vad,
                              min_silence_ms="500").json() for vad in ("true", "false")}
    for vad, body in bodies.items():
        assert word_error_rate(SENTENCES[1], body["text"]) <= MAX_FILE_WER, (vad, body)
    # With VAD the silence is cut before decoding, and the timestamps are mapped back onto
    # the original audio, so the speech starts after the 6 s of silence. Without it, the
    # tiny model's first timestamp is 0.
    assert bodies["true"]["segments"][0]["start"] >= 5.0
    assert bodies["false"]["segments"][0]["start"] < 5.0


def test_batched_decoding_of_long_audio(http: httpx.Client, tmp_path: Path) -> None:
    clip = speak(" ".join(SENTENCES * 3), tmp_path / "long.wav")
    whole = " ".join(SENTENCES * 3)
    batched = transcribe(http, clip.read_bytes(), model="whisper-batched", response_format="verbose_json").json()
    sequential = transcribe(http, clip.read_bytes(), response_format="verbose_json").json()
    # Batched decoding gave WER 0.20 in 10 of 10 runs of this clip. Sequential decoding is
    # not repeatable on it: when a window fails Whisper's quality thresholds it is decoded
    # again by sampling at a higher temperature, and 1-2 runs in 10 lost most of the text
    # (WER 0.8-0.95). So the error rate is asserted for the batched path only; both must
    # give ordered segments inside the audio.
    assert word_error_rate(whole, batched["text"]) <= MAX_FILE_WER
    for body in (batched, sequential):
        starts = [s["start"] for s in body["segments"]]
        assert starts == sorted(starts) and body["segments"][-1]["end"] <= wav_seconds(clip) + 0.05


def test_llm_cleanup_keeps_segments_and_uses_the_chat_model(http: httpx.Client, clips: list[Path]) -> None:
    def generated() -> float:
        metrics = http.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith('lampstand:generation_tokens_total{model_name="smollm2"}'))

    before = generated()
    plain = transcribe(http, clips[1].read_bytes(), response_format="verbose_json", prompt="Friday").json()
    cleaned = transcribe(http, clips[1].read_bytes(), response_format="verbose_json", postprocess="llm",
                         prompt="Friday").json()
    assert generated() > before  # the chat model really wrote the cleaned lines
    assert [(s["start"], s["end"]) for s in cleaned["segments"]] == \
        [(s["start"], s["end"]) for s in plain["segments"]]
    assert cleaned["text"].strip()


# -- bad input ----------------------------------------------------------------------------

BAD_UPLOADS = [
    # (what, file bytes, extra fields, status, code or param expected in the envelope)
    ("empty file", b"", {}, 400, "file"),
    ("not audio", b"%PDF-1.4 this is not sound at all" * 20, {}, 400, "file"),
    ("truncated wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", {}, 400, "file"),
    ("unknown language", None, {"language": "xx"}, 400, "language"),
    ("bad format", None, {"response_format": "mp4"}, 400, "response_format"),
    ("words without verbose_json", None, {"granularities": "word"}, 400, "timestamp_granularities[]"),
    ("temperature out of range", None, {"temperature": "3"}, 400, "temperature"),
    ("chat model", None, {"model": "smollm2"}, 400, "model"),
    ("unknown model", None, {"model": "nope"}, 404, "model"),
    ("stream with cleanup", None, {"stream": "true", "postprocess": "llm"}, 400, "postprocess"),
]


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads_get_the_envelope(http: httpx.Client, clips: list[Path], case: tuple) -> None:  # type: ignore[type-arg]
    _, audio, fields, status, param = case
    response = transcribe(http, clips[0].read_bytes() if audio is None else audio, **fields)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_oversized_upload_is_413(http: httpx.Client) -> None:
    response = transcribe(http, b"\0" * (MAX_AUDIO_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("request_kwargs", [
    {"json": {"model": "whisper", "file": "abc"}},
    {"data": {"model": "whisper"}, "files": {"other": ("x.wav", b"RIFF")}},
    {"content": b"--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end",
     "headers": {"content-type": "multipart/form-data; boundary=x"}},
], ids=["json body", "no file part", "broken multipart"])
def test_malformed_requests_are_400(http: httpx.Client, request_kwargs: dict) -> None:  # type: ignore[type-arg]
    response = http.post("/v1/audio/transcriptions", **request_kwargs)
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


class HalfSentUpload:
    """A raw-socket audio upload that sends its fields and the start of its file, then waits."""

    BOUNDARY = "lampstand-test-boundary"

    def __init__(self, server: RunningServer, model: str, declared_bytes: int = MAX_AUDIO_BYTES - 1024) -> None:
        head = (f'--{self.BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
                f'--{self.BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                "Content-Type: audio/wav\r\n\r\n").encode() + b"RIFF" + b"\0" * 60_000
        host, port = server.url.removeprefix("http://").split(":")
        self.socket = socket.create_connection((host, int(port)), timeout=10)
        self.socket.sendall(
            (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared_bytes}\r\n"
             f"Content-Type: multipart/form-data; boundary={self.BOUNDARY}\r\n\r\n").encode() + head)

    def answer(self) -> tuple[int, dict]:  # type: ignore[type-arg]
        """The status and JSON body the server sent while the file was still mostly unsent."""
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = self.socket.recv(65536)
            if not chunk:
                break
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        return int(head.split()[1]), json.loads(body)

    def close(self) -> None:
        self.socket.close()

    @classmethod
    def answer_to(cls, server: RunningServer, model: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        """Send a half upload naming `model`, read the answer, hang up."""
        upload = cls(server, model)
        try:
            return upload.answer()
        finally:
            upload.close()


def _content_length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    return next((int(line.split(":")[1]) for line in head.split("\r\n") if line.startswith("content-length:")), 0)


def test_a_full_queue_refuses_before_the_upload_is_read(speech_server: RunningServer, http: httpx.Client,
                                                        clips: list[Path]) -> None:
    """`model` comes before `file` (as the SDKs send it): 404 and 429 arrive with most of the file unsent."""
    def card() -> dict:  # type: ignore[type-arg]
        return http.get("/v1/models/whisper-tight").json()

    status, body = HalfSentUpload.answer_to(speech_server, "no-such-model")
    assert status == 404 and body["error"]["code"] == "model_not_found", body
    holder = HalfSentUpload(speech_server, "whisper-tight")  # admitted, then stalls mid-file: the queue is full
    try:
        deadline = time.monotonic() + 10
        while card()["waiting"] + card()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, body = HalfSentUpload.answer_to(speech_server, "whisper-tight")
        assert status == 429 and body["error"]["code"] == "queue_full", body
    finally:
        holder.close()  # the stalled upload goes away: its place in the queue is given back
    deadline = time.monotonic() + 10
    while card()["waiting"] + card()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    response = transcribe(http, clips[0].read_bytes(), model="whisper-tight")
    assert response.status_code == 200, response.text


def test_hostile_filename_touches_nothing(http: httpx.Client, clips: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "pwned.wav"
    name = f"../../../../../../..{target}; touch {tmp_path}/shell"
    response = transcribe(http, clips[0].read_bytes(), name=name)
    assert response.status_code == 200
    assert not target.exists() and not (tmp_path / "shell").exists()


def test_server_keeps_serving(speech_server: RunningServer, http: httpx.Client, clips: list[Path]) -> None:
    assert speech_server.alive()
    assert http.get("/health").status_code == 200
    assert transcribe(http, clips[0].read_bytes()).status_code == 200


# -- CLI ----------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lampstand.clients", "transcribe", *args],
                          capture_output=True, text=True, timeout=180)


def test_cli_writes_next_to_the_input_what_the_api_returns(speech_server: RunningServer, http: httpx.Client,
                                                           clips: list[Path], tmp_path: Path) -> None:
    audio = tmp_path / "note.wav"
    audio.write_bytes(clips[1].read_bytes())
    done = run_cli("--url", speech_server.url, "-f", "srt", str(audio))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "note.srt").read_text() == transcribe(http, audio.read_bytes(), response_format="srt").text

    verbose = run_cli("--url", speech_server.url, "-f", "verbose_json", "--stdout", str(audio))
    assert json.loads(verbose.stdout)["segments"]


def test_cli_in_process_and_errors(speech_server: RunningServer, clips: list[Path], tmp_path: Path) -> None:
    local = run_cli("--local", "--stdout", "-f", "text", "--config", str(speech_server.log.parent / "lampstand.toml"),
                    str(clips[1]))
    assert local.returncode == 0, local.stderr
    assert word_error_rate(SENTENCES[1], local.stdout) <= MAX_FILE_WER
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    failed = run_cli("--url", speech_server.url, str(bad))
    assert failed.returncode == 2 and "could not be decoded" in failed.stderr and "Traceback" not in failed.stderr
