"""llama.cpp's own C++ server, built once from the llama.cpp that the locked llama-cpp-python vendors.

The concurrency benchmark measures lampstand beside `llama-server` on the same GGUF: the anchor
for continuous batching. The binary is built from llama-cpp-python's source distribution (its
`vendor/llama.cpp`) with the same portable x86 kernels the Makefile gives the wheel, linked
statically, and kept in a cache keyed by version and flags (like the wheel), so later runs
start at once. The first build takes about 5-8 minutes on 2 cores.

Run alone to build it and print its path: python bench/llama_server.py
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

__all__ = ["llama_server_binary"]

# The Makefile's LLAMA_CMAKE_ARGS for the CPU variant, and a static link so that the cached
# binary needs none of the build tree's shared libraries.
CMAKE_ARGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
              "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DCMAKE_BUILD_TYPE=Release"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lampstand" / "bin"


def _version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def _cached_path(version: str) -> Path:
    key = hashlib.sha256(f"{version} {' '.join(CMAKE_ARGS)}".encode()).hexdigest()[:12]
    return CACHE / f"llama-server-{version}-{key}"


def _build(version: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(work)], check=True)
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = work / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
        build = work / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_ARGS], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
                       check=True, stdout=subprocess.DEVNULL)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(build / "bin" / "llama-server", partial)
        partial.replace(target)


def llama_server_binary() -> Path:
    """The cached `llama-server` for the installed llama-cpp-python, built first when missing."""
    version = _version()
    target = _cached_path(version)
    if not target.exists():
        print(f"building llama-server {version} from its source distribution (once, about 5-8 minutes)...",
              flush=True)
        _build(version, target)
    return target


if __name__ == "__main__":
    print(llama_server_binary())
