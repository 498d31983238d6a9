"""The LangChain retriever against a real server: an index of a small folder, searched over HTTP.

The server answers with the bundled all-MiniLM-L6-v2 embedder and requires a key. What the
retriever returns is compared with what the search endpoint itself answers, so only the
mapping is judged here, not the ranking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MINILM, RunningServer, free_port, start_server, stop_server
from crafted_pdf import make_pdf
from langchain_core.documents import Document

from lampstand.clients.langchain_retriever import LampstandRetriever, SearchFailed

KEY = "retriever-test-key"
ADMIN_KEY = "retriever-admin-key"  # creating the index is an admin route
NOTES = {
    "garden.md": "# Garden\n\n## Tomatoes\nTomatoes need six hours of sun and deep watering.\n\n"
                 "## Basil\nBasil hates cold nights; keep it above ten degrees.\n",
    "recipes/bread.md": "# Bread\n\nSourdough needs a ripe starter, flour, water and salt.\n",
    "code/invoice.py": "def compute_invoice_total(items, tax_rate):\n"
                       '    """Sum the line items and apply the tax rate."""\n'
                       "    return sum(i.price for i in items) * (1 + tax_rate)\n",
}
LIGHTHOUSE = [["The harbour opens at dawn."], ["The lighthouse keeper trims the lamp wick nightly."]]
METADATA = {"path", "start_line", "end_line", "score", "rank", "language", "kind", "context",
            "chunk_id", "index"}


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sources") / "notes"
    for rel, text in NOTES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    (folder / "lighthouse.pdf").write_bytes(make_pdf(LIGHTHOUSE))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, notes: Path) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("retriever-server")
    config = f"""
[server]
api_keys = ["{KEY}"]
admin_keys = ["{ADMIN_KEY}"]

[indexes]
dir = "{tmp}/indexes"
source_roots = ["{notes}"]

[[models]]
id = "minilm"
plugin = "sentence_transformers"
path = "{MINILM}"
"""
    running = start_server(tmp, config)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def http(server: RunningServer, notes: Path) -> Iterator[httpx.Client]:
    """A raw client, after the `notes` index has been built."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=300) as client:
        made = client.post("/indexes", json={"name": "notes", "paths": [str(notes)], "wait": True})
        assert made.status_code == 200, made.text
        yield client


@pytest.fixture()
def retriever(server: RunningServer, http: httpx.Client,
              monkeypatch: pytest.MonkeyPatch) -> LampstandRetriever:
    monkeypatch.setenv("LAMPSTAND_API_KEY", KEY)
    return LampstandRetriever(base_url=server.base_url, index="notes")


def raw_search(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = http.post("/indexes/notes/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def assert_same(documents: list[Document], results: list[dict[str, Any]]) -> None:
    assert [d.page_content for d in documents] == [r["text"] for r in results]
    for document, result in zip(documents, results, strict=True):
        assert set(document.metadata) == METADATA
        assert document.metadata["index"] == "notes"
        assert document.id == result["chunk_id"]
        assert all(document.metadata[k] == result[k] for k in METADATA - {"index"})


def test_documents_are_the_search_results(retriever: LampstandRetriever,
                                          http: httpx.Client) -> None:
    query = "how much sun do tomatoes need"
    documents = retriever.invoke(query)
    assert_same(documents, raw_search(http, retriever.search_body(query)))
    assert 1 <= len(documents) <= 5
    top = documents[0].metadata
    assert (top["path"], top["rank"], top["context"]) == ("garden.md", 1, ["Garden", "Tomatoes"])


def test_the_async_call_gives_the_same_documents(retriever: LampstandRetriever) -> None:
    query = "sourdough starter"
    assert asyncio.run(retriever.ainvoke(query)) == retriever.invoke(query)


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"language": "python"}, lambda m: m["language"] == "python"),
        ({"path_glob": "recipes/*"}, lambda m: m["path"].startswith("recipes/")),
        ({"path_glob": "*.pdf"}, lambda m: m["kind"] == "pdf" and m["context"][0].startswith("page ")),
        ({"mode": "lexical", "top_k": 1}, lambda m: m["rank"] == 1),
        ({"mode": "dense", "top_k": 2}, lambda m: m["rank"] <= 2),
    ],
    ids=["language", "path-glob", "pdf-pages", "lexical-top-1", "dense-top-2"],
)
def test_fields_reach_the_server(retriever: LampstandRetriever, http: httpx.Client,
                                 fields: dict[str, Any], check: Any) -> None:
    configured = retriever.model_copy(update=fields)
    query = "lighthouse keeper lamp invoice total bread"
    documents = configured.invoke(query)
    assert documents and all(check(d.metadata) for d in documents)
    assert_same(documents, raw_search(http, configured.search_body(query)))


def test_a_pdf_page_is_cited(retriever: LampstandRetriever) -> None:
    (top, *_) = retriever.model_copy(update={"path_glob": "*.pdf", "expand": False}).invoke("lighthouse keeper")
    assert (top.metadata["path"], top.metadata["context"]) == ("lighthouse.pdf", ["page 2"])
    assert top.page_content == "The lighthouse keeper trims the lamp wick nightly."
    (span, *_) = retriever.model_copy(update={"path_glob": "*.pdf"}).invoke("lighthouse keeper")
    assert span.metadata["context"] == ["page 2"]  # where the match was; the span holds its neighbours too
    assert "The lighthouse keeper trims the lamp wick nightly." in span.page_content


def test_server_errors_carry_the_servers_message(retriever: LampstandRetriever,
                                                 http: httpx.Client) -> None:
    missing = retriever.model_copy(update={"index": "no-such-index"})
    answer = http.post("/indexes/no-such-index/search", json=missing.search_body("x"))
    envelope = answer.json()["error"]
    for call in (lambda: missing.invoke("x"), lambda: asyncio.run(missing.ainvoke("x"))):
        with pytest.raises(SearchFailed) as caught:
            call()
        assert envelope["message"] in str(caught.value)
        assert caught.value.http_status == answer.status_code >= 400
        assert (caught.value.code, caught.value.error_type) == (envelope["code"], envelope["type"])


def test_a_wrong_key_is_refused(server: RunningServer) -> None:
    stranger = LampstandRetriever(base_url=server.base_url, index="notes", api_key="wrong")
    with pytest.raises(SearchFailed) as caught:
        stranger.invoke("tomatoes")
    assert caught.value.http_status == 401


def test_the_key_is_read_from_the_environment_and_kept_secret(
    retriever: LampstandRetriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert retriever.api_key is not None and retriever.api_key.get_secret_value() == KEY
    assert KEY not in repr(retriever)
    monkeypatch.delenv("LAMPSTAND_API_KEY")
    assert LampstandRetriever(index="notes").api_key is None


def test_an_unreachable_server_is_named() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    nobody = LampstandRetriever(base_url=base_url, index="notes", api_key=None, timeout=5)
    with pytest.raises(SearchFailed, match="cannot reach .*lampstand serve"):
        nobody.invoke("anything")
    with pytest.raises(SearchFailed, match="cannot reach"):
        asyncio.run(nobody.ainvoke("anything"))


def test_the_request_body_follows_the_search_api() -> None:
    plain = LampstandRetriever(index="my notes", base_url="http://h:1/v1/", api_key=None)
    assert plain.search_url == "http://h:1/v1/indexes/my%20notes/search"
    assert plain.search_body("q") == {"query": "q", "top_k": 5, "mode": "hybrid",
                                      "rerank": False, "expand": True, "filters": None}
    filtered = plain.model_copy(update={"language": "python", "rerank": True, "top_k": 3})
    assert filtered.search_body("q")["filters"] == {"path_glob": None, "language": "python"}
