"""Vector stores through the official openai SDK against the real server: uploads indexed with
the bundled MiniLM, searched, filtered on attributes, and hostile input refused."""

from __future__ import annotations

import io
import os
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types import VectorStore, VectorStoreSearchResponse
from openai.types.vector_stores import VectorStoreFile, VectorStoreFileBatch

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
    high = client.vector_stores.search(vector_store_id=store_id, query=query,
                                       ranking_options={"score_threshold": 0.99})
    assert all(r.score >= 0.99 for r in high)


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


def test_stores_list_modify_and_survive_a_restart_of_the_listing(client: openai.OpenAI,
                                                                 garden: dict[str, Any]) -> None:
    store_id = garden["store"].id
    renamed = client.vector_stores.update(store_id, name="garden notes", metadata={"owner": "tests", "v": "2"})
    assert renamed.name == "garden notes" and renamed.metadata == {"owner": "tests", "v": "2"}
    listed = [s.id for s in client.vector_stores.list()]
    assert store_id in listed
    assert client.vector_stores.retrieve(store_id).file_counts.completed == 3


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


@pytest.mark.parametrize(("method", "path", "body", "status", "text"), [
    ("get", "/v1/vector_stores/vs_nope", None, 404, "No vector store"),
    ("post", "/v1/vector_stores/vs_nope/search", {"query": "x"}, 404, "No vector store"),
    ("post", "/v1/vector_stores", {"file_ids": ["file-0123456789abcdef01234567"]}, 404, "No such File"),
    ("post", "/v1/vector_stores", {"file_ids": ["../../etc/passwd"]}, 404, "No such File"),
    ("post", "/v1/vector_stores", {"chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}}, 400, "less than half"),
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
