"""Responses overhead: /v1/responses against /v1/chat/completions on the same model and prompt.

Both routes run on one `lampstand serve` with the bundled SmolLM2 GGUF (n_ctx=2048,
n_threads=2), in the same run, alternating which goes first in each repeat:

* chat:      a streaming POST /v1/chat/completions, tokens from the final usage chunk
             (`stream_options.include_usage`);
* responses: a streaming POST /v1/responses with the same system text as `instructions` and
             the same user text as `input` (stored, the default: its SQLite write is timed
             too), tokens from the `usage` of the final `response.completed` event.

Temperature 0 and a prompt that writes past `--tokens`. Each request starts its system text
with a session number of its own (chat 1000 + repeat, responses 2000 + repeat: the same
length), so neither side reuses prompt KV the other left (the llama.cpp engine keeps prompt
prefixes, and the same prompt through the second route would skip its prefill). TTFT is the time to
the first text delta; decode tokens/s counts tokens after the first over the time from the
first to the end of the stream. Figures are the median and the best of `--repeats`, and the
responses/chat ratio of each; the ratio per repeat (both sides back to back) is the least
noisy figure. Since wall-clock figures swing with other work on the machine, the CPU time the
API process (not the model's worker) spends per streamed token is given too: what each route's
framing costs, whatever else runs. Timings never go into the tests.

Run: python bench/responses.py [--tokens 128] [--repeats 10] [--port PORT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import median
from typing import Any

import httpx
import psutil

from server_process import SMOLLM, free_port, print_load, running_server

N_CTX, N_THREADS = 2048, 2
CHAT_SESSIONS, RESPONSES_SESSIONS = 1000, 2000
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
    api_cpu_s: float = 0.0

    @property
    def api_cpu_ms_per_token(self) -> float:
        return self.api_cpu_s * 1e3 / self.tokens

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / (self.total_s - self.ttft_s)


def system_text(session: int) -> str:
    return f"Session {session}. You are a storyteller who writes at great length."


def config(store_dir: str) -> str:
    return f"""
[responses]
dir = "{store_dir}"

[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = {N_CTX}
n_threads = {N_THREADS}
"""


def sse_data(response: httpx.Response) -> Iterable[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def timed(client: httpx.Client, path: str, body: dict[str, Any],
          text_of: Callable[[dict[str, Any]], str], usage_of: Callable[[dict[str, Any]], dict[str, int] | None]
          ) -> tuple[float, float, list[str], dict[str, int]]:
    """TTFT, total seconds, the text pieces and the usage of one streamed request."""
    first, texts, usage = 0.0, [], {}
    start = time.perf_counter()
    with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        for event in sse_data(response):
            if "error" in event or event.get("type") in ("error", "response.failed"):
                raise RuntimeError(f"{path} failed mid-stream: {event}")
            piece = text_of(event)
            if piece:
                if not texts:
                    first = time.perf_counter() - start
                texts.append(piece)
            usage = usage_of(event) or usage
    return first, time.perf_counter() - start, texts, usage


def run_chat(client: httpx.Client, session: int, max_tokens: int) -> Run:
    body = {"model": "smollm2", "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": system_text(session)}, {"role": "user", "content": STORY}]}
    ttft, total, texts, usage = timed(
        client, "/v1/chat/completions", body,
        lambda event: "".join(c["delta"].get("content") or "" for c in event.get("choices", [])),
        lambda event: event.get("usage"))
    return Run(ttft, total, usage["prompt_tokens"], usage["completion_tokens"], "".join(texts))


def run_responses(client: httpx.Client, session: int, max_tokens: int) -> Run:
    body = {"model": "smollm2", "max_output_tokens": max_tokens, "temperature": 0, "stream": True,
            "instructions": system_text(session), "input": STORY}
    ttft, total, texts, usage = timed(
        client, "/v1/responses", body,
        lambda event: event.get("delta", "") if event["type"] == "response.output_text.delta" else "",
        lambda event: event["response"]["usage"] if event["type"] in ("response.completed",
                                                                     "response.incomplete") else None)
    return Run(ttft, total, usage["input_tokens"], usage["output_tokens"], "".join(texts))


ROWS = (("chat TTFT (ms)", ".1f"), ("responses TTFT (ms)", ".1f"), ("TTFT responses - chat (ms)", ".1f"),
        ("chat decode (tok/s)", ".1f"), ("responses decode (tok/s)", ".1f"),
        ("decode responses/chat (goal >= 0.97)", ".3f"))


def figures(chat: list[Run], responses: list[Run], pick_ttft: Pick, pick_tps: Pick) -> list[float]:
    ttft_chat, ttft_resp = (pick_ttft([r.ttft_s * 1e3 for r in runs]) for runs in (chat, responses))
    tps_chat, tps_resp = (pick_tps([r.decode_tps for r in runs]) for runs in (chat, responses))
    return [ttft_chat, ttft_resp, ttft_resp - ttft_chat, tps_chat, tps_resp, tps_resp / tps_chat]


def api_process(port: int) -> psutil.Process:
    """The `lampstand serve` process listening on `port` (the API process; workers are its children)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "serve" in cmdline and str(port) in cmdline:
            return process
    raise RuntimeError(f"no lampstand serve process on port {port}")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def report(chat: list[Run], responses: list[Run]) -> None:
    print(f"\nprompt tokens chat/responses: {chat[0].prompt_tokens}/{responses[0].prompt_tokens}, completion "
          f"tokens: {chat[0].tokens}/{responses[0].tokens}")
    mid, best = figures(chat, responses, median, median), figures(chat, responses, min, max)
    width = max(len(name) for name, _ in ROWS)
    print(f"  {'':<{width}}  {'median':>8}  {'best':>8}")
    for (name, fmt), a, b in zip(ROWS, mid, best):
        print(f"  {name:<{width}}  {a:>8{fmt}}  {b:>8{fmt}}")
    paired = sorted(r.decode_tps / c.decode_tps for c, r in zip(chat, responses))
    ttft = sorted(c.ttft_s / r.ttft_s for c, r in zip(chat, responses))
    print(f"decode responses/chat per repeat: median {median(paired):.3f}, range {paired[0]:.3f}-{paired[-1]:.3f}")
    print(f"TTFT chat/responses per repeat (1.0 = the same): median {median(ttft):.3f}, "
          f"range {ttft[0]:.3f}-{ttft[-1]:.3f}")
    cpu_chat, cpu_resp = (median(r.api_cpu_ms_per_token for r in runs) for runs in (chat, responses))
    print(f"API process CPU per streamed token (median): chat {cpu_chat:.3f} ms, responses {cpu_resp:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="max tokens per request")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    args = parser.parse_args()

    print_load("at the start")
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="lampstand-bench-store-") as store, \
            running_server(config(store), port) as url, httpx.Client(base_url=url, timeout=300) as client:
        api = api_process(port)
        run_chat(client, 0, args.tokens)  # warm-up, untimed: loads the model
        run_responses(client, 0, args.tokens)
        chat: list[Run] = []
        responses: list[Run] = []
        print(f"{'repeat':>6} {'side':>9} {'TTFT ms':>8} {'tokens':>6} {'decode tok/s':>12}")
        for i in range(1, args.repeats + 1):
            order = ("chat", "responses") if i % 2 else ("responses", "chat")
            for side in order:
                before = cpu_seconds(api)
                run = run_chat(client, CHAT_SESSIONS + i, args.tokens) if side == "chat" else \
                    run_responses(client, RESPONSES_SESSIONS + i, args.tokens)
                run.api_cpu_s = cpu_seconds(api) - before
                (chat if side == "chat" else responses).append(run)
                print(f"{i:>6} {side:>9} {run.ttft_s * 1e3:8.1f} {run.tokens:>6} {run.decode_tps:12.1f}")
    report(chat, responses)
    print_load("at the end")


if __name__ == "__main__":
    main()
