"""Residency: worker processes, the memory budget, eviction, keep-alive, pinning, admin load/unload.

One server with a CPU budget that holds one small model at a time. Every check reads the
server's own answers (`/v1/models`, `/metrics`) and the operating system's (process ids, RSS).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from conftest import SMOLLM, RunningServer, start_server, stop_server

BUDGET = 350 * 1024**2
NO_EOS = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens, banned: generation runs to max_tokens


def config() -> str:
    common = f'plugin = "llama_cpp"\npath = "{SMOLLM}"\nn_threads = 1\nparallel = 1\n'
    return f"""
[server]
default_max_tokens = 16
request_timeout = 60

[memory]
cpu = {BUDGET}
keep_alive = "10m"

[[models]]
id = "chat-a"
{common}n_ctx = 512

[[models]]
id = "chat-b"
{common}n_ctx = 512

[[models]]
id = "pinned"
{common}n_ctx = 512
pinned = true

[[models]]
id = "too-big"
{common}n_ctx = 8192
n_batch = 2048
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("residency"), config())
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as session:
        yield session


def cards(http: httpx.Client) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["id"]: c for c in http.get("/v1/models").json()["data"]}


def ask(http: httpx.Client, model: str, **fields: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4} | fields
    return http.post("/v1/chat/completions", json=body)


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            inside = series[len(name):].strip("{}")
            if ",".join(sorted(inside.split(","))) == want or (not labels and not inside):
                return float(value)
    return 0.0


def tree_rss(pid: int) -> int:
    """RSS of the server process and every worker it started."""
    parent = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def unload_all(http: httpx.Client) -> None:
    for model_id, card in cards(http).items():
        if card["status"] == "loaded":
            assert http.post(f"/v1/models/{model_id}/unload").status_code == 200


def test_models_start_unloaded_with_an_estimate_after_first_load(http: httpx.Client) -> None:
    assert {c["status"] for c in cards(http).values()} == {"unloaded"}
    assert ask(http, "chat-a").status_code == 200
    card = cards(http)["chat-a"]
    assert card["status"] == "loaded" and card["device"] == "cpu"
    assert card["footprint"]["estimated"]["ram"] > 50 * 1024**2
    assert card["footprint"]["measured"]["ram"] > 0
    assert psutil.pid_exists(card["worker_pid"]) and card["worker_pid"] != os.getpid()
    assert card["expires_at"] - time.time() > 9 * 60  # keep_alive = 10m


def test_alternating_two_models_evicts_and_reloads(http: httpx.Client) -> None:
    unload_all(http)
    assert ask(http, "chat-a").status_code == 200
    first_pid = cards(http)["chat-a"]["worker_pid"]
    evictions = metric(http, "lampstand:model_evictions_total", model_name="chat-a")
    assert ask(http, "chat-b").status_code == 200
    now = cards(http)
    assert now["chat-b"]["status"] == "loaded" and now["chat-a"]["status"] == "unloaded"
    assert metric(http, "lampstand:model_evictions_total", model_name="chat-a") == evictions + 1
    deadline = time.monotonic() + 10
    while psutil.pid_exists(first_pid) and time.monotonic() < deadline:  # the worker exits
        time.sleep(0.1)
    assert not psutil.pid_exists(first_pid)
    assert ask(http, "chat-a").status_code == 200  # and back
    now = cards(http)
    assert now["chat-a"]["status"] == "loaded" and now["chat-b"]["status"] == "unloaded"
    assert metric(http, "lampstand:model_loads_total", model_name="chat-a", outcome="loaded") >= 2
    assert metric(http, "lampstand:memory_used_bytes", device="cpu") > 0
    assert metric(http, "lampstand:memory_budget_bytes", device="cpu") == BUDGET


def test_memory_returns_after_unload(server: RunningServer, http: httpx.Client) -> None:
    unload_all(http)
    time.sleep(0.5)
    baseline = tree_rss(server.process.pid)
    assert ask(http, "chat-a").status_code == 200
    loaded = tree_rss(server.process.pid)
    assert loaded - baseline > 30 * 1024**2
    unload_all(http)
    time.sleep(0.5)
    assert tree_rss(server.process.pid) - baseline < 20 * 1024**2


def test_a_model_larger_than_the_budget_gets_503_naming_the_sizes(http: httpx.Client) -> None:
    response = ask(http, "too-big")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "memory_budget_exceeded"
    assert "cpu budget 350.0 MiB" in error["message"] and "needed" in error["message"]
    assert response.headers["retry-after"]
    assert ask(http, "chat-a").status_code == 200  # still serving


def test_pinned_model_is_never_evicted(http: httpx.Client) -> None:
    unload_all(http)
    assert http.post("/v1/models/pinned/load").json()["status"] == "loaded"
    response = ask(http, "chat-a")
    assert response.status_code == 503
    assert "pinned" in response.json()["error"]["message"]
    assert cards(http)["pinned"]["status"] == "loaded"
    assert http.post("/v1/models/pinned/unload").json()["status"] == "unloaded"
    assert ask(http, "chat-a").status_code == 200


def test_a_busy_model_is_not_evicted(http: httpx.Client, server: RunningServer) -> None:
    unload_all(http)
    body = {"model": "chat-a", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 400,
            "logit_bias": NO_EOS, "stream": True}
    with httpx.Client(base_url=server.url, timeout=120) as streamer:
        with streamer.stream("POST", "/v1/chat/completions", json=body) as stream:
            lines = stream.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            response = ask(http, "chat-b")
            assert response.status_code == 503
            assert "chat-a" in response.json()["error"]["message"] and "busy" in response.json()["error"]["message"]
            assert cards(http)["chat-a"]["status"] == "loaded"
    deadline = time.monotonic() + 10  # the worker stops within a decode step of hearing the client left
    while cards(http)["chat-a"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ask(http, "chat-b").status_code == 200  # once the stream is gone, chat-a can go


def test_keep_alive_zero_unloads_after_the_request(http: httpx.Client) -> None:
    unload_all(http)
    assert ask(http, "chat-a", keep_alive=0).status_code == 200
    deadline = time.monotonic() + 15
    while cards(http)["chat-a"]["status"] != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cards(http)["chat-a"]["status"] == "unloaded"
    assert metric(http, "lampstand:model_unloads_total", model_name="chat-a", reason="keep_alive") >= 1


def test_keep_alive_expiry_and_forever(http: httpx.Client) -> None:
    unload_all(http)
    assert ask(http, "chat-a", keep_alive="2s").status_code == 200
    assert cards(http)["chat-a"]["expires_at"] <= time.time() + 3
    deadline = time.monotonic() + 15
    while cards(http)["chat-a"]["status"] != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cards(http)["chat-a"]["status"] == "unloaded"
    assert ask(http, "chat-a", keep_alive=-1).status_code == 200
    card = cards(http)["chat-a"]
    assert card["status"] == "loaded" and card["expires_at"] is None


@pytest.mark.parametrize("keep_alive", ["soon", "nan", "NaN"])
def test_bad_keep_alive_is_400(http: httpx.Client, keep_alive: str) -> None:
    response = ask(http, "chat-a", keep_alive=keep_alive)
    assert response.status_code == 400 and response.json()["error"]["param"] == "keep_alive"
    assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize("raw", ['"inf"', "1e999", '"1e999"', "1e300"])
def test_infinite_keep_alive_means_forever_and_listings_still_work(http: httpx.Client, raw: str) -> None:
    body = '{"model": "chat-a", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2, "keep_alive": %s}'
    response = http.post("/v1/chat/completions", content=body % raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert cards(http)["chat-a"]["expires_at"] is None  # forever, as -1
    assert http.get("/v1/models/chat-a").status_code == 200


def test_admin_errors(http: httpx.Client) -> None:
    response = http.post("/v1/models/nope/load")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = http.post("/v1/models/nope/unload")
    assert response.status_code == 404


def test_killed_worker_mid_stream(http: httpx.Client, server: RunningServer) -> None:
    unload_all(http)
    assert http.post("/v1/chat/completions", headers={"x-request-id": "the-loader"},
                     json={"model": "chat-a", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 2}).status_code == 200
    pid = cards(http)["chat-a"]["worker_pid"]
    body = {"model": "chat-a", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 400,
            "logit_bias": NO_EOS, "stream": True}
    events = []
    with httpx.Client(base_url=server.url, timeout=60) as streamer:
        with streamer.stream("POST", "/v1/chat/completions", json=body,
                             headers={"x-request-id": "the-victim"}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        os.kill(pid, signal.SIGKILL)
    assert events[-1] == "[DONE]"
    assert '"worker_crashed"' in events[-2] and "SIGKILL" in events[-2]
    assert http.get("/health").status_code == 200
    card = cards(http)["chat-a"]
    assert card["status"] == "failed" and "SIGKILL" in card["error"]
    assert metric(http, "lampstand:worker_crashes_total", model_name="chat-a") >= 1
    died = [json.loads(line) for line in server.log.read_text().splitlines()
            if '"worker died"' in line and '"chat-a"' in line][-1]
    assert died["in_flight"] == ["the-victim"] and died.get("request_id") != "the-loader"
    assert ask(http, "chat-a").status_code == 200  # reloaded in a new worker
    card = cards(http)["chat-a"]
    assert card["status"] == "loaded" and card["worker_pid"] != pid and card["error"] is None


def test_killed_worker_without_a_request(http: httpx.Client) -> None:
    unload_all(http)
    assert ask(http, "chat-b").status_code == 200
    os.kill(cards(http)["chat-b"]["worker_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cards(http)["chat-b"]["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cards(http)["chat-b"]["status"] == "failed"
    assert ask(http, "chat-b").status_code == 200


def test_ps_load_unload_cli(server: RunningServer, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lampstand.clients", *args, "--url", server.url],
                              capture_output=True, text=True, timeout=120)

    done = cli("load", "chat-b")
    assert done.returncode == 0 and "chat-b: loaded" in done.stdout
    listed = cli("ps", "--json")
    assert {c["id"]: c["status"] for c in json.loads(listed.stdout)}["chat-b"] == "loaded"
    table = cli("ps")
    assert "chat-b" in table.stdout and "loaded" in table.stdout
    done = cli("unload", "chat-b")
    assert done.returncode == 0 and "chat-b: unloaded" in done.stdout
    missing = cli("load", "no-such-model")
    assert missing.returncode == 2 and "404" in missing.stderr
