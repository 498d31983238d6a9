"""Continuous batching over HTTP: a llama_cpp model with `parallel = 4` serves four streams at once.

What must hold whatever the machine's speed: requests really run together (the model card
counts them), a greedy or seeded answer is the same alone and beside three others, every
per-request setting still applies (stop strings, max_tokens, logprobs, JSON schema, logit
bias), a stream whose client leaves frees its sequence, and requests beyond the slots wait
their turn and get their answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from conftest import SMOLLM, RunningServer, start_server, stop_server

PARALLEL = 4
NO_EOS = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens, banned: generation runs to max_tokens
TOPICS = ["cats", "ships", "bread", "rain"]


CHUNK = 32  # cache_chunk of the flash-attention model: its prompts are read and reused in these
MAX_QUEUE = 4


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batched-adapters")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, adapters_dir: Path) -> Iterator[RunningServer]:
    config = f"""
[adapters]
dir = "{adapters_dir}"
hot_load = true

[[models]]
id = "batched"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 1024
n_threads = 2
parallel = {PARALLEL}
max_queue = {MAX_QUEUE}
preload = true

[[models]]
id = "batched-aligned"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 512
n_threads = 2
parallel = 2
flash_attn = true
cache_chunk = {CHUNK}
"""
    running = start_server(tmp_path_factory.mktemp("batching"), config)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def ask(http: httpx.Client, topic: str, **fields: Any) -> dict[str, Any]:
    body = {"model": "batched", "messages": [{"role": "user", "content": f"Tell me about {topic}."}],
            "max_tokens": 32, "temperature": 0} | fields
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


T = TypeVar("T")


def at_once(work: Callable[[int], T], count: int) -> list[T]:
    """`work(0)` ... `work(count - 1)`, each in its own thread, all started together."""
    results: dict[int, T] = {}

    def run(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[i] for i in range(count)]


def together(server: RunningServer, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each body of `calls` sent at once, from its own thread and connection."""
    def send(i: int) -> dict[str, Any]:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return ask(client, **calls[i])

    return at_once(send, len(calls))


def text(answer: dict[str, Any]) -> str:
    return answer["choices"][0]["message"]["content"]


def token_logprobs(answer: dict[str, Any]) -> list[tuple[str, float]]:
    return [(t["token"], t["logprob"]) for t in answer["choices"][0]["logprobs"]["content"]]


def test_the_card_offers_the_slots(http: httpx.Client) -> None:
    card = http.get("/v1/models/batched").json()
    assert card["status"] == "loaded" and card["running"] == 0


def test_greedy_and_seeded_answers_are_the_same_alone_and_together(server: RunningServer, http: httpx.Client) -> None:
    calls = [{"topic": TOPICS[0]}, {"topic": TOPICS[1], "temperature": 0.9, "seed": 11},
             {"topic": TOPICS[2]}, {"topic": TOPICS[3], "temperature": 0.7, "seed": 5}]
    alone = [text(ask(http, **call)) for call in calls]
    assert all(alone) and len(set(alone)) == len(alone)
    assert [text(a) for a in together(server, calls)] == alone


def test_requests_run_together(server: RunningServer, http: httpx.Client) -> None:
    """Four long streams at once: the card counts them running side by side, none waiting."""
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            card = http.get("/v1/models/batched").json()
            seen.append(card["running"])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = together(server, [{"topic": t, "max_tokens": 200, "logit_bias": NO_EOS} for t in TOPICS])
    finally:
        done.set()
        watcher.join()
    assert max(seen) == PARALLEL, seen
    assert all(a["usage"]["completion_tokens"] == 200 and a["choices"][0]["finish_reason"] == "length"
               for a in answers)


def test_metrics_count_the_sequences_of_each_step(http: httpx.Client) -> None:
    """After four streams ran together, the engine's step sizes reach /metrics (within seconds)."""
    def steps(le: str) -> float:
        prefix = f'lampstand:batch_size_bucket{{le="{le}",model_name="batched"}} '
        lines = [line for line in http.get("/metrics").text.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    deadline = time.monotonic() + 10
    while steps("+Inf") - steps("3.0") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert steps("+Inf") - steps("3.0") > 0  # steps with all four sequences in them
    assert steps("1.0") > 0  # and the steps of lone requests


def test_every_setting_applies_to_its_own_sequence(server: RunningServer) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    calls = [
        {"topic": "a person; answer as JSON", "max_tokens": 60,
         "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}},
        {"topic": "counting to twenty", "max_tokens": 5},
        {"topic": "cats", "logprobs": True, "top_logprobs": 3, "max_tokens": 6},
        {"topic": "cats", "stop": ["cat"], "max_tokens": 60},
    ]
    structured, short, scored, stopped = together(server, calls)
    person = json.loads(text(structured))
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert short["usage"]["completion_tokens"] == 5 and short["choices"][0]["finish_reason"] == "length"
    entries = scored["choices"][0]["logprobs"]["content"]
    assert len(entries) == 6 and all(len(e["top_logprobs"]) == 3 and e["logprob"] <= 0 for e in entries)
    assert "cat" not in text(stopped)


def test_a_client_that_leaves_frees_its_sequence(server: RunningServer, http: httpx.Client) -> None:
    body = {"model": "batched", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 900,
            "logit_bias": NO_EOS, "stream": True}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
    deadline = time.monotonic() + 10
    while http.get("/v1/models/batched").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get("/v1/models/batched").json()["running"] == 0
    assert text(ask(http, "rain", max_tokens=4))


def test_more_requests_than_slots_all_get_answers(server: RunningServer) -> None:
    answers = together(server, [{"topic": f"{t} and more", "max_tokens": 16} for t in TOPICS * 2])
    assert all(text(a) and a["usage"]["completion_tokens"] <= 16 for a in answers)


def test_beyond_the_slots_and_the_queue_requests_are_refused(server: RunningServer) -> None:
    """Slots + max_queue requests are served; the rest of a burst gets 429 at once."""
    burst = PARALLEL + MAX_QUEUE + 2

    def send(i: int) -> httpx.Response:
        body = {"model": "batched", "messages": [{"role": "user", "content": f"Story {i}."}], "max_tokens": 48,
                "logit_bias": NO_EOS}
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return client.post("/v1/chat/completions", json=body)

    statuses = [r.status_code for r in at_once(send, burst)]
    assert statuses.count(200) == PARALLEL + MAX_QUEUE and statuses.count(429) == 2, statuses


def test_a_long_prompt_is_read_beside_running_streams(server: RunningServer, http: httpx.Client) -> None:
    """A prompt longer than one batch (n_batch 512) joins two running streams: it is read in
    chunks between their steps, and all three answer as they do alone."""
    long_topic = "the history of lighthouses, " + ", ".join(f"lamp number {i}" for i in range(120))
    calls = [{"topic": "cats", "max_tokens": 64, "logit_bias": NO_EOS, "logprobs": True},
             {"topic": "ships", "max_tokens": 64, "logit_bias": NO_EOS, "logprobs": True},
             {"topic": long_topic, "max_tokens": 12, "logprobs": True}]
    alone = [ask(http, **call) for call in calls]
    assert alone[2]["usage"]["prompt_tokens"] > 512
    # the same numbers to the last bit, not only the same greedy text
    assert [token_logprobs(a) for a in together(server, calls)] == [token_logprobs(a) for a in alone]


def test_tools_and_schemas_beside_plain_requests(server: RunningServer) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    calls = [{"topic": "the weather in Paris", "tools": [weather], "max_tokens": 60,
              "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
             {"topic": "cats", "max_tokens": 40},
             {"topic": "a list of two colours as JSON", "max_tokens": 120,
              "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": {
                  "type": "object", "properties": {"colours": {
                      "type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2}},
                  "required": ["colours"]}}}},
             {"topic": "ships", "max_tokens": 40}]
    forced, plain, structured, other = together(server, calls)
    (call,) = forced["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    assert isinstance(json.loads(text(structured))["colours"], list)
    assert text(plain) and text(other)


def test_adapter_and_base_requests_interleave_without_bleed(server: RunningServer, http: httpx.Client,
                                                            adapters_dir: Path, random_lora: Path) -> None:
    shutil.copytree(random_lora.parent, adapters_dir / "style")
    loaded = http.post("/v1/load_lora_adapter", json={"lora_name": "style", "lora_path": "style",
                                                        "base_model": "batched"})
    assert loaded.status_code == 200, loaded.text
    try:
        calls = [{"topic": "cats"}, {"topic": "cats", "model": "batched:style"}, {"topic": "ships"}]
        alone = [text(ask(http, **call)) for call in calls]
        assert alone[0] != alone[1]  # the adapter changes the answer
        assert [text(a) for a in together(server, calls)] == alone
    finally:
        http.post("/v1/unload_lora_adapter", json={"lora_name": "style"})


def test_a_worker_crash_ends_every_stream_and_the_next_request_works(server: RunningServer,
                                                                     http: httpx.Client) -> None:
    """Four streams in flight when the worker dies: each ends with an error event; the model
    loads again for the next request."""
    pid = http.get("/v1/models/batched").json()["worker_pid"]
    started = threading.Barrier(PARALLEL + 1, timeout=60)

    def stream(i: int) -> list[str]:
        body = {"model": "batched", "messages": [{"role": "user", "content": f"Story {i}."}], "max_tokens": 900,
                "logit_bias": NO_EOS, "stream": True}
        events = []
        with httpx.Client(base_url=server.url, timeout=120) as client:
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        if len(events) == 2:
                            started.wait()
        return events

    def crash(i: int) -> list[str]:
        if i < PARALLEL:
            return stream(i)
        started.wait()
        os.kill(pid, signal.SIGKILL)
        return []

    for events in at_once(crash, PARALLEL + 1)[:PARALLEL]:
        assert events[-1] == "[DONE]" and "error" in json.loads(events[-2]), events[-3:]
    assert text(ask(http, "rain", max_tokens=4))
    assert http.get("/v1/models/batched").json()["worker_pid"] != pid


@pytest.mark.parametrize("model", ["batched", "batched-aligned"])
def test_a_repeated_prompt_beginning_is_not_read_again(http: httpx.Client, model: str) -> None:
    """The slot that holds the longest prefix takes the request; usage says how much was cached
    (in whole aligned chunks); a warm cache gives the same greedy answer as a cold one. The
    default model's prompt is longer than a batch (516 tokens), so a cold read spans two."""
    repeats, chunk = {"batched": (48, 1), "batched-aligned": (8, CHUNK)}[model]  # reuse ends anywhere / aligned
    system = {"role": "system", "content": f"You are a terse assistant for the {model} lighthouse museum. " * repeats}

    def asked(question: str) -> tuple[str, dict[str, Any]]:
        body = {"model": model, "messages": [system, {"role": "user", "content": question}],
                "max_tokens": 24, "temperature": 0}
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"], response.json()["usage"]

    cold, first = asked("Where is the shop?")
    _, second = asked("When does it open?")
    warm, third = asked("Where is the shop?")
    assert first["prompt_tokens_details"]["cached_tokens"] < 80
    for usage in (second, third):
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert cached >= 80 and cached % chunk == 0  # the system prompt, at least
        assert cached < usage["prompt_tokens"]
    assert warm == cold


def test_the_next_turn_reuses_the_previous_prompt_and_answers_as_a_cold_read(server: RunningServer,
                                                                          http: httpx.Client) -> None:
    """Without flash attention the slot's KV is reused up to any token of the previous prompt
    (not the previous answer: generated tokens were read one at a time, and a fresh read of them
    gives other numbers), and the answer is the same, to the last bit, as after a cold read."""
    first = [{"role": "user", "content": "Tell me about lighthouses."}]
    answer = ask(http, "lighthouses", max_tokens=40, messages=first)
    turn = first + [{"role": "assistant", "content": text(answer)},
                    {"role": "user", "content": "And who kept them?"}]
    warm = ask(http, "", max_tokens=24, logprobs=True, messages=turn)
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] == answer["usage"]["prompt_tokens"]
    together(server, [{"topic": topic, "max_tokens": 4} for topic in TOPICS])  # every slot holds another prompt
    cold = ask(http, "", max_tokens=24, logprobs=True, messages=turn)
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] < answer["usage"]["prompt_tokens"]
    assert token_logprobs(warm) == token_logprobs(cold)


def test_n_choices_run_side_by_side_and_repeat_with_their_seed(http: httpx.Client) -> None:
    body = {"model": "batched", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12,
            "temperature": 0.9, "seed": 21, "n": 4}
    first = http.post("/v1/chat/completions", json=body).json()
    again = http.post("/v1/chat/completions", json=body).json()
    texts = [c["message"]["content"] for c in sorted(first["choices"], key=lambda c: c["index"])]
    assert [c["index"] for c in sorted(first["choices"], key=lambda c: c["index"])] == [0, 1, 2, 3]
    assert texts == [c["message"]["content"] for c in sorted(again["choices"], key=lambda c: c["index"])]
    assert len(set(texts)) > 1  # each choice has its own seed
    single = http.post("/v1/chat/completions", json=body | {"n": 1}).json()
    assert single["choices"][0]["message"]["content"] == texts[0]


def test_identical_prompts_arriving_together_are_read_once(server: RunningServer) -> None:
    """The first reads the prompt; the other copies its KV and reads only its last piece (two
    tokens) again, and both answer alike, to the last bit."""
    call = {"topic": "the tides and the moon, in a long and careful answer " * 14, "max_tokens": 4, "logprobs": True}
    answers = together(server, [call, call])
    cached = sorted(a["usage"]["prompt_tokens_details"]["cached_tokens"] for a in answers)
    copied = answers[0]["usage"]["prompt_tokens"] - 2
    assert cached[1] == copied, answers
    assert cached[0] < copied - 100
    assert token_logprobs(answers[0]) == token_logprobs(answers[1])


# -- LoRA adapters in the batch: in process, on the plugin, with a seeded random adapter --------

@pytest.fixture(scope="module")
def random_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random LoRA on every projection of SmolLM2, exported to GGUF like `lampstand train` does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lampstand.training.gguf_lora import export_gguf_lora

    base = AutoModelForCausalLM.from_pretrained(SMOLLM.parent, gguf_file=SMOLLM.name, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    folder = tmp_path_factory.mktemp("lora")
    model.save_pretrained(str(folder))
    export_gguf_lora(folder, SMOLLM, folder / "adapter.gguf")
    return folder / "adapter.gguf"


def test_adapters_share_the_batch_by_groups(random_lora: Path) -> None:
    """Base and adapter sequences at once, the adapter's group taking turns with the base group.

    What holds: every sequence alone in its group answers as it does alone (base ones always),
    and the adapter changes the answer. Two sequences of one adapter in the same step may drift
    from their answers alone: llama.cpp sums an f16/f32 adapter's product in another order for
    several rows than for one (the quantized base weights are summed row by row either way).
    """
    from lampstand.plugins.llama_cpp.plugin import LlamaCppPlugin
    from lampstand.plugins.types import AdapterLoad, AdapterRef, ChatMessage, ChatRequest, SamplingParams

    def request(topic: str, adapter: str | None) -> ChatRequest:
        return ChatRequest(messages=(ChatMessage(role="user", content=f"Tell me about {topic}."),),
                           sampling=SamplingParams(max_tokens=24, temperature=0.0),
                           adapter=AdapterRef(adapter, 1.0) if adapter else None)

    def answers(plugin: LlamaCppPlugin, requests: list[ChatRequest]) -> list[str]:
        return at_once(lambda i: "".join(chunk.text for chunk in plugin.chat(requests[i])), len(requests))

    plugin = LlamaCppPlugin("m", SMOLLM, LlamaCppPlugin.Options(n_ctx=512, n_threads=2, parallel=4))
    plugin.load()
    try:
        plugin.load_adapter(AdapterLoad("style", str(random_lora)))
        mix = [request("cats", None), request("cats", "style"), request("ships", None), request("rain", None)]
        alone = [answers(plugin, [r])[0] for r in mix]
        assert answers(plugin, mix) == alone
        assert alone[0] != alone[1]  # the adapter changes the answer
        styled = answers(plugin, [request("ships", "style"), request("bread", "style"), request("rain", None)])
        assert all(styled) and styled[2] == alone[3]
        plugin.unload_adapter("style")
        assert answers(plugin, [request("cats", None)]) == alone[:1]
    finally:
        plugin.unload()
