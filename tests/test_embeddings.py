"""Embeddings: every input shape, base64, dimensions, batching, and equality with the raw library."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from conftest import EMBED_MODEL, MINILM, RunningServer

SENTENCES = ["A cat sits on the mat.", "Stock markets fell sharply today.", "The kitten naps on a rug."]


def vectors(reply) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)])


def test_matches_sentence_transformers_in_process(client: openai.OpenAI) -> None:
    from sentence_transformers import SentenceTransformer

    raw = SentenceTransformer(str(MINILM), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    served = vectors(client.embeddings.create(model=EMBED_MODEL, input=SENTENCES, encoding_format="float"))
    assert served.shape == (3, 384)
    np.testing.assert_allclose(served, raw, atol=1e-5)
    similarity = served @ served.T
    assert similarity[0, 2] > similarity[0, 1]  # the cats are closer than the markets


def test_sdk_default_base64_is_little_endian_float32(client: openai.OpenAI) -> None:
    as_float = vectors(client.embeddings.create(model=EMBED_MODEL, input=SENTENCES[0], encoding_format="float"))
    reply = client.with_raw_response.embeddings.create(model=EMBED_MODEL, input=SENTENCES[0], encoding_format="base64")
    encoded = reply.http_response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_array_equal(decoded, as_float[0].astype("<f4"))
    default = vectors(client.embeddings.create(model=EMBED_MODEL, input=SENTENCES[0]))  # SDK sends base64
    np.testing.assert_allclose(default, as_float, atol=1e-7)


def test_token_id_inputs(client: openai.OpenAI) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(MINILM))(SENTENCES[0], add_special_tokens=False)["input_ids"]
    by_text = vectors(client.embeddings.create(model=EMBED_MODEL, input=SENTENCES[0], encoding_format="float"))
    for given in (ids, [ids, ids]):
        by_ids = vectors(client.embeddings.create(model=EMBED_MODEL, input=given, encoding_format="float"))
        np.testing.assert_allclose(by_ids[0], by_text[0], atol=1e-4)


def test_dimensions_truncates_and_renormalises(client: openai.OpenAI) -> None:
    reply = vectors(client.embeddings.create(model=EMBED_MODEL, input=SENTENCES, dimensions=64, encoding_format="float"))
    assert reply.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(reply, axis=1), 1.0, atol=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=EMBED_MODEL, input="x", dimensions=4096)


def test_usage_counts_tokens(client: openai.OpenAI) -> None:
    reply = client.embeddings.create(model=EMBED_MODEL, input=SENTENCES)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > len(SENTENCES)


def test_concurrent_single_requests_get_their_own_vectors(client: openai.OpenAI) -> None:
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(24)]
    together = vectors(client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float"))

    def one(text: str) -> np.ndarray:
        return vectors(client.embeddings.create(model=EMBED_MODEL, input=text, encoding_format="float"))[0]

    with ThreadPoolExecutor(8) as pool:
        singles = np.array(list(pool.map(one, texts)))
    np.testing.assert_allclose(singles, together, atol=1e-5)


def embedding_batches(server: RunningServer) -> tuple[float, float]:
    """(batches, requests) so far in /metrics' embedding batch histogram, every model summed."""
    found = {"_count": 0.0, "_sum": 0.0}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        for suffix in found:
            if line.startswith(f"lampstand:embedding_batch_size{suffix}{{"):
                found[suffix] += float(line.rsplit(" ", 1)[1])
    return found["_count"], found["_sum"]


def test_clients_in_flight_share_batches(server: RunningServer, client: openai.OpenAI) -> None:
    """Eight clients sending one sentence at a time, four rounds each: every request is counted
    in /metrics, and they shared encodes (how many per batch depends on timing; the bench
    measures the throughput)."""
    batches, requests = embedding_batches(server)

    def rounds(i: int) -> None:
        for r in range(4):
            client.embeddings.create(model=EMBED_MODEL, input=f"client {i} asks about topic {r}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(rounds, range(8)))
    more_batches, more_requests = embedding_batches(server)
    assert more_requests - requests == 32
    assert 0 < more_batches - batches < 32


def test_llama_cpp_embeddings_from_a_gguf(client: openai.OpenAI) -> None:
    reply = vectors(client.embeddings.create(model="smollm2-embed", input=SENTENCES, encoding_format="float"))
    assert reply.shape == (3, 576)
    np.testing.assert_allclose(np.linalg.norm(reply, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(reply[0], reply[1])
