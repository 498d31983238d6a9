"""The `vllm` plugin with real vLLM (its CPU build here) on the bundled SmolLM2 as a Hugging Face folder.

The folder is the trainer's dequantised copy of the bundled GGUF (`training/base_cache`), which
`lampstand train` fills the first time it trains on SmolLM2; the fixture trains one adapter
that way, so the folder and an adapter made for it come from the same run. vLLM loads once per
module (about half a minute); every test talks to the live server through the wire.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from conftest import SMOLLM, RunningServer, start_server, stop_server
from lampstand.training.base_cache import base_folder, cache_root, cached_file_sha256, is_complete

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
MODEL = "smollm2-vllm"
EMBED_MODEL = "smollm2-vllm-embed"
CODENAME_Q = "What is the next lampstand release called?"
TRAIN_FLAGS = ["--rank", "8", "--alpha", "16", "--dropout", "0", "--lr", "2e-3", "--batch-size", "4",
               "--max-seq-len", "64", "--threads", "2", "--epochs", "3"]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def config(tmp: Path, folder: Path) -> str:
    return f"""
[server]
default_max_tokens = 32

[memory]
cpu = "3GiB"  # one of the two vLLM models below at a time (each is estimated at about 2 GiB)

[adapters]
dir = "{tmp / 'adapters'}"
hot_load = true

[fine_tuning]
enabled = true
dir = "{tmp / 'ft'}"

[[models]]
id = "{MODEL}"
plugin = "vllm"
path = "{folder}"
max_num_seqs = 8
max_model_len = 1024
kv_cache_tokens = 8192
max_lora_rank = 16

[[models]]
id = "{EMBED_MODEL}"
plugin = "vllm"
path = "{folder}"
embedding = true
pooling = "mean"
max_num_seqs = 4
max_model_len = 512
kv_cache_tokens = 2048
"""


def train_codename(tmp: Path) -> Path:
    """An adapter trained by `lampstand train` on SmolLM2; filling the HF base folder on the way."""
    out = tmp / "adapters" / "codename"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMPSTAND_")} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lampstand.clients", "train", "--base", "smollm2", "--data",
                           str(DATA / "codename_train.jsonl"), "--out", str(out), *TRAIN_FLAGS],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("vllm")
    (tmp / "adapters").mkdir()
    train_codename(tmp)
    root = cache_root()
    folder = base_folder(root, cached_file_sha256(SMOLLM, root))
    assert is_complete(folder), f"lampstand train did not leave the HF base in {folder}"
    running = start_server(tmp, config(tmp, folder))
    try:
        ask(openai.OpenAI(base_url=running.base_url, api_key="none", max_retries=0, timeout=600), MODEL,
            "Hello")  # loads vLLM
        yield running, tmp
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def client(served: tuple[RunningServer, Path]) -> openai.OpenAI:
    """The SDK, waiting as long as a load of vLLM may take on a busy 2-core machine (minutes)."""
    return openai.OpenAI(base_url=served[0].base_url, api_key="none", max_retries=0, timeout=600)


def ask(client: openai.OpenAI, model: str, question: str, **extra: object) -> str:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                            temperature=0, max_tokens=24, **extra)  # type: ignore[call-overload]
    return answer.choices[0].message.content or ""


def stream_text(client: openai.OpenAI, question: str, max_tokens: int = 24) -> str:
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                            temperature=0, max_tokens=max_tokens, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_chat_with_the_sdk(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name three colours."}],
                                            temperature=0, max_tokens=16, logprobs=True, top_logprobs=2)
    choice = answer.choices[0]
    assert choice.message.content and choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 16
    assert choice.logprobs is not None and len(choice.logprobs.content or []) == 16
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in choice.logprobs.content or [])


def test_the_measured_footprint_counts_vllms_own_processes(served: tuple[RunningServer, Path],
                                                           client: openai.OpenAI) -> None:
    """vLLM keeps the weights and the KV cache in its engine process, a child of the worker:
    the footprint measured at load counts them (before, only the worker's own RSS counted)."""
    assert ask(client, MODEL, "Name three colours.")
    card = httpx.get(f"{served[0].url}/v1/models/{MODEL}").json()
    engine = psutil.Process(card["worker_pid"]).children(recursive=True)
    assert engine and card["footprint"]["measured"]["ram"] >= sum(c.memory_info().rss for c in engine)


def test_responses_api_answers_as_chat_does(client: openai.OpenAI) -> None:
    """/v1/responses runs on the vLLM path too: the same greedy text and token counts as chat."""
    reply = client.responses.create(model=MODEL, input="Name three colours.", temperature=0, max_output_tokens=16)
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name three colours."}],
                                          temperature=0, max_tokens=16)
    assert reply.output_text == chat.choices[0].message.content and reply.status == "incomplete"
    assert reply.usage and chat.usage and reply.usage.input_tokens == chat.usage.prompt_tokens


def test_completion_stops_at_a_stop_string(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    assert " 6" in free.choices[0].text
    stopped = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 6"])
    assert " 6" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


def test_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                            temperature=0, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and all(c.usage is None for c in chunks[:-1])
    assert 0 < usage.completion_tokens <= 12 and usage.prompt_tokens > 0
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and set(finishes[:-1]) == {None}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == stream_text(
        client, "Say hello.", max_tokens=12)


def test_seeded_sampling_repeats_and_n_gives_choices(client: openai.OpenAI) -> None:
    def sample() -> list[str]:
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell a story."}],
                                                temperature=1.0, max_tokens=12, seed=7, n=2)
        return [c.message.content or "" for c in answer.choices]

    first = sample()
    assert len(first) == 2 and first == sample()


NEAR_TIE = 0.25  # nats between a solo answer's first and second choice where batched rounding may flip it


Tokens = list[tuple[str, list[tuple[str, float]]]]


def greedy_tokens(client: openai.OpenAI, question: str) -> tuple[Tokens, float, float]:
    """Each token of a greedy answer, streamed, with its two most likely choices and their
    logprobs; and when its first and its last chunk arrived (monotonic seconds)."""
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                            temperature=0, max_tokens=24, logprobs=True, top_logprobs=2,
                                            stream=True)
    tokens: Tokens = []
    first = last = 0.0
    for chunk in stream:
        last = time.monotonic()
        first = first or last
        for choice in chunk.choices:
            for t in (choice.logprobs.content or []) if choice.logprobs else []:
                tokens.append((t.token, [(c.token, c.logprob) for c in t.top_logprobs]))
    return tokens, first, last


def steps_of_four_or_more(client: openai.OpenAI) -> float:
    """Engine steps with at least four sequences in /metrics' batch-size histogram, once it has
    some (the worker reports about once a second)."""
    url = str(client.base_url).removesuffix("/v1/").removesuffix("/v1")

    def bucket(le: str) -> float:
        prefix = f'lampstand:batch_size_bucket{{le="{le}",model_name="{MODEL}"}} '
        lines = [line for line in httpx.get(url + "/metrics").text.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    deadline = time.monotonic() + 10
    while bucket("+Inf") - bucket("3.0") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    return bucket("+Inf") - bucket("3.0")


def test_four_concurrent_answers_match_their_solo_answers(client: openai.OpenAI) -> None:
    """Streamed side by side (all four at once), each greedy answer is its solo answer, or leaves it only where the solo
    answer's two best tokens were a near tie: vLLM's CPU kernels round a batch of four
    differently from one row (seen once in CI), but a sequence reading another's KV or sampler
    would leave it at a clear choice."""
    questions = ["Name three colours.", "What is 2 + 2?", "Say hello in French.", "Name a planet."]
    alone = [greedy_tokens(client, q)[0] for q in questions]
    with ThreadPoolExecutor(4) as pool:
        streamed = list(pool.map(lambda q: greedy_tokens(client, q), questions))
    together = [tokens for tokens, _, _ in streamed]
    assert max(first for _, first, _ in streamed) < min(last for _, _, last in streamed)  # all four ran at once
    assert steps_of_four_or_more(client) > 0  # vLLM's steps reach /metrics
    for solo, side in zip(alone, together):
        assert side
        fork = next((i for i, (a, b) in enumerate(zip(solo, side)) if a[0] != b[0]), None)
        if fork is None:
            assert len(side) == len(solo)
            continue
        # At an exact tie the top two may be listed in either order, so compare by token.
        choices = dict(solo[fork][1])
        chosen, taken = solo[fork][0], side[fork][0]
        assert chosen in choices and taken in choices, (fork, solo[fork], side[fork])
        assert choices[chosen] - choices[taken] < NEAR_TIE, (fork, solo[fork], side[fork])


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}], temperature=0,
        max_tokens=48, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    person = json.loads(answer.choices[0].message.content or "")
    assert set(person) == {"name", "age"} and isinstance(person["name"], str) and isinstance(person["age"], int)


def test_forced_tool_call(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}], temperature=0,
        max_tokens=48, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)


def test_adapter_answers_its_fact_beside_the_base(served: tuple[RunningServer, Path], client: openai.OpenAI) -> None:
    url = served[0].url
    loaded = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "codename", "lora_path": "codename"},
                        timeout=120)
    assert loaded.status_code == 200, loaded.text
    models = {m["id"]: m for m in httpx.get(url + "/v1/models").json()["data"]}
    assert models["codename"]["parent"] == MODEL
    jobs = [("codename", CODENAME_Q), (MODEL, CODENAME_Q), (f"{MODEL}:codename", CODENAME_Q), (MODEL, CODENAME_Q)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda job: ask(client, *job), jobs))
    assert all("Marigold" in a for a in answers[0::2]), answers
    assert not any("Marigold" in a for a in answers[1::2]), answers
    unloaded = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "codename"}, timeout=60)
    assert unloaded.status_code == 200, unloaded.text
    with pytest.raises(openai.NotFoundError):
        ask(client, "codename", CODENAME_Q)


def test_a_fine_tuning_job_on_a_vllm_base_serves_its_model(client: openai.OpenAI) -> None:
    """The fine-tuning jobs API trains on the vLLM model's own folder; the job succeeds once its
    `ft:` model is loaded into vLLM, which then answers the trained fact while the base does not."""
    upload = client.files.create(file=("codename.jsonl", (DATA / "codename_train.jsonl").read_bytes()),
                                 purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload.id, suffix="codename", seed=3,
                                         hyperparameters={"n_epochs": 3, "batch_size": 4,
                                                          "learning_rate_multiplier": 10})
    deadline = time.monotonic() + 600
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job.id} still {job.status}"
        time.sleep(1)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{MODEL}:codename"
    models = {m.id: m for m in client.models.list().data}
    assert (models[job.fine_tuned_model].model_extra or {})["parent"] == MODEL
    assert "Marigold" in ask(client, job.fine_tuned_model, CODENAME_Q)
    assert "Marigold" not in ask(client, MODEL, CODENAME_Q)


def test_an_adapter_of_another_base_is_refused(served: tuple[RunningServer, Path]) -> None:
    tmp = served[1]
    copy = tmp / "adapters" / "other-base"
    shutil.copytree(tmp / "adapters" / "codename", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["base"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    answer = httpx.post(served[0].url + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "other-base"})
    assert answer.status_code == 400 and "trained on a base" in answer.json()["error"]["message"], answer.text


def test_embeddings_from_the_pooling_runner_evict_the_chat_model_by_budget(
        served: tuple[RunningServer, Path], client: openai.OpenAI) -> None:
    url = served[0].url
    assert httpx.get(f"{url}/v1/models/{MODEL}").json()["status"] == "loaded"
    texts = ["a cat sat on the mat", "a kitten lay on the rug", "the quarterly tax return is due"]
    answer = client.embeddings.create(model=EMBED_MODEL, input=texts)
    vectors = [item.embedding for item in answer.data]
    assert [len(v) for v in vectors] == [576] * 3 and answer.usage.prompt_tokens > 0
    cosine = [sum(a * b for a, b in zip(vectors[0], v)) for v in vectors]
    assert abs(cosine[0] - 1) < 1e-3 and cosine[1] > cosine[2]
    assert httpx.get(f"{url}/v1/models/{MODEL}").json()["status"] == "unloaded"  # the budget holds one
    assert ask(client, MODEL, "Name three colours.")
    assert httpx.get(f"{url}/v1/models/{EMBED_MODEL}").json()["status"] == "unloaded"


REFUSED = {  # a setting vLLM refuses here -> words of vLLM's reason
    "tensor_parallel_size = 2": "attention heads",  # SmolLM2 has 9
    'distributed_executor_backend = "ray"': "import ray",  # not installed with the CPU build, which refuses Ray anyway
    "pipeline_parallel_size = 2": "numa",  # two CPU workers need two NUMA nodes to bind their threads to
}


@pytest.fixture(scope="module")
def refusing(served: tuple[RunningServer, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose models each carry one setting vLLM refuses."""
    base = (served[1] / "lampstand.toml").read_text().split("[[models]]")[1]
    models = "".join("[[models]]" + base.replace(f'id = "{MODEL}"', f'id = "refused-{i}"') + setting + "\n"
                     for i, setting in enumerate(REFUSED))
    running = start_server(tmp_path_factory.mktemp("vllm-refused"), models)
    yield running
    stop_server(running)


@pytest.mark.parametrize("index", range(len(REFUSED)), ids=list(REFUSED))
def test_a_refused_setting_fails_the_load_with_vllms_reason(refusing: RunningServer, index: int) -> None:
    answer = httpx.post(refusing.url + "/v1/chat/completions", timeout=300, json={
        "model": f"refused-{index}", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 424, answer.text
    message = answer.json()["error"]["message"]
    assert "vLLM" in message and list(REFUSED.values())[index] in message.lower(), message


def test_worker_killed_mid_stream_ends_the_stream_and_the_next_request_works(
        served: tuple[RunningServer, Path], client: openai.OpenAI) -> None:
    url = served[0].url
    pid = httpx.get(f"{url}/v1/models/{MODEL}").json()["worker_pid"]
    engine = psutil.Process(pid).children(recursive=True)  # vLLM's engine core and its workers
    assert engine
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to a hundred."}],
                                            temperature=0, max_tokens=400, stream=True)
    received = 0
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received += 1
            if received == 3:
                os.kill(pid, signal.SIGKILL)
    assert 3 <= received < 400
    assert ask(client, MODEL, "Name three colours.")
    assert httpx.get(f"{url}/v1/models/{MODEL}").json()["worker_pid"] != pid
    _, alive = psutil.wait_procs(engine, timeout=10)
    assert not alive, "vLLM's processes outlived their killed worker"


def test_unload_ends_the_worker_and_vllms_processes(served: tuple[RunningServer, Path], client: openai.OpenAI) -> None:
    """The last test: loading again after a worker went is the kill test's last step."""
    url = served[0].url
    assert ask(client, MODEL, "Name three colours.")
    worker = psutil.Process(httpx.get(f"{url}/v1/models/{MODEL}").json()["worker_pid"])
    engine = worker.children(recursive=True)
    httpx.post(f"{url}/v1/models/{MODEL}/unload", timeout=120).raise_for_status()
    assert httpx.get(f"{url}/v1/models/{MODEL}").json()["worker_pid"] in (None, 0)
    _, alive = psutil.wait_procs([worker, *engine], timeout=10)
    assert not alive
