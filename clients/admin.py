"""The admin side of the HTTP API, for `lampstand ps`, `load`, `unload` and `adapters`."""

from __future__ import annotations

from typing import Any

import httpx

from .wire import bearer, check, unreachable

__all__ = ["AdminClient"]


class AdminClient:
    """Model residency on a running server."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.headers = bearer(api_key)
        self.timeout = timeout

    def models(self) -> list[dict[str, Any]]:
        """Every model's card."""
        return self._request("GET", "/v1/models")["data"]

    def load(self, model: str, keep_alive: str | None = None) -> dict[str, Any]:
        """Load `model` now; its card afterwards."""
        body = {"keep_alive": keep_alive} if keep_alive is not None else None
        return self._request("POST", f"/v1/models/{model}/load", body)

    def unload(self, model: str) -> dict[str, Any]:
        """Unload `model` once idle; its card afterwards."""
        return self._request("POST", f"/v1/models/{model}/unload")

    def load_adapter(self, name: str, path: str, base: str | None = None, scale: float = 1.0) -> dict[str, Any]:
        """Load a LoRA adapter into its running base model; its card afterwards."""
        body: dict[str, Any] = {"lora_name": name, "lora_path": path, "scale": scale}
        if base is not None:
            body["base_model"] = base
        return self._request("POST", "/v1/load_lora_adapter", body)

    def unload_adapter(self, name: str) -> dict[str, Any]:
        """Stop serving a LoRA adapter."""
        return self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = httpx.request(method, self.url + path, json=body, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc) from exc
        check(response)
        return response.json()
