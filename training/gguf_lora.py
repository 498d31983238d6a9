"""Exports a peft LoRA adapter as a GGUF LoRA that llama.cpp applies on top of a GGUF base.

llama.cpp computes `y = W x + scale * B (A x)` with `scale = adapter.lora.alpha / rank` (rank read
from each lora_b), which is peft's `lora_alpha / r` when the exported alpha is peft's. Each peft
pair `lora_A.weight` (r, in) and `lora_B.weight` (out, r) is written as `<base tensor>.lora_a` and
`.lora_b` with the same row-major shapes, which are exactly the ggml shapes llama.cpp checks:
lora_a ne = [in, r], lora_b ne = [r, out], against the base tensor's ne = [in, out].

Two things differ from a straight copy:
- llama.cpp's converter reorders the rows of Q and K for the rope layout of llama-style
  architectures, so lora_b of `attn_q` / `attn_k` gets the same row permutation (lora_a is
  unchanged: permuting the rows of B A is permuting the rows of B).
- A token-embedding LoRA is applied by row lookup (`get_rows(lora_a, tokens)`), so its lora_a is
  peft's `lora_embedding_A` transposed to (vocab, r).
Scales that one adapter-wide alpha cannot express (rsLoRA, `rank_pattern` with rsLoRA,
`alpha_pattern`) are folded into lora_b.

The base GGUF is read only through `scan_gguf`'s bounded header reader; llama.cpp is never
loaded here. Anything the file format cannot carry is refused with a `LoraExportError` that says
why: DoRA and other peft variants, full-weight `modules_to_save`, LoRA biases, targets with no
tensor in the base, shapes that do not fit it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lampstand.plugins.durable_files import publish_file, reserve_temp
from lampstand.plugins.errors import InvalidModelFile
from lampstand.plugins.llama_cpp.gguf_check import GgufArray, scan_gguf
from lampstand.plugins.llama_cpp.lora_check import BASE_SHA256_KEY

from .manifest import PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE

if TYPE_CHECKING:
    import gguf
    import numpy as np

__all__ = ["BASE_SHA256_KEY", "SOURCE_KEY", "LoraExportError", "export_gguf_lora"]

SOURCE_KEY = "lampstand.source"  # what the file was exported from

# Architectures whose Q/K rows llama.cpp's converter reorders for its rope layout (its
# `undo_permute` models). An architecture in neither set is refused: applying the permutation
# when it is not wanted, or skipping it when it is, gives a model that loads and talks nonsense.
PERMUTED_QK = frozenset({"llama", "granite", "granitemoe"})
UNPERMUTED_QK = frozenset({"qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"})

# init_lora_weights values that leave the base weights alone; PiSSA, OLoRA, CorDA and LoftQ
# rewrite the base, so their adapters only fit the rewritten model unless converted on save.
PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")

# Config keys whose non-empty values change what the adapter computes in ways llama.cpp's
# `W x + s B A x` cannot reproduce, with why.
UNSUPPORTED_OPTIONS = {
    "use_dora": "DoRA (use_dora) rescales each column by a learned magnitude",
    "use_qalora": "QA-LoRA (use_qalora) pools the input before lora_A",
    "lora_bias": "lora_bias adds a bias to lora_B",
    "fan_in_fan_out": "fan_in_fan_out stores weights transposed (GPT-2 Conv1D layers)",
    "modules_to_save": "modules_to_save holds full copies of whole layers, not low-rank pairs",
    "trainable_token_indices": "trainable_token_indices replaces rows of the embedding",
    "layer_replication": "layer_replication changes the model's layer stack",
    "target_parameters": "target_parameters puts LoRA on raw parameters (such as MoE experts)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens) is not exported by lampstand",
    "use_bdlora": "block-diagonal LoRA (use_bdlora) is a different layout",
    "arrow_config": "Arrow routing (arrow_config) mixes several adapters per token",
    "kasa_config": "KaSA (kasa_config) adds a singular-value term",
    "velora_config": "VeLoRA (velora_config) changes the forward pass",
    "monteclora_config": "MonteCLoRA (monteclora_config) samples the adapter",
    "megatron_config": "Megatron-parallel LoRA layers (megatron_config)",
}

# `base_model.model.<module>.<part>`: peft's saved keys, the adapter name already removed
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|"
                  r"lora_embedding_A|lora_embedding_B)$")
_EMBEDDING_PARTS = ("lora_embedding_A", "lora_embedding_B")
_TIED_OUTPUT_NAME = "output.weight"


class LoraExportError(ValueError):
    """The adapter cannot be exported as a GGUF LoRA for this base; the message says why."""


@dataclass(frozen=True)
class LoraSettings:
    """What `adapter_config.json` says about scaling, after refusing what cannot be exported."""

    r: int
    lora_alpha: float
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]

    @property
    def gguf_alpha(self) -> float:
        """The adapter-wide alpha for llama.cpp: `alpha / r` is then peft's scale at rank `r`."""
        return self.lora_alpha * math.sqrt(self.r) if self.use_rslora else self.lora_alpha

    def rank_for(self, module: str) -> int:
        key = _pattern_key(self.rank_pattern, module)
        return self.rank_pattern[key] if key else self.r

    def peft_scale(self, module: str, rank: int) -> float:
        key = _pattern_key(self.alpha_pattern, module)
        alpha = float(self.alpha_pattern[key]) if key else self.lora_alpha
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


@dataclass(frozen=True)
class BaseModel:
    """What the export needs from the base GGUF's header."""

    file_name: str
    architecture: str
    n_layer: int
    n_head: int
    n_head_kv: int
    tensor_shapes: dict[str, tuple[int, ...]]  # ggml order: shape[0] is the input dimension
    names: gguf.TensorNameMap  # Hugging Face weight names to this architecture's tensor names


@dataclass(frozen=True)
class LoraPair:
    """One peft low-rank pair for one module, as float32 arrays in peft's layout."""

    module: str  # the Hugging Face module name, such as model.layers.0.self_attn.q_proj
    a: np.ndarray  # (r, in); for an embedding (r, vocab)
    b: np.ndarray  # (out, r); for an embedding (embd, r)
    embedding: bool


def export_gguf_lora(adapter_dir: Path, base_gguf: Path, out_path: Path,
                     base_sha256: str | None = None) -> None:
    """Write the peft adapter in `adapter_dir` as a GGUF LoRA for `base_gguf` at `out_path`.

    The file appears at `out_path` complete or not at all. `base_sha256`, when given, is stored
    under `BASE_SHA256_KEY` so a loader can tell which base the adapter was exported for.
    """
    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    settings = read_lora_settings(adapter_dir / PEFT_CONFIG_FILE)
    base = read_base_model(Path(base_gguf))
    pairs = read_lora_pairs(adapter_dir / PEFT_WEIGHTS_FILE)
    _check_tied_embedding(pairs, base)
    tensors = [tensor for pair in pairs for tensor in gguf_tensors(pair, base, settings)]
    metadata: dict[str, str | float] = {"adapter.lora.alpha": settings.gguf_alpha,
                                        SOURCE_KEY: "peft"}
    if base_sha256 is not None:
        metadata[BASE_SHA256_KEY] = base_sha256
    _write_atomically(out_path, base.architecture, metadata, tensors)


# -- adapter_config.json ------------------------------------------------------------------------

def read_lora_settings(path: Path) -> LoraSettings:
    """Read peft's adapter config, refusing adapter kinds that a GGUF LoRA cannot carry."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoraExportError(f"{path.parent.name} has no {path.name}; is it a peft adapter folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoraExportError(f"{path.name} cannot be read as JSON: {exc}") from None
    if not isinstance(config, dict):
        raise LoraExportError(f"{path.name} is not a JSON object")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise LoraExportError(f"peft_type is {peft_type!r}; only LoRA adapters (LORA) can be exported to GGUF")
    for key, why in UNSUPPORTED_OPTIONS.items():
        if config.get(key):
            raise LoraExportError(f"the adapter cannot be exported to GGUF: {why}")
    if config.get("bias", "none") != "none":
        raise LoraExportError(f"bias is {config['bias']!r}; llama.cpp LoRAs carry no bias terms (use bias='none')")
    init = config.get("init_lora_weights", True)
    if init not in PLAIN_INITS:
        raise LoraExportError(
            f"init_lora_weights {init!r} rewrites the base weights, so the adapter does not fit the "
            "original base; save it with path_initial_model_for_weight_conversion first"
        )
    return LoraSettings(
        r=_positive_int(config.get("r"), "r"),
        lora_alpha=_positive_float(config.get("lora_alpha"), "lora_alpha"),
        use_rslora=bool(config.get("use_rslora", False)),
        rank_pattern={str(k): _positive_int(v, f"rank_pattern[{k!r}]")
                      for k, v in _mapping(config, "rank_pattern").items()},
        alpha_pattern={str(k): _positive_float(v, f"alpha_pattern[{k!r}]")
                       for k, v in _mapping(config, "alpha_pattern").items()},
    )


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise LoraExportError(f"{name} is {value!r}; it must be a positive number")
    return float(value)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LoraExportError(f"{name} is {value!r}; it must be a positive integer")
    return value


def _mapping(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise LoraExportError(f"{key} is {value!r}, not a mapping of module patterns")
    return value


def _pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    """The first pattern key peft would match against `module` (a suffix match on whole names)."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        except re.error as exc:
            raise LoraExportError(f"pattern {key!r} in the adapter config is not a valid regex: {exc}") from None
    return None


# -- the base GGUF ------------------------------------------------------------------------------

def read_base_model(path: Path) -> BaseModel:
    """Architecture, head counts and tensor shapes from the base GGUF's header."""
    try:
        header = scan_gguf(path)
    except InvalidModelFile as exc:
        raise LoraExportError(f"the base model cannot be read: {exc}") from None
    meta = header.metadata
    architecture = meta.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise LoraExportError(f"{path.name} names no general.architecture")
    if meta.get("general.type", "model") != "model":
        raise LoraExportError(f"{path.name} is not a base model (general.type is {meta['general.type']!r})")

    def count(key: str, default: int | None = None) -> int:
        value = meta.get(f"{architecture}.{key}", default)
        if isinstance(value, GgufArray):
            raise LoraExportError(f"{path.name} has a per-layer {key}, which lampstand's export does not handle")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise LoraExportError(f"{path.name}: {architecture}.{key} is missing or not a positive integer")
        return value

    import gguf

    arch = next((a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture), None)
    if arch is None:
        raise LoraExportError(f"{path.name}: the gguf package does not know architecture {architecture!r}")
    n_head, n_layer = count("attention.head_count"), count("block_count")
    return BaseModel(
        file_name=path.name,
        architecture=architecture,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=count("attention.head_count_kv", n_head),
        tensor_shapes={tensor.name: tensor.shape for tensor in header.tensors},
        names=gguf.get_tensor_name_map(arch, n_layer),
    )


# -- adapter_model.safetensors ------------------------------------------------------------------

def read_lora_pairs(path: Path) -> list[LoraPair]:
    """The adapter's A/B pairs by module, refusing any key that is not a LoRA factor."""
    factors: dict[str, dict[str, np.ndarray]] = {}
    for key, array in _read_safetensors(path):
        match = _KEY.match(key)
        if match is None:
            raise LoraExportError(_unexpected_key(key))
        factors.setdefault(match["module"], {})[match["part"]] = array
    if not factors:
        raise LoraExportError(f"{path.name} holds no LoRA weights")
    pairs = []
    for module, parts in sorted(factors.items()):
        embedding = any(part in parts for part in _EMBEDDING_PARTS)
        a_key, b_key = _EMBEDDING_PARTS if embedding else ("lora_A.weight", "lora_B.weight")
        if set(parts) != {a_key, b_key}:
            raise LoraExportError(f"{module} has {sorted(parts)}, not one {a_key} and one {b_key}")
        pairs.append(LoraPair(module, parts[a_key], parts[b_key], embedding))
    return pairs


def _read_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor of a safetensors file as float32 numpy (bf16 and f16 included)."""
    import torch
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise LoraExportError(f"{path.parent.name} has no {path.name}")
    try:
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = weights.get_tensor(key)
                if not tensor.is_floating_point():
                    raise LoraExportError(f"{key} in {path.name} is {tensor.dtype}, not a float tensor")
                yield key, tensor.to(torch.float32).numpy()
    except SafetensorError as exc:
        raise LoraExportError(f"{path.name} is not a readable safetensors file: {exc}") from None


def _unexpected_key(key: str) -> str:
    if "lora_magnitude_vector" in key:
        return f"{key} is a DoRA magnitude; DoRA adapters cannot be exported to GGUF"
    if key.endswith(".bias"):
        return f"{key} is a bias term; llama.cpp LoRAs carry only low-rank pairs"
    return (f"{key} is not a LoRA factor (full weights from modules_to_save or trainable tokens, "
            "or an unknown peft layout); it cannot be exported to GGUF")


# -- conversion ---------------------------------------------------------------------------------

def gguf_tensors(pair: LoraPair, base: BaseModel, settings: LoraSettings) -> list[tuple[str, np.ndarray]]:
    """The `.lora_a` and `.lora_b` tensors llama.cpp expects for one peft pair."""
    import numpy as np

    name, rope_heads = _base_tensor(pair.module, base)
    shape = base.tensor_shapes.get(name)
    if shape is None:
        raise LoraExportError(f"{pair.module} maps to {name}, which {base.file_name} does not have")
    rank = _check_shapes(pair, name, shape)
    expected = settings.rank_for(pair.module)
    if rank != expected:
        raise LoraExportError(f"{pair.module} has rank {rank}, but the adapter config says {expected}")
    a, b = pair.a, pair.b
    # llama.cpp scales by gguf_alpha / rank; put whatever peft's scale differs by into B
    fold = settings.peft_scale(pair.module, rank) * rank / settings.gguf_alpha
    if not math.isclose(fold, 1.0, rel_tol=1e-6):
        b = b * np.float32(fold)
    if rope_heads is not None:
        b = _rope_rows(b, base, name, rope_heads)
    if pair.embedding:
        a = a.T  # (vocab, r): llama.cpp picks rows of lora_a by token id
    return [(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32)),
            (f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))]


def _base_tensor(module: str, base: BaseModel) -> tuple[str, int | None]:
    """The base tensor a Hugging Face module's weight became, and for Q and K their head count."""
    import gguf

    found = base.names.get_type_and_name(f"{module}.weight", try_suffixes=(".weight",))
    if found is None:
        raise LoraExportError(f"{module} has no tensor in a {base.architecture} model; "
                              "llama.cpp cannot apply a LoRA to it")
    tensor_type, name = found
    heads = {gguf.MODEL_TENSOR.ATTN_Q: base.n_head, gguf.MODEL_TENSOR.ATTN_K: base.n_head_kv}
    return name, heads.get(tensor_type)


def _check_shapes(pair: LoraPair, name: str, base_shape: tuple[int, ...]) -> int:
    """The pair's rank, after checking it against the base tensor's ggml shape."""
    if pair.a.ndim != 2 or pair.b.ndim != 2 or len(base_shape) != 2:
        raise LoraExportError(f"{pair.module}: lampstand exports LoRAs of 2-D weights only "
                              f"(base {name} is {list(base_shape)})")
    rank = pair.a.shape[0]
    if pair.b.shape[1] != rank:
        raise LoraExportError(f"{pair.module}: lora_A is {list(pair.a.shape)} but lora_B is {list(pair.b.shape)}")
    # a Linear's weight is (out, in), ggml ne = [in, out]; an embedding's is (vocab, embd), ne = [embd, vocab]
    n_in, n_out = (base_shape[1], base_shape[0]) if pair.embedding else base_shape
    if pair.a.shape[1] != n_in or pair.b.shape[0] != n_out:
        raise LoraExportError(
            f"{pair.module}: lora_A {list(pair.a.shape)} and lora_B {list(pair.b.shape)} do not fit "
            f"{name}, which is {n_out} x {n_in} in the base (wrong base model?)"
        )
    return rank


def _rope_rows(b: np.ndarray, base: BaseModel, name: str, n_head: int) -> np.ndarray:
    """lora_b's rows in the order llama.cpp's converter gave the base's Q or K rows."""
    if base.architecture in UNPERMUTED_QK:
        return b
    if base.architecture not in PERMUTED_QK:
        raise LoraExportError(
            f"lampstand does not know whether llama.cpp reorders Q/K rows for {base.architecture!r}; "
            "leave q_proj and k_proj out of target_modules"
        )
    rows, rank = b.shape
    if rows % (2 * n_head):
        raise LoraExportError(f"{name} has {rows} rows, not a whole number of heads of {n_head}")
    # per head, HF rotates row i with row i + d/2; llama.cpp's rope rotates rows 2i and 2i + 1
    halves = b.reshape(n_head, 2, rows // n_head // 2, rank)  # (head, half, pair, r)
    return halves.swapaxes(1, 2).reshape(rows, rank)  # (head, pair, half, r) -> (out, r)


def _check_tied_embedding(pairs: list[LoraPair], base: BaseModel) -> None:
    """With tied embeddings llama.cpp also runs the output projection through token_embd's LoRA,
    whose shapes are for the lookup, not a matmul; refuse rather than write a file that aborts."""
    if any(pair.embedding for pair in pairs) and _TIED_OUTPUT_NAME not in base.tensor_shapes:
        raise LoraExportError(
            f"{base.file_name} ties its output projection to the token embedding, so llama.cpp cannot "
            "apply an embedding LoRA to it; leave embed_tokens out of target_modules"
        )


# -- writing ------------------------------------------------------------------------------------

def _write_atomically(out_path: Path, architecture: str, metadata: dict[str, str | float],
                      tensors: list[tuple[str, np.ndarray]]) -> None:
    """Write the GGUF to a temporary file beside `out_path`, then rename it into place."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    publish_file(out_path, lambda temp: _write_gguf(temp, architecture, metadata, tensors),
                 temp=reserve_temp(out_path, prefix=f".{out_path.name}."))


def _write_gguf(path: Path, architecture: str, metadata: dict[str, str | float],
                tensors: list[tuple[str, np.ndarray]]) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    for key, value in metadata.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_float32(key, value)  # llama.cpp reads adapter.lora.alpha as f32 only
    for name, array in tensors:
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
