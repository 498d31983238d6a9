"""Vector stores through the official openai SDK against the real server: uploads indexed with
the bundled MiniLM, searched, filtered on attributes, and hostile input refused."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import VectorStore, VectorStoreSearchResponse
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.vector_stores import VectorStoreFile, VectorStoreFileBatch
from pydantic import TypeAdapter

from conftest import CHAT_MODEL, RunningServer, default_config, sdk_client, start_server, stop_server
from crafted_pdf import make_pdf

NOTE = """# Sourdough starter care

Feed the starter once a day with equal weights of rye flour and water.
Keep it at room temperature; a sluggish starter wants a warmer spot.

## Baking day

Preheat the Dutch oven at 250 C for forty minutes before the loaf goes in.
"""
CODE = '''"""Helpers for the greenhouse controller."""


def vent_angle(temperature: float) -> float:
    """How far to open the roof vents, in degrees, for an inside temperature."""
    if temperature < 18:
        return 0.0
    return min(90.0, (temperature - 18) * 7.5)


class Sprinkler:
    """Waters one bed on a schedule."""

    def run(self, minutes: int) -> None:
        self.minutes = minutes
'''
GARDEN = """# Garden journal

Tomatoes went into the raised bed on the fifth of May.
Basil hates cold nights: cover it when the forecast drops below ten degrees.
"""


def upload(client: openai.OpenAI, name: str, text: str | bytes, purpose: str = "assistants") -> str:
    data = text.encode() if isinstance(text, str) else text
    return client.files.create(file=(name, io.BytesIO(data)), purpose=purpose).id  # type: ignore[arg-type]


def wait_for(client: openai.OpenAI, store_id: str) -> VectorStore:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        store = client.vector_stores.retrieve(store_id)
        if store.status != "in_progress":
            return store
        time.sleep(0.2)
    raise AssertionError(f"{store_id} still in progress")


@pytest.fixture(scope="module")
def garden(client: openai.OpenAI) -> dict[str, Any]:
    """A store with a Markdown note and a Python file, attached through the SDK's helper."""
    store = client.vector_stores.create(name="garden", metadata={"owner": "tests"})
    note = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("sourdough.md", io.BytesIO(NOTE.encode())), poll_interval_ms=200)
    code = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("greenhouse.py", io.BytesIO(CODE.encode())), poll_interval_ms=200)
    journal_id = upload(client, "journal.md", GARDEN)
    journal = client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=journal_id, attributes={"kind": "journal", "year": 2026},
        poll_interval_ms=200)
    return {"store": store, "note": note, "code": code, "journal": journal}


def test_uploaded_files_are_indexed_and_counted(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    for name in ("note", "code", "journal"):
        attached: VectorStoreFile = garden[name]
        assert attached.status == "completed" and attached.last_error is None, attached
        assert attached.vector_store_id == garden["store"].id and attached.usage_bytes > 0
    assert garden["journal"].attributes == {"kind": "journal", "year": 2026}
    store = client.vector_stores.retrieve(garden["store"].id)
    assert store.status == "completed" and store.name == "garden" and store.metadata == {"owner": "tests"}
    assert store.file_counts.completed == 3 and store.file_counts.total == 3
    assert store.usage_bytes == sum(garden[n].usage_bytes for n in ("note", "code", "journal"))
    listed = client.vector_stores.files.list(vector_store_id=store.id)
    assert {f.id for f in listed.data} == {garden[n].id for n in ("note", "code", "journal")}
    content = client.vector_stores.files.content(vector_store_id=store.id, file_id=garden["code"].id)
    assert "def vent_angle" in "".join(part.text or "" for part in content)


def test_search_finds_the_right_file(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    store_id = garden["store"].id
    page = client.vector_stores.search(vector_store_id=store_id, query="how much should the roof vents open")
    results: list[VectorStoreSearchResponse] = list(page)
    assert results and results[0].file_id == garden["code"].id and results[0].filename == "greenhouse.py"
    assert "vent_angle" in results[0].content[0].text and results[0].content[0].type == "text"
    assert 0 < results[-1].score <= results[0].score <= 1
    note = client.vector_stores.search(vector_store_id=store_id, query="what flour feeds a sourdough starter",
                                       max_num_results=1)
    [best] = list(note)
    assert best.file_id == garden["note"].id and "rye" in best.content[0].text


def test_attribute_filters_narrow_the_search(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    store_id, journal = garden["store"].id, garden["journal"].id
    query = "what to do when the forecast drops below ten degrees"
    only = client.vector_stores.search(vector_store_id=store_id, query=query,
                                       filters={"type": "eq", "key": "kind", "value": "journal"})
    assert {r.file_id for r in only} == {journal}
    assert all(r.attributes == {"kind": "journal", "year": 2026} for r in only)
    none = client.vector_stores.search(vector_store_id=store_id, query=query, filters={
        "type": "and", "filters": [{"type": "eq", "key": "kind", "value": "journal"},
                                   {"type": "gt", "key": "year", "value": 2026}]})
    assert list(none) == []
    others = client.vector_stores.search(vector_store_id=store_id, query=query,
                                         filters={"type": "ne", "key": "kind", "value": "journal"})
    assert journal not in {r.file_id for r in others} and list(others)
    high = list(client.vector_stores.search(vector_store_id=store_id, query=query,
                                            ranking_options={"score_threshold": 0.99}))
    assert high and all(r.score >= 0.99 for r in high)  # the journal is first in both rankings: 1.0


def test_attributes_change_without_reindexing(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    store_id, note = garden["store"].id, garden["note"].id
    updated = client.vector_stores.files.update(vector_store_id=store_id, file_id=note, attributes={"kind": "recipe"})
    assert updated.attributes == {"kind": "recipe"} and updated.status == "completed"
    found = client.vector_stores.search(vector_store_id=store_id, query="sourdough starter flour",
                                        filters={"type": "in", "key": "kind", "value": ["recipe", "x"]})
    assert {r.file_id for r in found} == {note}


def test_batch_attaches_and_a_detached_file_leaves_the_index(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="batch", expires_after={"anchor": "last_active_at", "days": 7})
    assert store.expires_after and store.expires_after.days == 7 and store.expires_at == store.last_active_at + 7 * 86400
    ids = [upload(client, "lighthouse.md", "# Lighthouse\n\nThe keeper trims the wick at dusk.\n"),
           upload(client, "binary.bin", b"\x00\x01\x02" * 100),
           upload(client, "mill.md", "# Windmill\n\nThe miller greases the millstones on Sundays.\n")]
    batch: VectorStoreFileBatch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=ids, attributes={"batch": True}, poll_interval_ms=200)
    assert batch.status == "completed" and batch.file_counts.total == 3
    assert batch.file_counts.completed == 2 and batch.file_counts.failed == 1
    failed = client.vector_stores.files.retrieve(vector_store_id=store.id, file_id=ids[1])
    assert failed.status == "failed" and failed.last_error and failed.last_error.code == "unsupported_file"
    assert "binary.bin" in failed.last_error.message
    in_batch = client.vector_stores.file_batches.list_files(vector_store_id=store.id, batch_id=batch.id,
                                                            filter="completed")
    assert {f.id for f in in_batch} == {ids[0], ids[2]}
    assert [r.file_id for r in client.vector_stores.search(vector_store_id=store.id, query="who trims the wick")][0] \
        == ids[0]
    deleted = client.vector_stores.files.delete(vector_store_id=store.id, file_id=ids[0])
    assert deleted.deleted and deleted.id == ids[0]
    wait_for(client, store.id)
    deadline = time.monotonic() + 60
    while ids[0] in {r.file_id for r in client.vector_stores.search(vector_store_id=store.id, query="wick keeper")}:
        assert time.monotonic() < deadline, "a detached file is still found"
        time.sleep(0.2)
    client.files.retrieve(ids[0])  # the upload itself stays
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_a_static_chunking_strategy_cuts_smaller_chunks(client: openai.OpenAI) -> None:
    """A store made with `static` chunk sizes cuts every file it holds to them, and says so."""
    lines = [f"Bed {n} holds {crop} sown in week {n + 10}, watered every {n % 4 + 1} days." for n, crop in
             enumerate(["carrots", "leeks", "beans", "peas", "kale", "chard", "onions", "garlic"] * 5)]
    text = "# Allotment plan\n\n" + "\n\n".join(lines) + "\n"
    static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}
    counts = {}
    for name, strategy in (("small", static), ("default", None)):
        store = client.vector_stores.create(name=name, **({"chunking_strategy": strategy} if strategy else {}))
        attached = client.vector_stores.files.upload_and_poll(
            vector_store_id=store.id, file=("allotment.md", io.BytesIO(text.encode())), poll_interval_ms=200)
        assert attached.status == "completed", attached.last_error
        assert attached.chunking_strategy.static.max_chunk_size_tokens == (100 if strategy else 224)  # type: ignore[union-attr]
        results = client.vector_stores.search(vector_store_id=store.id, query="which bed holds beans",
                                              max_num_results=50)
        counts[name] = len(results.data)
        if strategy:
            assert all(len(r.content[0].text.split()) <= 100 for r in results.data)
        client.vector_stores.delete(store.id)
    assert counts["small"] > counts["default"] >= 1, counts


def test_openai_default_static_sizes_are_taken(client: openai.OpenAI) -> None:
    """OpenAI's own static default: 800 tokens with 400 of overlap, exactly half."""
    store = client.vector_stores.create(name="wide", chunking_strategy={
        "type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}})
    note = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("n.md", io.BytesIO(NOTE.encode())),
                                                      poll_interval_ms=200)
    assert note.status == "completed" and note.chunking_strategy.static.chunk_overlap_tokens == 400  # type: ignore[union-attr]
    client.vector_stores.delete(store.id)


def test_an_uploaded_pdf_is_read_by_the_pdf_chunker(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="manuals")
    pdf = make_pdf([["Pump manual", "Prime the pump with two litres of water\nbefore the first start."],
                    ["Winter care", "Drain the impeller housing before the first frost."]])
    attached = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("pump.pdf", io.BytesIO(pdf)), poll_interval_ms=200)
    assert attached.status == "completed" and attached.last_error is None
    [hit] = list(client.vector_stores.search(vector_store_id=store.id, query="what to drain before frost",
                                             max_num_results=1))
    assert hit.filename == "pump.pdf" and "impeller housing" in hit.content[0].text
    client.vector_stores.delete(store.id)


def test_a_cancelled_batch_leaves_its_files_out_of_search(client: openai.OpenAI) -> None:
    """Files of a cancelled batch that were not indexed yet end `cancelled` and are never found."""
    store = client.vector_stores.create(name="cancelled")
    entries = "\n\n".join(f"Entry {i}: the quokka census counted {i * 7} animals near the ridge." for i in range(40))
    ids = [upload(client, f"census{n}.md", f"# Census {n}\n\n{entries}\n") for n in range(8)]
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
    cancelled = client.vector_stores.file_batches.cancel(batch_id=batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled" and cancelled.file_counts.cancelled >= 1, cancelled
    assert wait_for(client, store.id).status == "completed"  # the round that was running has ended
    final = client.vector_stores.file_batches.retrieve(batch_id=batch.id, vector_store_id=store.id)
    assert final.status == "cancelled" and final.file_counts.in_progress == 0
    gone = {f.id for f in client.vector_stores.files.list(vector_store_id=store.id, filter="cancelled")}
    assert len(gone) == final.file_counts.cancelled
    found = {r.file_id for r in client.vector_stores.search(vector_store_id=store.id, query="quokka census ridge",
                                                            max_num_results=50)}
    assert not found & gone
    client.vector_stores.delete(store.id)


def test_stores_list_modify_and_survive_a_restart_of_the_listing(client: openai.OpenAI,
                                                                 garden: dict[str, Any]) -> None:
    store_id = garden["store"].id
    renamed = client.vector_stores.update(store_id, name="garden notes", metadata={"owner": "tests", "v": "2"})
    assert renamed.name == "garden notes" and renamed.metadata == {"owner": "tests", "v": "2"}
    listed = [s.id for s in client.vector_stores.list()]
    assert store_id in listed
    assert client.vector_stores.retrieve(store_id).file_counts.completed == 3


def test_a_store_expires_its_days_after_its_last_use(client: openai.OpenAI, http: httpx.Client, server: Any) -> None:
    """`expires_after` counts from the last use. Two days are made to pass by moving the last use
    back in the store's record; the store is then `expired` and searching it is a 400, until a
    new expiry (here none) is set. A description is kept and can be changed."""
    store = client.vector_stores.create(name="short-lived", description="tide tables for the harbour",
                                        expires_after={"anchor": "last_active_at", "days": 1},
                                        file_ids=[upload(client, "journal.md", GARDEN)])
    store = wait_for(client, store.id)
    assert store.status == "completed" and store.expires_at == (store.last_active_at or 0) + 86400
    assert (store.model_extra or {})["description"] == "tide tables for the harbour"
    assert list(client.vector_stores.search(vector_store_id=store.id, query="when were the tomatoes planted"))
    records = sqlite3.connect(server.log.parent / "data" / "lampstand" / "vector_stores" / "vector_stores.sqlite3")
    with records:
        records.execute("UPDATE stores SET last_active_at = last_active_at - 2 * 86400 WHERE id = ?", (store.id,))
    records.close()
    expired = client.vector_stores.retrieve(store.id)
    assert expired.status == "expired" and (expired.expires_at or 0) < time.time()
    searched = http.post(f"/v1/vector_stores/{store.id}/search", json={"query": "tomatoes"})
    answered = http.post("/v1/responses", json={"model": CHAT_MODEL, "input": "When were the tomatoes planted?",
                                                "tools": [file_search(store.id)], "max_output_tokens": 4})
    for response in (searched, answered):
        assert response.status_code == 400 and "has expired" in response.json()["error"]["message"], response.text
    revived = client.vector_stores.update(store.id, expires_after=None, extra_body={"description": "tides"})
    assert revived.status == "completed" and revived.expires_at is None
    assert (revived.model_extra or {})["description"] == "tides"
    assert list(client.vector_stores.search(vector_store_id=store.id, query="when were the tomatoes planted"))
    client.vector_stores.delete(store.id)


def test_folder_indexes_are_read_only_stores(client: openai.OpenAI, http: httpx.Client, server: Any,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("folder-store")
    (folder / "kiln.md").write_text("# Kiln\n\nFire the glaze at cone six, then let it cool for a day.\n")
    home = server.log.parent  # the server's folder: its config, and its data under XDG_DATA_HOME
    done = subprocess.run([sys.executable, "-m", "lampstand.clients", "index", "add", "kilnnotes", str(folder),
                           "--local", "--config", str(home / "lampstand.toml")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "XDG_DATA_HOME": str(home / "data")})
    assert done.returncode == 0, done.stderr
    store = client.vector_stores.retrieve("kilnnotes")
    assert store.status == "completed" and store.file_counts.completed == 1
    assert store.model_extra and store.model_extra.get("read_only") is True
    assert "kilnnotes" in [s.id for s in client.vector_stores.list(limit=100)]
    [hit] = list(client.vector_stores.search(vector_store_id="kilnnotes", query="glaze firing cone",
                                             max_num_results=1))
    assert hit.file_id == "kiln.md" and hit.filename == "kiln.md" and hit.attributes["path"] == "kiln.md"
    refused = http.post("/v1/vector_stores/kilnnotes/files", json={"file_id": "file-000000000000000000000000"})
    assert refused.status_code == 400 and "read-only" in refused.json()["error"]["message"]
    reply = client.responses.create(model=CHAT_MODEL, input="At which cone is the glaze fired?", max_output_tokens=24,
                                    tools=[{"type": "file_search", "vector_store_ids": ["kilnnotes"]}],
                                    include=["file_search_call.results"], temperature=0)
    call = reply.output[0]
    assert call.type == "file_search_call" and call.results and call.results[0].file_id == "kiln.md"
    assert "cone six" in call.results[0].text


@pytest.mark.parametrize(("method", "path", "body", "status", "text"), [
    ("get", "/v1/vector_stores/vs_nope", None, 404, "No vector store"),
    ("post", "/v1/vector_stores/vs_nope/search", {"query": "x"}, 404, "No vector store"),
    ("post", "/v1/vector_stores", {"file_ids": ["file-0123456789abcdef01234567"]}, 404, "No such File"),
    ("post", "/v1/vector_stores", {"file_ids": ["../../etc/passwd"]}, 404, "No such File"),
    ("post", "/v1/vector_stores", {"chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 200, "chunk_overlap_tokens": 101}}}, 400, "not exceed half"),
    ("post", "/v1/vector_stores/{store}/files", {"file_id": "{file}", "chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}}, 400, "chunks all its files alike"),
    ("post", "/v1/vector_stores", {"expires_after": {"anchor": "created_at", "days": 1}}, 400, "anchor"),
    ("post", "/v1/vector_stores", {"metadata": {"k" * 65: "v"}}, 400, "metadata"),
    ("post", "/v1/vector_stores/{store}/search", {"query": ""}, 400, "query"),
    ("post", "/v1/vector_stores/{store}/search", {"query": "x", "max_num_results": 500}, 400, "max_num_results"),
    ("post", "/v1/vector_stores/{store}/search", {"query": "x", "filters": {"type": "in", "key": "a", "value": 1}},
     400, "list"),
    ("post", "/v1/vector_stores/{store}/search", {"query": "x", "filters": {"type": "regex", "key": "a",
                                                                            "value": "."}}, 400, "filters"),
    ("post", "/v1/vector_stores/{store}/search", {"query": "q" * 5000}, 400, "characters"),
    ("post", "/v1/vector_stores/{store}/files", {"file_id": "file-0123456789abcdef01234567"}, 404, "No such File"),
    ("get", "/v1/vector_stores/{store}/files/file-0123456789abcdef01234567", None, 404, "No file"),
    ("get", "/v1/vector_stores/{store}/file_batches/vsfb_nope", None, 404, "No file batch"),
    ("post", "/v1/vector_stores/{store}/file_batches", {"file_ids": [], "files": []}, 400, "file_ids or files"),
    ("post", "/v1/vector_stores/{store}/files", {"file_id": "{file}", "attributes": {str(i): i for i in range(17)}},
     400, "attributes"),
])
def test_bad_input_gets_the_error_envelope(http: httpx.Client, client: openai.OpenAI, garden: dict[str, Any],
                                           method: str, path: str, body: Any, status: int, text: str) -> None:
    path = path.format(store=garden["store"].id)
    if body is not None and body.get("file_id") == "{file}":
        body = body | {"file_id": garden["note"].id}
    response = http.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and text in error["message"] + str(error["param"]), error
    assert http.get("/health").status_code == 200


def test_uploads_for_vector_stores_need_no_fine_tuning(client: openai.OpenAI, http: httpx.Client) -> None:
    stored = client.files.create(file=("n.md", io.BytesIO(b"# N\n")), purpose="user_data")
    assert stored.purpose == "user_data" and stored.filename == "n.md"
    with pytest.raises(openai.PermissionDeniedError):
        client.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    refused = http.post("/v1/files", files={"file": ("x.md", b"x")}, data={"purpose": "batch"})
    assert refused.status_code == 400 and "purpose" in refused.json()["error"]["message"]


# -- file_search in /v1/responses ----------------------------------------------------------

SDK_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def file_search(store_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "file_search", "vector_store_ids": [store_id], **fields}


def test_file_search_answers_from_the_right_file_and_cites_it(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    reply = client.responses.create(
        model=CHAT_MODEL, input="How far should the roof vents open for the greenhouse temperature?",
        tools=[file_search(garden["store"].id, max_num_results=3)], include=["file_search_call.results"],
        max_output_tokens=48, temperature=0)
    Response.model_validate(reply.model_dump())
    call, message = reply.output[0], reply.output[-1]
    assert call.type == "file_search_call" and call.status == "completed" and call.id.startswith("fs_")
    assert call.queries == ["How far should the roof vents open for the greenhouse temperature?"]
    assert call.results and call.results[0].file_id == garden["code"].id and len(call.results) <= 3
    assert "vent_angle" in call.results[0].text and call.results[0].filename == "greenhouse.py"
    assert message.type == "message" and reply.output_text.strip()
    text, annotations = message.content[0].text, message.content[0].annotations
    quoted = {r.file_id for r in call.results}
    for note in annotations:  # every citation names a quoted file, right after its [n] marker
        assert note.type == "file_citation" and note.file_id in quoted and text[note.index - 1] == "]"
    cited = [int(n) for n in re.findall(r"\[(\d)\]", text) if 1 <= int(n) <= len(call.results)]
    assert [a.file_id for a in annotations] == [call.results[n - 1].file_id for n in cited]
    stored = client.responses.retrieve(reply.id)
    assert stored.output[0].type == "file_search_call" and stored.output[0].results == call.results


def test_file_search_cites_and_includes_results_only_when_asked(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    reply = client.responses.create(model=CHAT_MODEL, input="What flour feeds the sourdough starter?",
                                    tools=[file_search(garden["store"].id)], max_output_tokens=16, temperature=0)
    assert reply.output[0].type == "file_search_call" and reply.output[0].results is None
    # SmolLM2 cites [1] here (greedy); the citation names the note it quoted, at the marker's end
    annotations = reply.output[-1].content[0].annotations
    assert annotations and {(a.file_id, a.filename) for a in annotations} == {(garden["note"].id, "sourdough.md")}, \
        reply.output_text
    assert all(reply.output_text[a.index - 3:a.index] == "[1]" for a in annotations)
    follow_up = client.responses.create(model=CHAT_MODEL, input="And when should the oven be preheated?",
                                        previous_response_id=reply.id, tools=[file_search(garden["store"].id)],
                                        include=["file_search_call.results"], max_output_tokens=8, temperature=0)
    [search] = [item for item in follow_up.output if item.type == "file_search_call"]
    assert search.queries == ["And when should the oven be preheated?"]
    assert search.results and search.results[0].file_id == garden["note"].id


def test_file_search_tool_options_narrow_what_the_model_reads(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    """The tool's own `filters`, `ranking_options` and `max_num_results` reach the search, and
    `tool_choice: "required"` with only file_search is met by the search itself."""
    question, journal = "what to do when the forecast drops below ten degrees", garden["journal"].id

    def results(**tool: Any) -> list[Any]:
        reply = client.responses.create(model=CHAT_MODEL, input=question, tool_choice="required",
                                        tools=[file_search(garden["store"].id, **tool)],  # type: ignore[list-item]
                                        include=["file_search_call.results"], max_output_tokens=4, temperature=0)
        assert reply.status in ("completed", "incomplete") and reply.output[0].type == "file_search_call"
        return reply.output[0].results or []

    everything = results()
    assert len(everything) > 1 and everything[0].file_id == journal
    others = results(filters={"type": "ne", "key": "kind", "value": "journal"})
    assert others and journal not in {r.file_id for r in others}
    assert {r.file_id for r in results(filters={"type": "eq", "key": "kind", "value": "journal"})} == {journal}
    best = results(ranking_options={"score_threshold": 0.99})
    assert [r.file_id for r in best] == [journal] and best[0].score >= 0.99
    assert len(results(max_num_results=1)) == 1


def test_file_search_stream_events(http: httpx.Client, garden: dict[str, Any]) -> None:
    body = {"model": CHAT_MODEL, "input": "Which flour does the starter get?", "max_output_tokens": 24,
            "temperature": 0, "stream": True, "tools": [file_search(garden["store"].id)]}
    with http.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        frames = [frame for frame in response.read().decode().split("\n\n") if frame]
    events = [json.loads(frame.split("\n")[1][6:]) for frame in frames]
    for event in events:
        SDK_EVENT.validate_python(event)
    names = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert names[:7] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.file_search_call.in_progress", "response.file_search_call.searching",
                         "response.file_search_call.completed", "response.output_item.done"]
    assert events[2]["item"]["status"] == "in_progress" and events[6]["item"]["status"] == "completed"
    assert events[6]["item"]["queries"] == ["Which flour does the starter get?"]
    assert names[7] == "response.output_item.added" and events[7]["output_index"] == 1
    final = events[-1]["response"]
    part = final["output"][1]["content"][0]
    added = [e["annotation"] for e in events if e["type"] == "response.output_text.annotation.added"]
    assert added == part["annotations"]
    done_at = names.index("response.output_text.done")
    assert all(names.index("response.output_text.annotation.added") < done_at for _ in added)


def test_file_search_waits_for_no_file(client: openai.OpenAI, http: httpx.Client) -> None:
    """A store still indexing is a clear 400, not a silent answer from half the files."""
    big = "# Almanac\n\n" + "\n\n".join(f"## Day {i}\n\nThe tide table for day {i} reads {i % 7} metres." * 3
                                         for i in range(600))
    store = client.vector_stores.create(name="almanac", file_ids=[upload(client, "almanac.md", big)])
    response = http.post("/v1/responses", json={"model": CHAT_MODEL, "input": "tide on day 3?",
                                                "tools": [file_search(store.id)], "max_output_tokens": 4})
    assert response.status_code == 400, response.text
    assert "still processing" in response.json()["error"]["message"]
    assert wait_for(client, store.id).file_counts.completed == 1
    client.vector_stores.delete(store.id)


def test_rag_models_accept_client_tools(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    """`rag:INDEX` (here a vector store's index) grounds the answer and still lets the model call
    the client's function."""
    model = f"rag:{garden['store'].id}"
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[weather], tool_choice="required", max_tokens=32, temperature=0)  # type: ignore[list-item]
    [call] = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    answer = client.chat.completions.create(
        model=model, max_tokens=16, temperature=0, tools=[weather],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "What is the weather in Oslo?"},
                  {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}])
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content


def test_chat_completions_run_file_search_like_responses(client: openai.OpenAI, garden: dict[str, Any]) -> None:
    """The same tool on /v1/chat/completions: the same search and grounded prompt as Responses
    (so the same greedy answer), the search as the `file_search_call` extension field and the
    citations as `file_citation` annotations in chat's shape."""
    question = "What flour feeds the sourdough starter?"
    chat = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0,
        tools=[file_search(garden["store"].id)])  # type: ignore[list-item]
    reply = client.responses.create(model=CHAT_MODEL, input=question, tools=[file_search(garden["store"].id)],
                                    include=["file_search_call.results"], max_output_tokens=16, temperature=0)
    message = chat.choices[0].message.model_dump(exclude_none=True)
    assert message["content"] == reply.output_text and chat.choices[0].finish_reason in ("stop", "length")
    call = (chat.model_extra or {})["file_search_call"]
    assert call["type"] == "file_search_call" and call["status"] == "completed" and call["queries"] == [question]
    assert [r["file_id"] for r in call["results"]] == [r.file_id for r in reply.output[0].results]
    assert call["results"][0]["file_id"] == garden["note"].id and "rye" in call["results"][0]["text"]
    flat = [a.model_dump() for a in reply.output[-1].content[0].annotations]
    assert flat and message["annotations"] == [
        {"type": "file_citation", "file_citation": {k: v for k, v in a.items() if k != "type"}} for a in flat]


def test_chat_file_search_streams_the_search_first_and_citations_last(client: openai.OpenAI, http: httpx.Client,
                                                                      garden: dict[str, Any]) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Which flour does the starter get?"}],
            "max_tokens": 16, "temperature": 0, "tools": [file_search(garden["store"].id)]}
    whole = http.post("/v1/chat/completions", json=body).json()
    with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as response:
        assert response.status_code == 200
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert chunks[0]["file_search_call"] == whole["file_search_call"] | {"id": chunks[0]["file_search_call"]["id"]}
    assert all("file_search_call" not in c for c in chunks[1:])
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == whole["choices"][0][
        "message"]["content"]
    finishing = [c for c in chunks if c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["delta"].get("annotations") for c in finishing] == [
        whole["choices"][0]["message"]["annotations"]]


def test_chat_file_search_beside_function_tools_and_refusals(client: openai.OpenAI, http: httpx.Client,
                                                            garden: dict[str, Any]) -> None:
    """Function tools stay the model's to call; `tool_choice: "none"` searches nothing; a tool
    the server does not run, a rag: model, or an unknown store get the error envelope."""
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    called = http.post("/v1/chat/completions", json={
        "model": CHAT_MODEL, "messages": messages, "max_tokens": 32, "temperature": 0, "tool_choice": "required",
        "tools": [file_search(garden["store"].id), weather]}).json()
    [call] = called["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and called["file_search_call"]["status"] == "completed"
    plain = http.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": messages, "max_tokens": 4,
                                                    "tool_choice": "none", "tools": [file_search("vs_nowhere")]})
    assert plain.status_code == 200 and "file_search_call" not in plain.json()
    for tools, model, status, text in [
        ([{"type": "web_search"}], CHAT_MODEL, 400, "web_search"),
        ([{"type": "file_search"}], CHAT_MODEL, 400, "vector_store_ids"),
        ([file_search("vs_nowhere")], CHAT_MODEL, 404, "vs_nowhere"),
        ([file_search(garden["store"].id)], f"rag:{garden['store'].id}", 400, "rag:"),
        ([file_search(garden["store"].id), file_search(garden["store"].id)], CHAT_MODEL, 400, "one file_search"),
    ]:
        response = http.post("/v1/chat/completions", json={"model": model, "messages": messages, "tools": tools,
                                                           "max_tokens": 4})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert text in error["message"] + str(error["param"]), error
    assert http.get("/health").status_code == 200


def search_page(http: httpx.Client, store_id: str, query: str, **fields: Any) -> dict[str, Any]:
    response = http.post(f"/v1/vector_stores/{store_id}/search", json={"query": query, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_rewrite_query_searches_with_the_models_query(http: httpx.Client, garden: dict[str, Any]) -> None:
    """`rewrite_query`: the chat model writes the query, `search_query` reports it, and the
    results are those of searching for it directly."""
    store_id, question = garden["store"].id, "Could you tell me what the sourdough starter is fed with?"
    assert search_page(http, store_id, question)["search_query"] == [question]
    rewritten = search_page(http, store_id, question, rewrite_query=True)
    [query] = rewritten["search_query"]
    assert query and query != question and "\n" not in query
    direct = search_page(http, store_id, query)
    assert [(r["file_id"], r["score"]) for r in rewritten["data"]] == [(r["file_id"], r["score"])
                                                                      for r in direct["data"]]
    missing = http.post("/v1/vector_stores/vs_nowhere/search", json={"query": "x", "rewrite_query": True})
    assert missing.status_code == 404


@pytest.fixture(scope="module")
def model_queries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose file_search has the answering model write the query, and which takes
    uploads for fine-tuning."""
    running = start_server(tmp_path_factory.mktemp("model-queries"), default_config() + """
[vector_stores]
file_search_queries = "model"

[fine_tuning]
enabled = true
""")
    yield running
    stop_server(running)


def test_file_search_can_search_with_the_models_query(model_queries: RunningServer) -> None:
    """With `file_search_queries = "model"`, the query is the one the model writes (the same one
    `rewrite_query` gets for the same question), for chat and Responses alike, and a follow-up
    question is written with the conversation before it."""
    client = sdk_client(model_queries)
    with httpx.Client(base_url=model_queries.url, timeout=120) as http:
        store = client.vector_stores.create(name="garden", file_ids=[upload(client, "sourdough.md", NOTE)])
        wait_for(client, store.id)
        question = "Could you tell me what the sourdough starter is fed with?"
        [query] = search_page(http, store.id, question, rewrite_query=True)["search_query"]
        reply = client.responses.create(model=CHAT_MODEL, input=question, tools=[file_search(store.id)],
                                        include=["file_search_call.results"], max_output_tokens=8, temperature=0)
        assert reply.output[0].queries == [query] and query != question
        assert [r.text for r in reply.output[0].results] == [
            r["content"][0]["text"] for r in search_page(http, store.id, query)["data"]]
        chat = http.post("/v1/chat/completions", json={
            "model": CHAT_MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 4,
            "tools": [file_search(store.id)]}).json()
        assert chat["file_search_call"]["queries"] == [query]
        follow_up = client.responses.create(model=CHAT_MODEL, input="And how warm should it be kept?",
                                            previous_response_id=reply.id, tools=[file_search(store.id)],
                                            max_output_tokens=4, temperature=0)
        [written] = follow_up.output[0].queries
        assert written and written != query


def test_a_store_takes_only_document_uploads(model_queries: RunningServer) -> None:
    """A file uploaded for fine-tuning is not a document a store takes: a 400 naming its purpose,
    however it is attached."""
    client = sdk_client(model_queries)
    store = client.vector_stores.create(name="docs only")
    training = upload(client, "rows.jsonl", json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n", purpose="fine-tune")
    with httpx.Client(base_url=model_queries.url, timeout=60) as http:
        for path, body in ((f"/v1/vector_stores/{store.id}/files", {"file_id": training}),
                           ("/v1/vector_stores", {"file_ids": [training]}),
                           (f"/v1/vector_stores/{store.id}/file_batches", {"file_ids": [training]})):
            refused = http.post(path, json=body)
            assert refused.status_code == 400, refused.text
            assert "purpose 'fine-tune'" in refused.json()["error"]["message"], refused.text
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0
