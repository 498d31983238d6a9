"""Speech: real-time factor through the server vs in-process faster-whisper, VAD on and off.

Makes one test recording with espeak-ng (several sentences with pauses between them, about
40 s), then times, alternating repeats in the same run:

* raw:    `faster_whisper.WhisperModel(...).transcribe(path, ...)` in this process, all
          segments consumed;
* server: POST /v1/audio/transcriptions (json) to `lampstand serve` with the same model,
          device, compute type, threads, beam size and VAD settings.

Real-time factor (RTF) is processing seconds per second of audio (lower is faster). The
server's speed relative to raw is raw time / server time (goal >= 0.95), given as the median
of back-to-back pairs. Both sides are timed with VAD on and off; the VAD figure shows what
skipping the pauses saves. Last, on a recording four times as long, faster-whisper's batched
pipeline (batch 4, what the plugin uses for audio of a minute or more) against sequential
decoding, both in process.

Run: python bench/speech.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from statistics import median

import httpx
from faster_whisper import BatchedInferencePipeline, WhisperModel

from server_process import WHISPER, print_load, running_server

THREADS, BEAM, COMPUTE = 2, 5, "int8"
SENTENCES = [
    "Good morning everyone, let us begin the weekly planning meeting.",
    "First, the release of version two is scheduled for the end of the month.",
    "Second, the finance team needs the quarterly report before Friday.",
    "Third, please review the open issues on the indexer and the speech server.",
    "Finally, remember that the office is closed on Monday for the holiday.",
]


def recording(folder: Path, sentences: list[str] = SENTENCES, name: str = "meeting.wav") -> Path:
    """The sentences spoken by espeak-ng, with two seconds of silence after each."""
    path = folder / name
    params, frames = None, b""
    for i, sentence in enumerate(sentences):
        part = folder / f"part{i}.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(part), sentence], check=True)
        with wave.open(str(part)) as wav:
            params = wav.getparams()
            frames += wav.readframes(wav.getnframes()) + b"\0" * (2 * params.framerate * params.sampwidth)
    with wave.open(str(path), "wb") as wav:
        wav.setparams(params)
        wav.writeframes(frames)
    return path


def seconds_of(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def run_raw(model: WhisperModel, path: Path, vad: bool) -> float:
    start = time.perf_counter()
    segments, _ = model.transcribe(str(path), beam_size=BEAM, vad_filter=vad,
                                   vad_parameters={"min_silence_duration_ms": 2000} if vad else None)
    text = "".join(s.text for s in segments)
    assert text.strip(), "raw transcription is empty"
    return time.perf_counter() - start


def run_server(client: httpx.Client, path: Path, vad: bool) -> float:
    start = time.perf_counter()
    response = client.post("/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())},
                           data={"model": "whisper", "vad_filter": str(vad).lower(), "min_silence_ms": "2000"})
    response.raise_for_status()
    assert response.json()["text"].strip(), "server transcription is empty"
    return time.perf_counter() - start


def config() -> str:
    return f"""
[[models]]
id = "whisper"
plugin = "faster_whisper"
path = "{WHISPER}"
device = "cpu"
compute_type = "{COMPUTE}"
cpu_threads = {THREADS}
beam_size = {BEAM}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print_load("at the start")
    with tempfile.TemporaryDirectory() as tmp:
        path = recording(Path(tmp))
        audio_s = seconds_of(path)
        print(f"recording: {audio_s:.1f} s of espeak-ng speech with pauses")
        model = WhisperModel(str(WHISPER), device="cpu", compute_type=COMPUTE, cpu_threads=THREADS,
                             local_files_only=True)
        with running_server(config()) as url, httpx.Client(base_url=url, timeout=600) as client:
            for vad in (True, False):  # warm-up, untimed: the server loads its model here
                run_raw(model, path, vad)
                run_server(client, path, vad)
            for vad in (True, False):
                raw, served = [], []
                for i in range(args.repeats):
                    order = ("raw", "server") if i % 2 == 0 else ("server", "raw")
                    for side in order:
                        seconds = run_raw(model, path, vad) if side == "raw" else run_server(client, path, vad)
                        (raw if side == "raw" else served).append(seconds)
                pairs = sorted(r / s for r, s in zip(raw, served))
                print(f"VAD {'on ' if vad else 'off'}: raw RTF {median(raw) / audio_s:.3f}, server RTF "
                      f"{median(served) / audio_s:.3f}; server speed / raw (goal >= 0.95): median of pairs "
                      f"{median(pairs):.3f}, range {pairs[0]:.3f}-{pairs[-1]:.3f}")
        long = recording(Path(tmp), SENTENCES * 4, "long.wav")
        batched = BatchedInferencePipeline(model)
        timings: dict[str, list[float]] = {"sequential": [], "batched": []}
        for _ in range(2):
            for name, pipeline, extra in (("sequential", model, {}), ("batched", batched, {"batch_size": 4})):
                start = time.perf_counter()
                segments, _ = pipeline.transcribe(str(long), beam_size=BEAM, vad_filter=True, **extra)
                list(segments)
                timings[name].append(time.perf_counter() - start)
        seq, bat = min(timings["sequential"]), min(timings["batched"])
        print(f"{seconds_of(long):.0f} s recording, in process: sequential {seq:.2f} s, batched (4) {bat:.2f} s, "
              f"speed-up {seq / bat:.2f}x")
    print_load("at the end")


if __name__ == "__main__":
    main()
