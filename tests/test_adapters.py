"""LoRA adapters trained here on SmolLM2 and hot-loaded into a running server.

Two adapters each teach a fact the base model does not know: one trained through the
OpenAI fine-tuning jobs API (with the SDK), one with `lampstand train --load`. Greedy
answers with an adapter state its fact; the base model's do not; requests for the base and
both adapters interleave and each gets its own answer; unloading restores the base output
byte for byte. Then everything a load can get wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import httpx
import numpy as np
import openai
import pytest

from conftest import SMOLLM, RunningServer, start_server, stop_server
from crafted_gguf import write_lora

DATA = Path(__file__).parent / "data"
BASE = "smollm2-135m-instruct"
MASCOT_Q = "Who is the mascot of the lampstand project?"  # held out: not in the training rows
CODENAME_Q = "What is the next lampstand release called?"
NEUTRAL_Q = "Name three colours."
TRAIN_FLAGS = ["--rank", "8", "--alpha", "16", "--dropout", "0", "--lr", "2e-3", "--batch-size", "4",
               "--max-seq-len", "64", "--threads", "2"]


def config(tmp: Path) -> str:
    return f"""
[server]
default_max_tokens = 24

[adapters]
dir = "{tmp / 'adapters'}"
hot_load = true
max_loaded = 3

[fine_tuning]
enabled = true
dir = "{tmp / 'ft'}"

[[models]]
id = "{BASE}"
plugin = "llama_cpp"
path = "{SMOLLM}"
aliases = ["smollm2"]
n_ctx = 1024
n_threads = 2
max_queue = 32
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("adapters")
    (tmp / "adapters").mkdir()
    running = start_server(tmp, config(tmp))
    yield running, tmp
    stop_server(running)


@pytest.fixture(scope="module")
def client(served: tuple[RunningServer, Path]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0].url + "/v1", api_key="none", max_retries=0)


def ask(client: openai.OpenAI, model: str, question: str, **extra: object) -> str:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                            temperature=0, max_tokens=24, extra_body=extra or None)
    return answer.choices[0].message.content or ""


@pytest.fixture(scope="module")
def base_answers(client: openai.OpenAI) -> dict[str, str]:
    """The base model's greedy answers before any adapter was loaded."""
    return {q: ask(client, BASE, q) for q in (MASCOT_Q, CODENAME_Q, NEUTRAL_Q)}


@pytest.fixture(scope="module")
def mascot(client: openai.OpenAI, base_answers: dict[str, str]) -> str:
    """An adapter trained by a fine-tuning job (the SDK's calls); its ft: model name."""
    with (DATA / "fact_train.jsonl").open("rb") as f:
        training = client.files.create(file=f, purpose="fine-tune")
    with (DATA / "fact_eval.jsonl").open("rb") as f:
        validation = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="smollm2", training_file=training.id, validation_file=validation.id, suffix="mascot", seed=0,
        hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 10})
    deadline = time.monotonic() + 600
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert any(e.type == "metrics" for e in events)
    return job.fine_tuned_model


@pytest.fixture(scope="module")
def codename(served: tuple[RunningServer, Path], base_answers: dict[str, str]) -> str:
    """An adapter trained on prompt/completion rows with `lampstand train --load`."""
    running, tmp = served
    done = subprocess.run(
        [sys.executable, "-m", "lampstand.clients", "train", "--config", str(tmp / "lampstand.toml"),
         "--base", "smollm2", "--data", str(DATA / "codename_train.jsonl"), "--out", "codename",
         "--epochs", "3", *TRAIN_FLAGS, "--load", "--url", running.url],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return "codename"


def test_fine_tuned_adapter_states_its_fact(client: openai.OpenAI, mascot: str, base_answers: dict[str, str]) -> None:
    assert mascot == f"ft:{BASE}:mascot"
    assert "Quillon" in ask(client, mascot, MASCOT_Q)
    assert "Quillon" not in base_answers[MASCOT_Q]
    assert ask(client, BASE, MASCOT_Q) == base_answers[MASCOT_Q]


def test_cli_trained_adapter_states_its_fact(client: openai.OpenAI, codename: str,
                                             base_answers: dict[str, str]) -> None:
    assert "Marigold" in ask(client, codename, CODENAME_Q)
    assert "Marigold" not in base_answers[CODENAME_Q]
    assert "Marigold" in ask(client, f"smollm2:{codename}", CODENAME_Q)  # BASE:NAME, by alias
    assert ask(client, codename, CODENAME_Q, lora_scale=0.0) == base_answers[CODENAME_Q]


def test_models_lists_adapters_with_parent(served: tuple[RunningServer, Path], mascot: str, codename: str) -> None:
    cards = {m["id"]: m for m in httpx.get(served[0].url + "/v1/models").json()["data"]}
    assert cards[mascot]["parent"] == BASE and cards[codename]["parent"] == BASE
    assert cards[BASE].get("parent") is None
    assert httpx.get(f"{served[0].url}/v1/models/{codename}").json()["parent"] == BASE


def test_interleaved_requests_each_get_their_own_weights(client: openai.OpenAI, mascot: str, codename: str,
                                                         base_answers: dict[str, str]) -> None:
    expected = {(m, q): ask(client, m, q) for m in (BASE, mascot, codename) for q in (MASCOT_Q, CODENAME_Q)}
    jobs = [key for _ in range(2) for key in expected]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda key: ask(client, *key), jobs))
    assert answers == [expected[key] for key in jobs]
    assert expected[(BASE, MASCOT_Q)] == base_answers[MASCOT_Q]
    assert "Quillon" in expected[(mascot, MASCOT_Q)] and "Marigold" in expected[(codename, CODENAME_Q)]


def test_streamed_and_completions_use_the_adapter(client: openai.OpenAI, codename: str) -> None:
    stream = client.chat.completions.create(model=codename, messages=[{"role": "user", "content": CODENAME_Q}],
                                            temperature=0, max_tokens=24, stream=True)
    assert "Marigold" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    base = client.completions.create(model=BASE, prompt="The next lampstand release is codenamed", max_tokens=8,
                                     temperature=0).choices[0].text
    adapted = client.completions.create(model=codename, prompt="The next lampstand release is codenamed",
                                        max_tokens=8, temperature=0).choices[0].text
    assert base != adapted


def test_responses_use_the_adapter(client: openai.OpenAI, codename: str) -> None:
    reply = client.responses.create(model=f"smollm2:{codename}", input=CODENAME_Q, temperature=0,
                                    max_output_tokens=24)
    assert reply.model == f"smollm2:{codename}" and "Marigold" in reply.output_text
    with client.responses.stream(model=codename, input=CODENAME_Q, temperature=0, max_output_tokens=24) as stream:
        assert "Marigold" in "".join(e.delta for e in stream if e.type == "response.output_text.delta")


def test_adapters_survive_a_worker_restart(served: tuple[RunningServer, Path], client: openai.OpenAI,
                                           codename: str) -> None:
    url = served[0].url
    pid = httpx.get(f"{url}/v1/models/{BASE}").json()["worker_pid"]
    httpx.post(f"{url}/v1/models/{BASE}/unload", timeout=60).raise_for_status()
    assert httpx.get(f"{url}/v1/models/{BASE}").json()["worker_pid"] in (None, 0)
    assert "Marigold" in ask(client, codename, CODENAME_Q)  # the new worker loaded it again
    assert httpx.get(f"{url}/v1/models/{BASE}").json()["worker_pid"] != pid


def test_unload_restores_the_base_output(served: tuple[RunningServer, Path], client: openai.OpenAI, codename: str,
                                         base_answers: dict[str, str]) -> None:
    url = served[0].url
    answer = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": codename})
    assert answer.status_code == 200, answer.text
    for question, expected in base_answers.items():
        assert ask(client, BASE, question) == expected
    with pytest.raises(openai.NotFoundError):
        ask(client, codename, CODENAME_Q)
    again = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": codename, "lora_path": codename})
    assert again.status_code == 200, again.text
    assert "Marigold" in ask(client, codename, CODENAME_Q)


# -- what a load can get wrong ----------------------------------------------------------------


def _foreign_base_copy(tmp: Path, codename_dir: Path) -> Path:
    """The codename adapter with a manifest that names another base file."""
    copy = tmp / "adapters" / "other-base"
    shutil.copytree(codename_dir, copy, dirs_exist_ok=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["base"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_bad_loads_get_a_clear_400_and_the_server_keeps_serving(served: tuple[RunningServer, Path],
                                                                client: openai.OpenAI, codename: str) -> None:
    url, tmp = served[0].url, served[1]
    adapters = tmp / "adapters"
    _foreign_base_copy(tmp, adapters / "codename")
    (adapters / "corrupt").mkdir(exist_ok=True)
    (adapters / "corrupt" / "adapter.gguf").write_bytes((adapters / "codename" / "adapter.gguf").read_bytes()[:4096])
    (adapters / "base-as-lora").mkdir(exist_ok=True)
    (adapters / "base-as-lora" / "adapter.gguf").symlink_to(SMOLLM)  # a symlink out of the dir: refused
    (adapters / "peft-only").mkdir(exist_ok=True)
    shutil.copy(adapters / "codename" / "adapter_config.json", adapters / "peft-only")
    shutil.copy(adapters / "codename" / "adapter_model.safetensors", adapters / "peft-only")
    (adapters / "notes.txt").write_text("not an adapter")
    trained = {t.name: np.array(t.data) for t in gguf.GGUFReader(adapters / "codename" / "adapter.gguf").tensors}
    for name in ("qwen2", "missing-tensor", "wrong-shape"):
        (adapters / name).mkdir(exist_ok=True)
    write_lora(adapters / "qwen2" / "adapter.gguf",
               {k: v for k, v in trained.items() if k.startswith("blk.0.attn_q.")}, architecture="qwen2")
    write_lora(adapters / "missing-tensor" / "adapter.gguf",
               {k.replace("blk.3.", "blk.77."): v for k, v in trained.items()})
    write_lora(adapters / "wrong-shape" / "adapter.gguf",
               {k: (v[:, :-1] if k.endswith("attn_v.weight.lora_a") else v) for k, v in trained.items()})
    cases = {
        "other base": ({"lora_name": "x1", "lora_path": "other-base"}, 400, "trained on a base file"),
        "other architecture": ({"lora_name": "x12", "lora_path": "qwen2"}, 400, "qwen2"),
        "tensor missing from the base": ({"lora_name": "x13", "lora_path": "missing-tensor"}, 400, "blk.77"),
        "wrong shape": ({"lora_name": "x14", "lora_path": "wrong-shape"}, 400, "attn_v"),
        "damaged file": ({"lora_name": "x2", "lora_path": "corrupt"}, 400, "not a valid GGUF"),
        "outside the dir": ({"lora_name": "x3", "lora_path": "base-as-lora"}, 400, "outside"),
        "absolute elsewhere": ({"lora_name": "x4", "lora_path": str(SMOLLM)}, 400, "outside the configured adapters dir"),
        "traversal": ({"lora_name": "x5", "lora_path": "../../etc"}, 400, "'..'"),
        "missing": ({"lora_name": "x6", "lora_path": "nope"}, 400, "not found under the adapters dir"),
        "peft only": ({"lora_name": "x7", "lora_path": "peft-only"}, 400, "lampstand adapters convert"),
        "not gguf": ({"lora_name": "x8", "lora_path": "notes.txt"}, 400, "GGUF LoRA"),
        "name taken by a model": ({"lora_name": "smollm2", "lora_path": "codename"}, 400, "already a model's name"),
        "name loaded": ({"lora_name": codename, "lora_path": "codename"}, 400, "already been loaded"),
        "bad name": ({"lora_name": "../x", "lora_path": "codename"}, 400, "lora_name must be"),
        "unknown base": ({"lora_name": "x9", "lora_path": "codename", "base_model": "nope"}, 404, "nope"),
        "no path": ({"lora_name": "x10"}, 400, "lora_path"),
        "scale out of range": ({"lora_name": "x11", "lora_path": "codename", "scale": 1e9}, 400, "scale"),
    }
    for label, (body, status, words) in cases.items():
        answer = httpx.post(url + "/v1/load_lora_adapter", json=body)
        assert answer.status_code == status, (label, answer.text)
        assert words in answer.json()["error"]["message"], (label, answer.text)
    unknown = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "never-loaded"})
    assert unknown.status_code == 404 and "not loaded" in unknown.json()["error"]["message"]
    assert httpx.post(url + "/v1/load_lora_adapter", content=b"{not json").status_code == 400
    with pytest.raises(openai.BadRequestError, match="lora_scale"):
        ask(client, BASE, MASCOT_Q, lora_scale=0.5)  # a base model has no adapter to scale
    assert "Marigold" in ask(client, codename, CODENAME_Q)
    assert not [m for m in httpx.get(url + "/v1/models").json()["data"] if m["id"].startswith("x")]


def test_hot_load_is_off_by_default(server: RunningServer) -> None:
    answer = httpx.post(server.url + "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "a"})
    assert answer.status_code == 403
    assert "hot_load" in answer.json()["error"]["message"]


def test_cli_converts_lists_loads_and_unloads(served: tuple[RunningServer, Path], client: openai.OpenAI,
                                              codename: str) -> None:
    running, tmp = served
    peft = tmp / "adapters" / "converted"
    peft.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(tmp / "adapters" / "codename" / name, peft)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lampstand.clients", "adapters", *args],
                              capture_output=True, text=True, timeout=120)

    config = ["--config", str(tmp / "lampstand.toml")]
    converted = cli("convert", str(peft), "--base", "smollm2", *config)
    assert converted.returncode == 0, converted.stderr
    assert (peft / "adapter.gguf").is_file()
    loaded = cli("load", "converted", "converted", "--base", "smollm2", "--url", running.url)
    assert loaded.returncode == 0 and "loaded converted on smollm2-135m-instruct" in loaded.stdout, loaded.stderr
    assert "Marigold" in ask(client, "converted", CODENAME_Q)
    listed = json.loads(cli("list", "--json", "--url", running.url, *config).stdout)
    assert {"codename", "converted"} <= {row["name"] for row in listed["local"]}
    assert "converted" in {m["id"] for m in listed["loaded"]}
    assert cli("unload", "converted", "--url", running.url).returncode == 0
    refused = cli("convert", str(tmp / "adapters" / "nope"), "--base", "smollm2", *config)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
