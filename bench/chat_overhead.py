"""Chat overhead: what the HTTP server costs over calling llama-cpp-python in process.

Measures single-stream time to first token (TTFT) and decode tokens/s for the bundled
SmolLM2 GGUF two ways, in the same run and alternating repeats:

* raw:    `llama_cpp.Llama.create_chat_completion(stream=True)` in this process, one
          content chunk per token;
* server: a streaming POST /v1/chat/completions to `lampstand serve` (httpx, SSE), tokens
          counted from the final chunk's usage (`stream_options.include_usage`).

Both use n_ctx=2048, n_threads=2, temperature 0, `stop: []` and a prompt that writes past
`--tokens`. Each repeat starts its prompt with a new session number, so no prompt KV is
reused from the previous repeat; the raw side also forgets its previous tokens (`Llama.reset`)
before each repeat, since llama-cpp-python would otherwise reuse the few template tokens in
front of the session number, while the server reuses prompt KV only in whole aligned chunks
of 128 tokens (see plugins/llama_cpp/prompt_cache.py), so both evaluate the whole prompt. TTFT is the time to the first content token; decode
tokens/s counts tokens after the first over the time after the first. Only one side runs
at a time (they share the cores). Figures are the median and the best of `--repeats`; the
server's TTFT overhead and decode ratio are computed from each of the two. Since this
machine's speed drifts between runs, the decode ratio is also given per repeat (raw and
server back to back), whose median is the least noisy figure.

Run: python bench/chat_overhead.py [--tokens 128] [--repeats 5] [--port PORT]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import median
from typing import Any

import httpx
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from server_process import SMOLLM, print_load, running_server

N_CTX, N_THREADS = 2048, 2
Pick = Callable[[list[float]], float]
STORY = ("Write a very long, detailed story about a lighthouse keeper who finds a message in a "
         "bottle. Use many chapters.")


@dataclass
class Run:
    ttft_s: float
    total_s: float
    prompt_tokens: int
    tokens: int
    text: str

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / (self.total_s - self.ttft_s)


def messages(session: int) -> list[dict[str, str]]:
    system = f"Session {session}. You are a storyteller who writes at great length."
    return [{"role": "system", "content": system}, {"role": "user", "content": STORY}]


def config() -> str:
    return f"""
[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = {N_CTX}
n_threads = {N_THREADS}
"""


def timed(pieces: Iterable[str], start: float) -> tuple[float, list[str]]:
    """TTFT and the text pieces of a stream, consumed to its end."""
    first, texts = 0.0, []
    for piece in pieces:
        if not piece:
            continue
        if not texts:
            first = time.perf_counter() - start
        texts.append(piece)
    return first, texts


def raw_prompt_tokens(llm: Llama, session: int) -> int:
    """The prompt length `create_chat_completion` evaluates: the GGUF template, as it renders it."""
    text = llm._model.token_get_text
    formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"],
                                    eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))
    prompt = formatter(messages=messages(session)).prompt
    return len(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))


def run_raw(llm: Llama, session: int, max_tokens: int) -> Run:
    llm.reset()  # evaluate the whole prompt, as the server does for a prompt this short
    start = time.perf_counter()
    stream = llm.create_chat_completion(messages(session), max_tokens=max_tokens, temperature=0.0,
                                        stop=[], stream=True)
    ttft, texts = timed((chunk["choices"][0]["delta"].get("content") or "" for chunk in stream), start)
    total = time.perf_counter() - start  # the stream has one content chunk per token
    return Run(ttft, total, raw_prompt_tokens(llm, session), len(texts), "".join(texts))


def sse_events(response: httpx.Response) -> Iterable[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def run_server(client: httpx.Client, session: int, max_tokens: int) -> Run:
    body = {"model": "smollm2", "messages": messages(session), "max_tokens": max_tokens,
            "temperature": 0, "stop": [], "stream": True, "stream_options": {"include_usage": True}}
    usage: dict[str, int] = {}

    def pieces(response: httpx.Response) -> Iterable[str]:
        for event in sse_events(response):
            usage.update(event.get("usage") or {})
            for choice in event.get("choices", []):
                yield choice["delta"].get("content") or ""

    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        ttft, texts = timed(pieces(response), start)
    total = time.perf_counter() - start
    return Run(ttft, total, usage["prompt_tokens"], usage["completion_tokens"], "".join(texts))


ROWS = (("raw TTFT (ms)", ".1f"), ("server TTFT (ms)", ".1f"), ("TTFT overhead (ms, goal < 10)", ".1f"),
        ("raw decode (tok/s)", ".1f"), ("server decode (tok/s)", ".1f"),
        ("decode server/raw (goal >= 0.95)", ".3f"))


def figures(raw: list[Run], served: list[Run], pick_ttft: Pick, pick_tps: Pick) -> list[float]:
    """One column of the report, each side summarised by `pick_ttft` / `pick_tps`."""
    ttft_raw, ttft_srv = (pick_ttft([r.ttft_s * 1e3 for r in runs]) for runs in (raw, served))
    tps_raw, tps_srv = (pick_tps([r.decode_tps for r in runs]) for runs in (raw, served))
    return [ttft_raw, ttft_srv, ttft_srv - ttft_raw, tps_raw, tps_srv, tps_srv / tps_raw]


def report(raw: list[Run], served: list[Run]) -> None:
    same = sum(a.text == b.text for a, b in zip(raw, served))
    print(f"\nprompt tokens raw/server: {raw[0].prompt_tokens}/{served[0].prompt_tokens}, completion "
          f"tokens: {raw[0].tokens}/{served[0].tokens}, same text in {same} of {len(raw)} repeats")
    mid, best = figures(raw, served, median, median), figures(raw, served, min, max)
    width = max(len(name) for name, _ in ROWS)
    print(f"  {'':<{width}}  {'median':>8}  {'best':>8}")
    for (name, fmt), a, b in zip(ROWS, mid, best):
        print(f"  {name:<{width}}  {a:>8{fmt}}  {b:>8{fmt}}")
    paired = sorted(s.decode_tps / r.decode_tps for r, s in zip(raw, served))
    print(f"decode server/raw per repeat (each pair ran back to back): median {median(paired):.3f}, "
          f"range {paired[0]:.3f}-{paired[-1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens per request")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    args = parser.parse_args()

    print_load("at the start")
    llm = Llama(model_path=str(SMOLLM), n_ctx=N_CTX, n_threads=N_THREADS, verbose=False)
    with running_server(config(), args.port) as url, httpx.Client(base_url=url, timeout=120) as client:
        run_raw(llm, 0, args.tokens)  # warm-up, untimed; the server's also loads its model
        run_server(client, 0, args.tokens)
        raw: list[Run] = []
        served: list[Run] = []
        print(f"{'repeat':>6} {'side':>7} {'TTFT ms':>8} {'tokens':>6} {'decode tok/s':>12}")
        for i in range(1, args.repeats + 1):
            order = ("raw", "server") if i % 2 else ("server", "raw")
            for side in order:
                run = run_raw(llm, i, args.tokens) if side == "raw" else run_server(client, i, args.tokens)
                (raw if side == "raw" else served).append(run)
                print(f"{i:>6} {side:>7} {run.ttft_s * 1e3:8.1f} {run.tokens:>6} {run.decode_tps:12.1f}")
    report(raw, served)
    print_load("at the end")


if __name__ == "__main__":
    main()
