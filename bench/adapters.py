"""LoRA adapters: training speed, load latency, and decoding with adapters switched per request.

All in one run, on the bundled SmolLM2 GGUF, 2 threads:

* training tokens/s: `lampstand train`'s loop (lampstand.training.run.train) against a plain
  peft + transformers loop (AdamW, the same encoded rows, batch size and LoRA settings), both
  counting the tokens of the sequences they step over; median over steps after the first.
  The run also writes adapter A (its PEFT files and GGUF LoRA); adapter B is a second short run
  with another seed.
* adapter load latency: POST /v1/load_lora_adapter (then unload) on a running server, and the
  raw `llama_adapter_lora_init` in this process.
* mixing adapters in the batch: four streams at once (aggregate tokens/s over the burst) with
  every stream on the base, two on the base and two on adapter A, and base, base, A, B: the
  batch serves one adapter group at a time (16 steps each, round robin), so this is the cost.
* decode tokens/s per request (/v1/completions, greedy, `--tokens` new tokens) on the server:
  the base alone, adapter A on every request, and A, B and the base alternating request by
  request; against llama-cpp-python in this process with no adapter, with `lora_path=A`, and
  alternating adapters the only way its own server can: building the `Llama` again with the
  other `lora_path` for each request (the load is part of that request's time).

Run: python bench/adapters.py [--steps 12] [--tokens 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from server_process import SMOLLM, print_load, running_server

N_THREADS, N_CTX = 2, 1024
PROMPT = "Here is a long story about a lighthouse keeper and a message in a bottle. Chapter one:"
DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "fact_train.jsonl"
LORA = {"rank": 16, "alpha": 32.0, "batch_size": 4, "max_seq_len": 64, "threads": N_THREADS}


def median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


# -- training ---------------------------------------------------------------------------------


class _Steps:
    """Collects the tokens/s each optimizer step reports."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def info(self, line: str) -> None:
        pass

    def step(self, report: Any) -> None:
        self.rates.append(report.tokens_per_s)


def train_adapter(out: Path, steps: int, seed: int) -> tuple[Path, list[float]]:
    """Train with lampstand's trainer; the adapter folder and the per-step tokens/s."""
    from lampstand.server.config import Settings
    from lampstand.training.config import TrainConfig
    from lampstand.training.run import train

    steps_seen = _Steps()
    config = TrainConfig(base=str(SMOLLM), data=DATA, out=str(out), max_steps=steps, seed=seed, lr=1e-3,
                         save_every=10_000, **LORA)
    result = train(config, Settings(), steps_seen)
    return result.out, steps_seen.rates


def plain_peft_rates(steps: int) -> list[float]:
    """The same rows, batch and LoRA through a textbook peft + transformers loop."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lampstand.training.data import load_training_file
    from lampstand.training.encode import encode_dataset
    from lampstand.training.lora import default_targets, linear_layers

    torch.set_num_threads(N_THREADS)
    torch.manual_seed(0)
    folder, name = str(SMOLLM.parent), SMOLLM.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    targets = default_targets(model.config.model_type, linear_layers(model))
    model = get_peft_model(model, LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=0.05,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    sequences, _ = encode_dataset(tokenizer, load_training_file(DATA), LORA["max_seq_len"], packing=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    rates = []
    for step in range(steps):
        batch = [sequences[(step * LORA["batch_size"] + i) % len(sequences)] for i in range(LORA["batch_size"])]
        width = max(len(s.input_ids) for s in batch)
        ids = torch.tensor([s.input_ids + [pad] * (width - len(s.input_ids)) for s in batch])
        labels = torch.tensor([s.labels + [-100] * (width - len(s.labels)) for s in batch])
        mask = torch.tensor([[1] * len(s.input_ids) + [0] * (width - len(s.input_ids)) for s in batch])
        started = time.monotonic()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rates.append(sum(len(s.input_ids) for s in batch) / (time.monotonic() - started))
    return rates


# -- serving ----------------------------------------------------------------------------------


def server_config(adapters: Path) -> str:
    return f"""
[server]
default_max_tokens = 64
[adapters]
dir = "{adapters}"
hot_load = true
[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = {N_CTX}
n_threads = {N_THREADS}
"""


def served_decode(client: httpx.Client, model: str, tokens: int) -> float:
    """Tokens/s of one greedy completion request, wall time over HTTP."""
    started = time.perf_counter()
    answer = client.post("/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": tokens,
                                                  "temperature": 0})
    answer.raise_for_status()
    return answer.json()["usage"]["completion_tokens"] / (time.perf_counter() - started)


def served_together(url: str, models: list[str], tokens: int) -> float:
    """Aggregate tokens/s of one completion per model in `models`, all sent at once."""
    counts: list[int] = []

    def one(model: str) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            answer = client.post("/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": tokens,
                                                          "temperature": 0, "logit_bias": {"0": -100, "1": -100,
                                                                                           "2": -100}})
            answer.raise_for_status()
            counts.append(answer.json()["usage"]["completion_tokens"])

    threads = [threading.Thread(target=one, args=(model,)) for model in models]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


MIXES = {"4 streams, all base": ["smollm2"] * 4, "4 streams, 2 base + 2 on a": ["smollm2", "a", "smollm2", "a"],
         "4 streams, base, base, a, b": ["smollm2", "a", "smollm2", "b"]}


def serve_figures(adapters: Path, tokens: int, repeats: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"load_http_ms": [], "load_engine_ms": []}
    with running_server(server_config(adapters)) as url, httpx.Client(base_url=url, timeout=600) as client:
        served_decode(client, "smollm2", 8)  # load the base
        for _ in range(repeats + 1):
            started = time.perf_counter()
            card = client.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "a"}).json()
            figures["load_http_ms"].append((time.perf_counter() - started) * 1000)
            figures["load_engine_ms"].append(card["load_seconds"] * 1000)
            client.post("/v1/unload_lora_adapter", json={"lora_name": "a"}).raise_for_status()
        for name in ("a", "b"):
            client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": name}).raise_for_status()
        rotation = ["a", "b", "smollm2"]
        figures["server base"] = [served_decode(client, "smollm2", tokens) for _ in range(repeats)]
        figures["server adapter a"] = [served_decode(client, "a", tokens) for _ in range(repeats)]
        figures["server alternating"] = [served_decode(client, rotation[i % 3], tokens) for i in range(repeats * 3)]
        for label, models in MIXES.items():
            figures[f"server together: {label}"] = [served_together(url, models, tokens) for _ in range(repeats)]
    return figures


def raw_figures(adapters: Path, tokens: int, repeats: int) -> dict[str, list[float]]:
    import llama_cpp
    from llama_cpp import Llama

    from lampstand.training.manifest import GGUF_FILE

    a_gguf, b_gguf = adapters / "a" / GGUF_FILE, adapters / "b" / GGUF_FILE

    def build(lora: Path | None = None) -> Llama:
        return Llama(model_path=str(SMOLLM), n_ctx=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                     lora_path=str(lora) if lora else None, verbose=False)

    def decode(llm: Llama, started: float | None = None) -> float:
        started = started if started is not None else time.perf_counter()
        out = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)

    figures: dict[str, list[float]] = {}
    base = build()
    figures["load_raw_ms"] = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        pointer = llama_cpp.llama_adapter_lora_init(base.model, str(a_gguf).encode())
        figures["load_raw_ms"].append((time.perf_counter() - started) * 1000)
        llama_cpp.llama_adapter_lora_free(pointer)
    figures["raw base"] = [decode(base) for _ in range(repeats)]
    base.close()
    with_a = build(a_gguf)
    figures["raw adapter a"] = [decode(with_a) for _ in range(repeats)]
    with_a.close()
    rotation: list[Path | None] = [a_gguf, b_gguf, None]
    figures["raw alternating (reload per request)"] = []
    for i in range(repeats * 3):
        started = time.perf_counter()
        llm = build(rotation[i % 3])
        figures["raw alternating (reload per request)"].append(decode(llm, started))
        llm.close()
    return figures


def show(label: str, values: list[float], unit: str, pick: Callable[[list[float]], float] = statistics.median) -> float:
    value = pick(values)
    print(f"  {label:40s} {value:9.1f} {unit}  ({len(values)} runs: {', '.join(f'{v:.1f}' for v in values)})")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="training steps measured on each side")
    parser.add_argument("--tokens", type=int, default=96, help="new tokens per decode request")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print_load("start")
    with tempfile.TemporaryDirectory(prefix="lampstand-adapters-bench-") as tmp:
        adapters = Path(tmp)
        print("training (tokens/s per optimizer step, median after the first):")
        _, ours = train_adapter(adapters / "a", args.steps, seed=0)
        plain = plain_peft_rates(args.steps)
        train_adapter(adapters / "b", 4, seed=1)
        ours_tps = show("lampstand train", ours, "tok/s", median_after_first)
        plain_tps = show("plain peft + transformers loop", plain, "tok/s", median_after_first)
        print(f"  ratio: {ours_tps / plain_tps:.3f} of the plain loop")
        served = serve_figures(adapters, args.tokens, args.repeats)
        raw = raw_figures(adapters, args.tokens, args.repeats)
        print("adapter load latency (median after the first):")
        show("server: POST /v1/load_lora_adapter", served.pop("load_http_ms"), "ms", median_after_first)
        show("server: engine load inside the worker", served.pop("load_engine_ms"), "ms", median_after_first)
        show("raw llama_adapter_lora_init", raw.pop("load_raw_ms"), "ms", median_after_first)
        print(f"decode, {args.tokens} new tokens per request (tokens/s per request, median):")
        values = {label: show(label, runs, "tok/s") for label, runs in {**served, **raw}.items()}
        print(f"  alternating: server {values['server alternating'] / values['raw alternating (reload per request)']:.1f}x "
              "the reload-per-request way")
        print(f"  adapter cost on the server: {values['server adapter a'] / values['server base']:.3f} of the base's "
              f"speed (raw: {values['raw adapter a'] / values['raw base']:.3f})")
        alone = values["server together: 4 streams, all base"]
        for label in list(MIXES)[1:]:
            print(f"  mixing in the batch, {label}: {values['server together: ' + label] / alone:.3f} of the "
                  "all-base aggregate")
    print_load("end")


if __name__ == "__main__":
    sys.exit(main())
