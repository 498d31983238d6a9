"""OpenAI's files and fine-tuning jobs API, over HTTP with the official SDK, against a real server.

One server with `[fine_tuning] enabled` runs real `lampstand train` jobs on the bundled SmolLM2:
a short job that succeeds and whose `ft:` model then answers, a long one cancelled while it
trains, one whose trainer fails, and one whose server is killed under it (the next server
marks it failed, stops the orphaned trainer and serves the succeeded model again). Bad input
goes through one table of raw requests. The session's default server has the API off (403).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import MINILM, SMOLLM, start_server, stop_server

DATA = Path(__file__).parent / "data"
MAX_FILE_BYTES = 64 * 1024
BASE_ID = "smollm2-135m-instruct"
FINISHED = {"succeeded", "failed", "cancelled"}
SERVER_STOPPED = "the server stopped while this job was running"


def config(tmp: Path) -> str:
    return f"""
[server]
default_max_tokens = 16

[fine_tuning]
enabled = true
dir = "{tmp}/ft"
max_file_bytes = {MAX_FILE_BYTES}

[adapters]
dir = "{tmp}/adapters"

[[models]]
id = "{BASE_ID}"
plugin = "llama_cpp"
path = "{SMOLLM}"
aliases = ["smollm2"]
n_ctx = 1024
n_threads = 2

[[models]]
id = "minilm"
plugin = "sentence_transformers"
path = "{MINILM}"

[[models]]
id = "broken-base"
plugin = "llama_cpp"
path = "{tmp}/broken.gguf"
"""


class Live:
    """The enabled server of this module; `restart` keeps its folders."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 60)  # a header and nothing else
        self.server = start_server(tmp, config(tmp))

    @property
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.base_url, api_key="x", max_retries=0, timeout=120)

    def restart(self, kill: bool = False) -> None:
        if kill:
            self.server.process.send_signal(signal.SIGKILL)
            self.server.process.wait(timeout=20)
        else:
            stop_server(self.server)
        self.server = start_server(self.tmp, config(self.tmp))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    running = Live(tmp_path_factory.mktemp("fine_tuning"))
    yield running
    stop_server(running.server)


@pytest.fixture(scope="module")
def uploads(live: Live) -> dict[str, str]:
    """File ids: one, four and twenty good rows, a file with bad lines 2 and 3, a line nested 30,000
    deep, and 30,000 lines of junk."""
    rows = (DATA / "fact_train.jsonl").read_text().splitlines()
    bad = "\n".join([rows[0], "{not json", json.dumps({"messages": [{"role": "user", "content": "hi"}]})]) + "\n"
    files = {"one": rows[4] + "\n", "four": "\n".join(rows[:4]) + "\n", "all": "\n".join(rows) + "\n", "bad": bad,
             "deep": "[" * 30_000 + "]" * 30_000 + "\n", "junk": "x\n" * 30_000}
    return {name: live.client.files.create(file=(f"{name}.jsonl", text.encode()), purpose="fine-tune").id
            for name, text in files.items()}


def wait_for(check: Callable[[], Any], timeout: float = 600, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def finished(client: openai.OpenAI, job_id: str, timeout: float = 600) -> Any:
    return wait_for(lambda: (job := client.fine_tuning.jobs.retrieve(job_id)).status in FINISHED and job,
                    timeout, f"job {job_id} to finish")


def started(client: openai.OpenAI, job_id: str) -> None:
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job_id).status == "running", what=f"{job_id} to start")


def first_step(client: openai.OpenAI, job_id: str) -> None:
    wait_for(lambda: any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data),
             what=f"a training step of {job_id}")


# -- files ----------------------------------------------------------------------------------


def test_files_upload_list_read_and_delete(live: Live) -> None:
    client = live.client
    body = b'{"prompt": "a", "completion": "b"}\n'
    created = client.files.create(file=("../..\\etc/evil name.jsonl", body), purpose="fine-tune")
    assert created.id.startswith("file-") and created.object == "file" and created.purpose == "fine-tune"
    assert created.bytes == len(body) and created.filename == "evil name.jsonl" and created.status == "processed"
    stored = {p.name for p in (live.tmp / "ft" / "files").iterdir()}
    assert {created.id, f"{created.id}.json"} <= stored and not any("evil" in name for name in stored)

    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == body
    listed = client.files.list(purpose="fine-tune")
    assert listed.data[0].id == created.id  # newest first
    assert created.id not in [f.id for f in client.files.list(purpose="batch").data]
    assert [f.id for f in client.files.list(order="asc").data][-1] == created.id

    deleted = client.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True and deleted.object == "file"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert created.id not in {p.name for p in (live.tmp / "ft" / "files").iterdir()}


def test_file_listing_pages(live: Live, uploads: dict[str, str]) -> None:
    page = live.client.files.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    assert {f.id for f in live.client.files.list(limit=1)} >= set(uploads.values())  # the SDK follows `after`


# -- bad input ------------------------------------------------------------------------------

JOB = {"model": "smollm2", "training_file": "{four}"}
ZERO_FILE, ZERO_JOB = "file-" + "0" * 24, "ftjob-" + "0" * 24
BAD_INPUT = [
    # (id, method, path, request keywords, status, text in the message)
    ("bad-purpose", "POST", "/v1/files", {"files": {"file": ("a.jsonl", b"{}")}, "data": {"purpose": "batch"}},
     400, "purpose 'batch' is not supported"),
    ("no-file-part", "POST", "/v1/files", {"files": {"x": ("a", b"")}, "data": {"purpose": "fine-tune"}}, 400,
     "no `file` part"),
    ("not-multipart", "POST", "/v1/files", {"json": {"purpose": "fine-tune"}}, 400, "multipart/form-data"),
    ("file-too-large", "POST", "/v1/files",
     {"files": {"file": ("a.jsonl", b"x" * (MAX_FILE_BYTES + 1))}, "data": {"purpose": "fine-tune"}}, 413,
     "max_file_bytes"),
    ("body-too-large", "POST", "/v1/files",
     {"files": {"file": ("a.jsonl", b"x" * (MAX_FILE_BYTES * 3))}, "data": {"purpose": "fine-tune"}}, 413, "limit"),
    ("unknown-file", "GET", f"/v1/files/{ZERO_FILE}", {}, 404, "No such File object"),
    ("unknown-file-content", "GET", f"/v1/files/{ZERO_FILE}/content", {}, 404, "No such File object"),
    ("unknown-file-delete", "DELETE", f"/v1/files/{ZERO_FILE}", {}, 404, "No such File object"),
    ("traversal-file", "GET", "/v1/files/..%2F..%2Fjobs", {}, 404, ""),
    ("dotted-file", "GET", "/v1/files/file-..", {}, 404, "No such File object"),
    ("traversal-file-content", "GET", "/v1/files/%2E%2E/content", {}, 404, ""),
    ("unknown-job", "GET", f"/v1/fine_tuning/jobs/{ZERO_JOB}", {}, 404, "No such fine-tuning job"),
    ("unknown-job-cancel", "POST", f"/v1/fine_tuning/jobs/{ZERO_JOB}/cancel", {}, 404, "No such fine-tuning job"),
    ("traversal-job-events", "GET", "/v1/fine_tuning/jobs/ftjob-..%2F..%2Ffiles/events", {}, 404, ""),
    ("unknown-after", "GET", f"/v1/fine_tuning/jobs?after={ZERO_JOB}", {}, 404, "to list after"),
    ("bad-limit", "GET", "/v1/fine_tuning/jobs?limit=0", {}, 400, "limit"),
    ("bad-jsonl", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "training_file": "{bad}"}}, 400,
     "2 bad lines: line 2: not valid JSON"),
    ("bad-validation-jsonl", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "validation_file": "{bad}"}}, 400,
     "line 3: no assistant message"),
    ("deep-jsonl", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "training_file": "{deep}"}}, 400,
     "1 bad line: line 1: nested too deeply"),
    ("junk-jsonl", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "training_file": "{junk}"}}, 400,
     "1000+ bad lines: line 1: not valid JSON"),
    ("unknown-training-file", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "training_file": ZERO_FILE}}, 400,
     "invalid training_file"),
    ("traversal-training-file", "POST", "/v1/fine_tuning/jobs",
     {"json": {**JOB, "training_file": "../files/{four}"}}, 400, "invalid training_file"),
    ("unknown-model", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "model": "gpt-4o-mini"}}, 404,
     "does not exist"),
    ("model-without-adapters", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "model": "minilm"}}, 400,
     "does not take LoRA adapters"),
    ("dpo", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "method": {"type": "dpo", "dpo": {}}}}, 400,
     "method.type"),
    ("long-suffix", "POST", "/v1/fine_tuning/jobs", {"json": {**JOB, "suffix": "s" * 65}}, 400, "suffix"),
    ("bad-epochs", "POST", "/v1/fine_tuning/jobs",
     {"json": {**JOB, "hyperparameters": {"n_epochs": 0}}}, 400, "n_epochs"),
    ("integrations", "POST", "/v1/fine_tuning/jobs",
     {"json": {**JOB, "integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}}, 400, "integrations"),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value.format(**ids) if isinstance(value, str) else value


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "text"), [case[1:] for case in BAD_INPUT],
                         ids=[case[0] for case in BAD_INPUT])
def test_bad_input_gets_the_envelope(live: Live, uploads: dict[str, str], method: str, path: str,
                                     kwargs: dict[str, Any], status: int, text: str) -> None:
    jobs_before = len(list((live.tmp / "ft" / "jobs").iterdir()))
    response = httpx.request(method, live.server.url + path, timeout=30, **_fill(kwargs, uploads))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and text in error["message"], error
    assert len(list((live.tmp / "ft" / "jobs").iterdir())) == jobs_before  # no job left behind


def test_disabled_api_answers_403(client: openai.OpenAI) -> None:
    """Off, fine-tuning refuses its jobs and fine-tune uploads; /v1/files still serves vector stores' files."""
    for call in (client.fine_tuning.jobs.list,
                 lambda: client.files.create(file=("a.jsonl", b"{}"), purpose="fine-tune")):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            call()
        assert "enabled = true under [fine_tuning]" in caught.value.message
    assert all(f.purpose != "fine-tune" for f in client.files.list())


# -- jobs -----------------------------------------------------------------------------------


def test_a_failing_trainer_fails_the_job_with_its_error(live: Live, uploads: dict[str, str]) -> None:
    client = live.client
    job = client.fine_tuning.jobs.create(model="broken-base", training_file=uploads["four"])
    done = finished(client, job.id, timeout=120)
    assert done.status == "failed" and done.fine_tuned_model is None and done.finished_at is not None
    assert done.error is not None and done.error.code == "training_failed"
    assert "broken.gguf" in done.error.message and "Traceback" not in done.error.message, done.error
    events = client.fine_tuning.jobs.list_events(job.id).data
    assert events[0].level == "error" and done.error.message in events[0].message
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.cancel(job.id)
    assert "already failed" in caught.value.message


def test_a_job_trains_and_its_model_answers(live: Live, uploads: dict[str, str]) -> None:
    client = live.client
    job = client.fine_tuning.jobs.create(model="smollm2", training_file=uploads["four"],
                                         validation_file=uploads["one"], suffix="tiny fact!", seed=7,
                                         metadata={"team": "docs"},
                                         method={"type": "supervised", "supervised": {"hyperparameters": {
                                             "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 2}}})
    assert job.object == "fine_tuning.job" and job.status == "queued" and job.model == BASE_ID
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 4 and job.seed == 7
    assert job.method is not None and job.method.type == "supervised" and job.metadata == {"team": "docs"}
    assert job.fine_tuned_model is None and job.error is None and job.result_files == []

    done = finished(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:{BASE_ID}:tiny-fact" and done.finished_at >= done.created_at
    assert done.estimated_finish is None and (done.trained_tokens is None or done.trained_tokens > 0)

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=2))  # the SDK follows `after`
    assert [e.message for e in events][:2] == ["The job has successfully completed",
                                               f"New fine-tuned model created: {done.fine_tuned_model}"]
    assert events[-1].message == f"Created fine-tuning job: {job.id}"
    steps = [e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert steps and {"step", "train_loss"} <= set(steps[-1].data) and steps[-1].data["step"] == 1
    assert any("valid_loss" in (e.data or {}) for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == 1 and checkpoints[0].fine_tuning_job_id == job.id

    models = {m.id: m for m in client.models.list().data}
    assert models[done.fine_tuned_model].model_extra["parent"] == BASE_ID
    reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=12,
                                           messages=[{"role": "user", "content": "What is the lampstand mascot?"}])
    assert reply.choices[0].message.content
    assert client.fine_tuning.jobs.list(limit=1).data[0].id == job.id  # newest first


def test_cancel_a_queued_and_a_running_job(live: Live, uploads: dict[str, str]) -> None:
    client = live.client
    long = {"n_epochs": 50, "batch_size": 1}
    running = client.fine_tuning.jobs.create(model="smollm2", training_file=uploads["all"], hyperparameters=long)
    queued = client.fine_tuning.jobs.create(model="smollm2", training_file=uploads["all"], hyperparameters=long)
    first_step(client, running.id)
    assert client.fine_tuning.jobs.retrieve(queued.id).status == "queued"  # one job runs at a time

    cancelled = client.fine_tuning.jobs.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    stopped = client.fine_tuning.jobs.cancel(running.id)
    assert stopped.status == "cancelled" and stopped.fine_tuned_model is None and stopped.finished_at is not None
    # The trainer finishes its step, saves a checkpoint and exits.
    saved = wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(running.id).data, what="the checkpoint")
    assert saved[0].step_number >= 1 and saved[0].metrics.train_loss is not None
    events = [e.message for e in client.fine_tuning.jobs.list_events(running.id, limit=100)]
    assert "Fine-tuning job cancelled" in events and f"Checkpoint created at step {saved[0].step_number}" in events
    assert client.fine_tuning.jobs.retrieve(running.id).status == "cancelled"
    assert not any(m.id.startswith("ft:") and m.id != "ft:" + BASE_ID + ":tiny-fact" for m in client.models.list())


def test_a_killed_server_fails_its_running_job_and_serves_trained_models_again(
        live: Live, uploads: dict[str, str]) -> None:
    client = live.client
    job = client.fine_tuning.jobs.create(model="smollm2", training_file=uploads["all"],
                                         hyperparameters={"n_epochs": 50})
    started(client, job.id)
    record = json.loads((live.tmp / "ft" / "jobs" / job.id / "job.json").read_text())
    trainer = record["pid"]

    live.restart(kill=True)  # no shutdown: the record still says running, the trainer is orphaned
    client = live.client
    after = client.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "failed" and after.error is not None and after.error.message == SERVER_STOPPED
    wait_for(lambda: not _alive(trainer), timeout=30, what="the orphaned trainer to stop")

    trained = next(j for j in client.fine_tuning.jobs.list() if j.status == "succeeded")
    models = {m.id: m for m in client.models.list().data}
    assert models[trained.fine_tuned_model].model_extra["parent"] == BASE_ID
    reply = client.chat.completions.create(model=trained.fine_tuned_model, max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content is not None


def test_shutdown_fails_the_running_job(live: Live, uploads: dict[str, str]) -> None:
    client = live.client
    job = client.fine_tuning.jobs.create(model="smollm2", training_file=uploads["all"],
                                         hyperparameters={"n_epochs": 50})
    started(client, job.id)
    live.restart()
    after = live.client.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "failed" and after.error is not None and after.error.message == SERVER_STOPPED


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody has reaped yet)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_a_folder_base_changes_when_a_file_in_it_does(tmp_path: Path) -> None:
    """A Hugging Face folder (a vLLM base) is one base model: rewriting its weights changes its
    fingerprint, though the folder's own entry does not change."""
    from lampstand.server.fine_tuning import base_fingerprint

    folder = tmp_path / "base"
    (folder / "sub").mkdir(parents=True)
    weights = folder / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    (folder / "sub" / "config.json").write_text("{}")
    before = base_fingerprint(folder)
    weights.write_bytes(b"b" * 64)  # same size
    os.utime(weights, ns=(time.time_ns(), before[1] + 10**9))  # a later write (the clock's tick may be coarse)
    assert base_fingerprint(folder) != before and base_fingerprint(folder)[0] == before[0]
    assert base_fingerprint(weights) == (64, weights.stat().st_mtime_ns)
