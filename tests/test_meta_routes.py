"""Models list, version, docs and OpenAPI schema."""

from __future__ import annotations

import httpx
import openai

from conftest import CHAT_MODEL


def test_models_list_shape(client: openai.OpenAI, http: httpx.Client) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2", "smollm2-embed"} <= set(models)
    raw = http.get("/v1/models").json()
    assert raw["object"] == "list"
    for card in raw["data"]:
        assert card["object"] == "model" and isinstance(card["created"], int) and card["owned_by"]
        assert card["status"] in ("unloaded", "loading", "loaded", "failed")
        assert isinstance(card["capabilities"], list)


def test_model_by_alias_and_status_after_use(client: openai.OpenAI, http: httpx.Client) -> None:
    client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    card = http.get(f"/v1/models/{CHAT_MODEL}").json()
    assert card["id"] == "smollm2-135m-instruct" and card["status"] == "loaded"
    assert card["context_length"] == 2048 and card["aliases"] == ["smollm2"]
    assert http.get("/v1/models/nope").json()["error"]["code"] == "model_not_found"


def test_version_docs_and_openapi(http: httpx.Client) -> None:
    version = http.get("/version").json()
    assert version["version"] and "llama_cpp" in version["plugins"]
    assert http.get("/docs").status_code == 200
    schema = http.get("/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/health"):
        assert path in schema["paths"]
