"""Plugins are found through entry points: a separately installed package adds a backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from conftest import RunningServer, start_server, stop_server

FIXTURE = Path(__file__).parent / "fixtures" / "echo_plugin"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install` the echo plugin distribution into its own directory."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(FIXTURE)],
        check=True, cwd=build, env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    return target


@pytest.fixture(scope="module")
def echo_server(installed_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("echo")
    (tmp / "weights.bin").write_bytes(b"")
    config = f"""
[[models]]
id = "parrot"
plugin = "echo"
path = "{tmp / 'weights.bin'}"
prefix = "parrot says:"
"""
    env = {"PYTHONPATH": os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])}
    running = start_server(tmp, config, env=env)
    yield running
    stop_server(running)


def test_installed_plugin_serves_its_model(echo_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=echo_server.base_url, api_key="x", max_retries=0)
    cards = {m.id: m for m in client.models.list()}
    assert "parrot" in cards
    reply = client.chat.completions.create(model="parrot", messages=[{"role": "user", "content": "hello world"}])
    assert reply.choices[0].message.content == "parrot says: hello world"
    streamed = client.chat.completions.create(
        model="parrot", messages=[{"role": "user", "content": "one two"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "parrot says: one two"


def test_plugin_options_are_validated_by_the_plugin(installed_plugin: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[[models]]\nid = "p"\nplugin = "echo"\npath = "{tmp_path}"\nprefx = "typo"\n')
    env = {**os.environ, "PYTHONPATH": str(installed_plugin)}
    result = subprocess.run([sys.executable, "-m", "lampstand.clients", "models", "--config", str(config)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "prefx" in result.stderr and "unknown option" in result.stderr


def test_discovery_imports_no_engine() -> None:
    code = ("import sys, json; from lampstand.plugins import discover_plugins; r = discover_plugins(); "
            "print(json.dumps({'plugins': sorted(r.plugins), 'heavy': [m for m in ('torch', 'llama_cpp', "
            "'sentence_transformers', 'transformers', 'vllm') if m in sys.modules]}))")
    result = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert {"llama_cpp", "sentence_transformers", "vllm"} <= set(result["plugins"])
    assert result["heavy"] == []


LIAR = '''
from lampstand.plugins import Capability, ChatModel, Footprint, Plugin


class Liar(Plugin, ChatModel):
    """Declares rerank, but is no Reranker."""

    name = "liar"

    def capabilities(self):
        return frozenset({Capability.CHAT, Capability.RERANK})

    def estimate_footprint(self):
        return Footprint(ram_bytes=1024)

    def load(self):
        pass

    def unload(self):
        pass

    def chat(self, request):
        yield from ()
'''


def test_a_plugin_that_breaks_its_contract_is_refused_at_start(tmp_path: Path) -> None:
    """Registered through a real entry point; the configuration check names what is missing."""
    site = tmp_path / "site"
    info = site / "liar_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "liar_plugin.py").write_text(LIAR)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: liar-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lampstand.plugins]\nliar = liar_plugin:Liar\n")
    config = tmp_path / "liar.toml"
    config.write_text(f'[[models]]\nid = "fibber"\nplugin = "liar"\npath = "{tmp_path}"\n')
    env = {**os.environ, "PYTHONPATH": str(site)}
    for command in (["models"], ["serve", "--port", "0"]):
        result = subprocess.run([sys.executable, "-m", "lampstand.clients", *command, "--config", str(config)],
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "'fibber'" in result.stderr and "declares rerank but is not a Reranker" in result.stderr
