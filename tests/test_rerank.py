"""Reranking over HTTP: cross-encoders built from the bundled MiniLM (see cross_encoder.py),
served by the sentence_transformers plugin, checked against CrossEncoder.predict in-process."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import MINILM, SMOLLM, RunningServer, start_server, stop_server
from cross_encoder import build_cross_encoder

MAX_DOCUMENTS = 8
SHORT_MAX_TOKENS = 16
QUERY = "Where do cats like to sleep?"
DOCUMENTS = [
    "Stock markets fell sharply today.",
    "Cats often sleep on warm windowsills and soft blankets.",
    "The recipe needs two cups of flour.",
    "A kitten naps on the rug by the fire.",
    "Berlin had a population of 3.5 million in 2019.",
]

# A task the trained reranker can learn in a few dozen steps: a document is relevant when it
# names the query's word. Training and held-out words are disjoint; so are their templates.
WORDS = ["apple", "river", "guitar", "castle", "tiger", "violin", "glacier", "rocket", "pepper", "lantern",
         "harbor", "walnut", "falcon", "blanket", "compass", "volcano", "carrot", "penguin", "ladder", "mirror",
         "tractor", "orchid", "saddle", "anchor", "cactus", "kettle", "meadow", "pillow", "dolphin", "hammer",
         "bicycle", "candle", "desert", "feather", "island", "jacket", "lemon", "magnet", "needle", "parrot"]
TRAIN_WORDS, HELD_OUT_WORDS = WORDS[:30], WORDS[30:]
TRAIN_TEMPLATES = ["a short note about the {} we saw yesterday", "everything you need to know about a {}"]
HELD_OUT_TEMPLATE = "the {} was on the table"


def training_rows() -> list[tuple[str, str, float]]:
    pick = random.Random(1)
    rows = []
    for word in TRAIN_WORDS:
        for template in TRAIN_TEMPLATES:
            other = pick.choice([w for w in TRAIN_WORDS if w != word])
            rows += [(word, template.format(word), 1.0), (word, template.format(other), 0.0)]
    return rows  # 120 rows: 3 epochs of 8 batches are 24 optimiser steps


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("reranker") / "model", seed=0)


@pytest.fixture(scope="module")
def trained_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("trained") / "model", seed=0,
                               train=training_rows(), epochs=3, batch_size=16)


def config(reranker: Path, trained: Path) -> str:
    return f"""
[server]
max_embedding_inputs = {MAX_DOCUMENTS}

[[models]]
id = "minilm"
plugin = "sentence_transformers"
path = "{MINILM}"

[[models]]
id = "reranker"
plugin = "sentence_transformers"
path = "{reranker}"

[[models]]
id = "reranker-short"
plugin = "sentence_transformers"
path = "{reranker}"
task = "rerank"
max_seq_length = {SHORT_MAX_TOKENS}

[[models]]
id = "reranker-trained"
plugin = "sentence_transformers"
path = "{trained}"

[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 512
n_threads = 2
"""


@pytest.fixture(scope="module")
def rerank_server(tmp_path_factory: pytest.TempPathFactory, reranker_path: Path,
                  trained_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("rerank"), config(reranker_path, trained_path))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def http(rerank_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rerank_server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def local_reranker(reranker_path: Path) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(reranker_path), device="cpu", local_files_only=True)


def rerank(http: httpx.Client, path: str = "/v1/rerank", **fields: Any) -> dict[str, Any]:
    response = http.post(path, json={"model": "reranker", "query": QUERY, "documents": DOCUMENTS} | fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- results ------------------------------------------------------------------------------

def test_results_are_sorted_and_match_cross_encoder_predict(http: httpx.Client, local_reranker: Any) -> None:
    body = rerank(http)
    assert body["model"] == "reranker" and body["id"].startswith("rerank-")
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    expected = local_reranker.predict([(QUERY, d) for d in DOCUMENTS])
    for result in results:
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}
        assert result["relevance_score"] == pytest.approx(float(expected[result["index"]]), abs=1e-4)
        assert 0.0 < result["relevance_score"] < 1.0  # a one-label head's default activation is a sigmoid


def test_top_n_keeps_the_best(http: httpx.Client) -> None:
    everything = rerank(http)["results"]
    best_two = rerank(http, top_n=2)["results"]
    assert [r["index"] for r in best_two] == [r["index"] for r in everything[:2]]
    assert len(rerank(http, top_n=50)["results"]) == len(DOCUMENTS)


def test_return_documents_false_leaves_them_out(http: httpx.Client) -> None:
    results = rerank(http, return_documents=False)["results"]
    assert len(results) == len(DOCUMENTS)
    assert all(set(r) == {"index", "relevance_score"} for r in results)


def test_usage_counts_each_pair_up_to_the_max_length(http: httpx.Client, local_reranker: Any) -> None:
    documents = ["short one", "word " * 300]
    tokenizer = local_reranker.tokenizer
    full = [len(tokenizer(QUERY, d, truncation=True, max_length=512)["input_ids"]) for d in documents]
    usage = rerank(http, documents=documents)["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == sum(full)
    short = rerank(http, model="reranker-short", documents=documents)["usage"]
    assert short["prompt_tokens"] == min(full[0], SHORT_MAX_TOKENS) + SHORT_MAX_TOKENS


def test_other_paths_answer_the_same(http: httpx.Client) -> None:
    expected = [(r["index"], r["relevance_score"]) for r in rerank(http)["results"]]
    for path in ("/rerank", "/v1/reranking"):
        assert [(r["index"], r["relevance_score"]) for r in rerank(http, path)["results"]] == expected


def test_concurrent_requests_get_their_own_scores(http: httpx.Client) -> None:
    queries = [f"which document mentions {w}?" for w in WORDS[:6]]
    alone = [rerank(http, query=q, return_documents=False)["results"] for q in queries]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda q: rerank(http, query=q, return_documents=False)["results"], queries))
    for mine, theirs in zip(alone, together):
        assert [r["index"] for r in mine] == [r["index"] for r in theirs]
        assert [r["relevance_score"] for r in mine] == pytest.approx([r["relevance_score"] for r in theirs], abs=1e-5)


def test_trained_reranker_puts_the_relevant_document_first(http: httpx.Client) -> None:
    for position, word in enumerate(HELD_OUT_WORDS[:5]):
        others = [w for w in HELD_OUT_WORDS if w != word][:4]
        documents = [HELD_OUT_TEMPLATE.format(w) for w in others]
        documents.insert(position, HELD_OUT_TEMPLATE.format(word))
        results = rerank(http, model="reranker-trained", query=word, documents=documents)["results"]
        assert results[0]["index"] == position, (word, results)


# -- the catalogue and the embedder beside it ----------------------------------------------

def test_models_list_shows_each_capability(http: httpx.Client) -> None:
    cards = {card["id"]: card for card in http.get("/v1/models").json()["data"]}
    for name in ("reranker", "reranker-short", "reranker-trained"):
        assert cards[name]["capabilities"] == ["rerank"]
    assert cards["minilm"]["capabilities"] == ["embeddings"]  # task auto on a sentence-transformers folder


def test_embedder_keeps_embedding(rerank_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=rerank_server.base_url, api_key="none", max_retries=0, timeout=120)
    reply = client.embeddings.create(model="minilm", input=["a cat", "a dog"], encoding_format="float")
    assert [len(d.embedding) for d in reply.data] == [384, 384]


# -- bad input ------------------------------------------------------------------------------

def body(**fields: Any) -> dict[str, Any]:
    return {"model": "reranker", "query": QUERY, "documents": DOCUMENTS} | fields


WITHOUT_QUERY = {"model": "reranker", "documents": DOCUMENTS}
BAD_INPUTS = [
    # (id, body, status, code or None, param or None)
    ("empty-documents", body(documents=[]), 400, None, "documents"),
    ("too-many-documents", body(documents=["x"] * (MAX_DOCUMENTS + 1)), 400, None, "documents"),
    ("non-string-document", body(documents=["fine", 7]), 400, None, None),
    ("documents-not-a-list", body(documents="one document"), 400, None, "documents"),
    ("missing-query", WITHOUT_QUERY, 400, None, "query"),
    ("empty-query", body(query=""), 400, None, "query"),
    ("top-n-zero", body(top_n=0), 400, None, "top_n"),
    ("bad-keep-alive", body(keep_alive="soon"), 400, None, "keep_alive"),
    ("unknown-model", body(model="no-such-reranker"), 404, "model_not_found", "model"),
    ("embedder-asked-to-rerank", body(model="minilm"), 400, "model_not_capable", "model"),
    ("chat-model-asked-to-rerank", body(model="smollm2"), 400, "model_not_capable", "model"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_the_envelope_and_the_server_keeps_serving(
        http: httpx.Client, rerank_server: RunningServer, case: tuple[Any, ...]) -> None:
    _, request, status, code, param = case
    response = http.post("/v1/rerank", json=request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] is not None and error["param"].startswith(param)
    assert rerank_server.alive()
    assert len(rerank(http, documents=DOCUMENTS[:2])["results"]) == 2
