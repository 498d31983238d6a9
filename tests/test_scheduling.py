"""Scheduling and overload: bounded queues (429), disconnects free the model, timeouts, SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from conftest import SMOLLM, RunningServer, start_server, stop_server

NO_EOS = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens, banned: generation runs to max_tokens
MAX_QUEUE = 2


def model(model_id: str, extra: str = "") -> str:
    return f'[[models]]\nid = "{model_id}"\nplugin = "llama_cpp"\npath = "{SMOLLM}"\nn_ctx = 1024\nn_threads = 1\nparallel = 1\n{extra}\n'


def long_body(model_id: str, max_tokens: int = 900, **fields: object) -> dict:  # type: ignore[type-arg]
    return {"model": model_id, "messages": [{"role": "user", "content": "Count."}], "max_tokens": max_tokens,
            "logit_bias": NO_EOS} | fields


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = (f"[server]\nmax_queue = {MAX_QUEUE}\n\n" + model("busy", "preload = true")
              + model("slow", "request_timeout = 4"))
    running = start_server(tmp_path_factory.mktemp("scheduling"), config)
    yield running
    stop_server(running)


def card(server: RunningServer, model_id: str = "busy") -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{server.url}/v1/models/{model_id}", timeout=10).json()


def wait_for(check, seconds: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def worker_cpu(pid: int, seconds: float = 1.0) -> float:
    process = psutil.Process(pid)
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    return sum(process.cpu_times()[:2]) - before


def test_burst_over_the_queue_gets_exactly_the_overflow_as_429(server: RunningServer) -> None:
    burst = 12

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            blocker = asyncio.create_task(client.post("/v1/chat/completions", json=long_body("busy", 120)))
            assert await asyncio.to_thread(wait_for, lambda: card(server)["running"] == 1, 30)
            short = {"model": "busy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=short) for _ in range(burst)))
            return [await blocker, *answers]

    rss_before = psutil.Process(server.process.pid).memory_info().rss
    answers = asyncio.run(run())
    statuses = [a.status_code for a in answers[1:]]
    assert answers[0].status_code == 200
    assert statuses.count(429) == burst - MAX_QUEUE and statuses.count(200) == MAX_QUEUE
    refused = next(a for a in answers[1:] if a.status_code == 429)
    assert refused.json()["error"]["code"] == "queue_full" and refused.headers["retry-after"] == "1"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'lampstand:num_requests_rejected_total{{model_name="busy",reason="queue_full"}} {burst - MAX_QUEUE}.0' in metrics
    assert psutil.Process(server.process.pid).memory_info().rss - rss_before < 30 * 1024**2


def responses_body(model_id: str, max_tokens: int = 900, **fields: object) -> dict:  # type: ignore[type-arg]
    """`long_body` for /v1/responses."""
    return {"model": model_id, "input": "Count.", "max_output_tokens": max_tokens, "logit_bias": NO_EOS} | fields


ROUTES = {"/v1/chat/completions": long_body, "/v1/responses": responses_body}


def test_a_full_queue_refuses_responses_too(server: RunningServer) -> None:
    """/v1/responses is admitted by the chat path: beyond the queue, a 429 with Retry-After."""
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            blocker = asyncio.create_task(client.post("/v1/chat/completions", json=long_body("busy", 120)))
            assert await asyncio.to_thread(wait_for, lambda: card(server)["running"] == 1, 30)
            short = {"model": "busy", "input": "hi", "max_output_tokens": 2, "store": False}
            answers = await asyncio.gather(*(client.post("/v1/responses", json=short) for _ in range(MAX_QUEUE + 3)))
            await blocker
            return list(answers)

    answers = asyncio.run(run())
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == MAX_QUEUE and statuses.count(429) == 3, statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "queue_full" and refused.headers["retry-after"] == "1"


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_cancels_the_generation(server: RunningServer, stream: bool, path: str) -> None:
    body = ROUTES[path]("busy", stream=stream)
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10, read=1.5)) as client:
        if stream:
            with client.stream("POST", path, json=body) as response:
                lines = response.iter_lines()
                for _ in range(3):
                    next(lines)
            # leaving the block closes the connection mid-stream
        else:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
                client.post(path, json=body)
    assert wait_for(lambda: card(server)["running"] == 0, 10)
    pid = card(server)["worker_pid"]
    assert wait_for(lambda: worker_cpu(pid, 0.5) < 0.05, 15)  # the decode loop has stopped
    quick = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                       json={"model": "busy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert quick.status_code == 200


def test_request_timeout(server: RunningServer) -> None:
    httpx.post(f"{server.url}/v1/models/slow/load", timeout=120)  # loading counts against the timeout too
    slow = long_body("slow", 900)  # several seconds on one thread: past this model's request_timeout = 4 s
    response = httpx.post(f"{server.url}/v1/chat/completions", json=slow, timeout=120)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "request_timeout"
    assert wait_for(lambda: card(server, "slow")["running"] == 0, 10)
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=slow | {"stream": True}, timeout=120) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        status = r.status_code
    if status == 200:  # timed out mid-stream: an error event, then [DONE]
        assert '"request_timeout"' in events[-2] and events[-1] == "[DONE]"
    else:  # timed out before the first token (a slow machine): a plain 504
        assert status == 504
    pid = card(server, "slow")["worker_pid"]
    assert wait_for(lambda: worker_cpu(pid, 0.5) < 0.05, 15)


def test_metrics_report_latency_and_tokens(server: RunningServer) -> None:
    short = {"model": "busy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert httpx.post(f"{server.url}/v1/chat/completions", json=short, timeout=60).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("lampstand:time_to_first_token_seconds_count", "lampstand:inter_token_latency_seconds_count",
                 "lampstand:e2e_request_latency_seconds_count", "lampstand:prompt_tokens_total",
                 "lampstand:generation_tokens_total", "lampstand:model_load_seconds_count",
                 "lampstand:num_requests_running", "lampstand:num_requests_waiting"):
        assert f'{name}{{model_name="busy"}}' in text, name


def test_sigterm_drains_then_exits_zero(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = ("[server]\nshutdown_timeout = 4\n\n" + model("long", "preload = true")
              + model("short", "preload = true"))
    server = start_server(tmp_path_factory.mktemp("drain"), config)
    try:
        assert wait_for(lambda: all(card(server, m)["status"] == "loaded" for m in ("long", "short")), 60)
        workers = [card(server, m)["worker_pid"] for m in ("long", "short")]

        async def run() -> tuple[list[str], list[str], httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                async def events(body: dict) -> list[str]:  # type: ignore[type-arg]
                    out = []
                    async with client.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as r:
                        async for line in r.aiter_lines():
                            if line.startswith("data: "):
                                out.append(line[6:])
                    return out

                long_run = asyncio.create_task(events(long_body("long", 900)))
                short_run = asyncio.create_task(events(long_body("short", 60)))
                assert await asyncio.to_thread(wait_for, lambda: all(
                    card(server, m)["running"] == 1 for m in ("long", "short")), 30)
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                refused = await client.post("/v1/chat/completions", json=long_body("short", 2))
                return await long_run, await short_run, refused

        long_events, short_events, refused = asyncio.run(run())
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
        assert '"finish_reason":"length"' in short_events[-2] or '"finish_reason":"length"' in short_events[-3]
        assert '"shutting_down"' in long_events[-2] and long_events[-1] == "[DONE]"
        assert server.process.wait(timeout=30) == 0
        assert wait_for(lambda: not any(psutil.pid_exists(pid) for pid in workers), 10)
    finally:
        if server.process.poll() is None:
            stop_server(server)
    assert "draining" in server.log.read_text()


def test_non_loopback_bind_needs_an_api_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    import sys

    done = subprocess.run([sys.executable, "-m", "lampstand.clients", "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "without an API key" in done.stderr
