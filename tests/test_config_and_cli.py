"""Configuration errors stop start-up with one line; the CLI works against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import CHAT_MODEL, SMOLLM, RunningServer, start_server, stop_server
from lampstand.plugins.errors import ConfigError
from lampstand.server.config import load_settings


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lampstand.clients", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


BAD_CONFIGS = [
    ("[server]\nprot = 1\n", "server.prot: unknown key"),
    ("[server]\nport = 'eighty'\n", "server.port"),
    ("[sever]\nport = 1\n", "sever: unknown key"),
    ('[[models]]\nid = "x"\nplugin = "llama_cpp"\n', "exactly one of 'path' or 'hf'"),
    ('[[models]]\nid = "x"\nplugin = "nope"\npath = "/tmp"\n', "unknown plugin 'nope'"),
    ('[[models]]\nid = "x"\nplugin = "llama_cpp"\npath = "/tmp"\nn_ctxx = 5\n', "n_ctxx: unknown option"),
    ('[[models]]\nid = "x"\nplugin = "llama_cpp"\npath = "/tmp"\nn_ctx = -5\n', "n_ctx"),
    ("this is not toml", "invalid TOML"),
    ('[server]\ncors_origins = ["*"]\ncors_allow_credentials = true\n', "cannot be used with cors_origins"),
    ('[memory]\ncpu = "lots"\n', "not a size"),
    ('[memory]\nkeep_alive = "soon"\n', "not a duration"),
    ('[[models]]\nid = "x"\nplugin = "llama_cpp"\npath = "/tmp"\nkeep_alive = "5 min"\n', "not a duration"),
]


def test_faiss_on_a_gpu_that_is_not_there_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "lampstand.toml"
    path.write_text('[indexes]\nfaiss_device = "cuda"\n')
    result = cli("serve", "--config", str(path), "--port", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "faiss_device = 'cuda'" in result.stderr and "index-gpu" in result.stderr


@pytest.mark.parametrize("text,message", BAD_CONFIGS)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lampstand.toml"
    path.write_text(text)
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lampstand.toml"
    path.write_text("[server]\nport = 9000\ndefault_max_tokens = 10\n")
    monkeypatch.setenv("LAMPSTAND_CONFIG", str(path))
    monkeypatch.setenv("LAMPSTAND_SERVER__PORT", "9100")
    settings = load_settings()
    assert settings.server.port == 9100 and settings.server.default_max_tokens == 10
    monkeypatch.setenv("LAMPSTAND_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError, match="server.port"):
        load_settings()


def test_no_config_serves_the_bundled_models() -> None:
    result = cli("models", "--json", env={"LAMPSTAND_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    ids = {m["id"]: m for m in listing["models"]}
    assert ids["smollm2-135m-instruct"]["capabilities"] == ["adapters", "chat", "completions"]
    assert ids["all-minilm-l6-v2"]["capabilities"] == ["embeddings"]
    assert {"llama_cpp", "sentence_transformers"} <= set(listing["plugins"])


@pytest.mark.parametrize("command", ["serve", "models", "chat"])
def test_help(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_cli_chat_streams_from_the_server(server: RunningServer) -> None:
    result = cli("chat", "Say hello.", "--url", server.url, "--model", CHAT_MODEL, "--temperature", "0",
                 "--max-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["content"].strip()
    plain = cli("chat", "Say hello.", "--url", server.url, "--temperature", "0", "--max-tokens", "8")
    assert plain.stdout.strip() == json.loads(result.stdout)["content"].strip()


def test_cli_chat_reports_server_errors_in_one_line(server: RunningServer) -> None:
    result = cli("chat", "hi", "--url", server.url, "--model", "no-such-model")
    assert result.returncode == 2 and "no-such-model" in result.stderr and "Traceback" not in result.stderr
    result = cli("chat", "hi", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "cannot reach" in result.stderr


def test_cli_chat_in_process(tmp_path: Path, server: RunningServer) -> None:
    config = tmp_path / "lampstand.toml"
    config.write_text(server.log.parent.joinpath("lampstand.toml").read_text())
    result = cli("chat", "Say hello.", "--local", "--config", str(config), "--temperature", "0",
                 "--max-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["content"].strip()


def test_admin_routes_need_an_admin_key(tmp_path: Path) -> None:
    running = start_server(tmp_path, '[server]\napi_keys = ["user-key"]\nadmin_keys = ["admin-key"]\n'
                                     f'[indexes]\nsource_roots = ["{tmp_path}"]\n[[models]]\nid = "m"\n'
                                     f'plugin = "llama_cpp"\npath = "{SMOLLM}"\nn_ctx = 256\n')
    user, admin = ({"Authorization": f"Bearer {key}"} for key in ("user-key", "admin-key"))
    try:
        for headers in (user, admin):
            assert httpx.get(running.base_url + "/models", headers=headers).status_code == 200
        for method, path, body in [("POST", "/models/m/unload", None), ("POST", "/models/m/load", None),
                                   ("POST", "/indexes", {"name": "n", "paths": [str(tmp_path)]}),
                                   ("DELETE", "/indexes/n", None), ("POST", "/files", None),
                                   ("POST", "/load_lora_adapter", {"lora_name": "a", "lora_path": "a"})]:
            refused = httpx.request(method, running.base_url + path, json=body, headers=user)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_key_required", path
            assert httpx.request(method, running.base_url + path, json=body).status_code == 401, path
        assert httpx.post(running.base_url + "/models/m/unload", headers=admin).status_code == 200
        made = httpx.post(running.base_url + "/indexes", json={"name": "n", "paths": [str(tmp_path)]}, headers=admin)
        assert made.status_code != 403 and made.status_code != 401, made.text
        assert "user-key" not in running.log.read_text() and "admin-key" not in running.log.read_text()
    finally:
        stop_server(running)


def test_api_keys_are_required_when_configured(tmp_path: Path) -> None:
    running = start_server(tmp_path, '[server]\napi_keys = ["sekrit"]\n[[models]]\nid = "m"\n'
                                     f'plugin = "llama_cpp"\npath = "{tmp_path}"\n')
    try:
        assert httpx.get(running.url + "/health").status_code == 200
        denied = httpx.get(running.base_url + "/models")
        assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
        wrong = httpx.get(running.base_url + "/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = httpx.get(running.base_url + "/models", headers={"Authorization": "Bearer sekrit"})
        assert allowed.status_code == 200
        assert "sekrit" not in running.log.read_text()
    finally:
        stop_server(running)
