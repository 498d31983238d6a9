"""GGUF LoRA export and check, on the bundled SmolLM2 with real engines.

A peft LoRA with seeded random weights on every projection is exported with `export_gguf_lora`;
llama.cpp with the GGUF LoRA must then continue prompts greedily exactly as transformers does with
the peft adapter. The base is Q4_1 and transformers dequantizes the same weights, so the base alone
matches too on these prompts (checked first); llama.cpp's quantized matmuls still differ a little,
which is why the prompts are fixed and the logit check below compares with a tolerance.

A second adapter on Q and K only shows that the export's row permutation for llama's rope layout
is needed: without it the adapter's effect on the logits is wrong. `check_lora` must accept the
export and refuse files that would make llama.cpp fail or abort.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from lampstand.plugins.errors import InvalidModelFile
from lampstand.plugins.llama_cpp.lora_check import AdapterMismatch, LoraInfo, check_lora
from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path
from lampstand.training.gguf_lora import LoraExportError, export_gguf_lora

from crafted_gguf import write_lora

SMOLLM = bundled_path(BUNDLED_MODELS[0])
N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_VOCAB = 30, 576, 9, 3, 49152  # SmolLM2-135M
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 8, 16
B_SCALE = 0.03  # lora_B ~ N(0, B_SCALE): changes greedy text without making it noise
QK_B_SCALE = 0.1  # larger for the Q/K-only adapter, so a wrong row order shows in the logits
BASE_SHA256 = "5" * 64
N_NEW_TOKENS = 12
# prompts where llama.cpp and transformers agree on the base, chosen among ~25 for the widest lead
# of transformers' top token over its runner-up at every step (0.15-0.38 logits, base and adapter),
# so that the engines' small numeric differences do not decide them; two use SmolLM2's chat template
PROMPTS = [
    "Dear Sir or Madam,",
    "The largest planet in the solar system is",
    "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\n",
]
LOGIT_PROMPT = "Once upon a time there was a little girl who lived in a village near the forest"
MAX_EFFECT_ERROR = 0.35  # |llama.cpp effect - peft effect| / |peft effect|; measured about 0.2
MIN_UNPERMUTED_ERROR = 0.8  # a scrambled Q/K delta is unrelated to the right one: about sqrt(2)


# -- engines ----------------------------------------------------------------------------------

@dataclass
class PeftSetup:
    model: Any  # a peft PeftModel over SmolLM2 with adapters "default" and "qk"
    folder: Path  # where save_pretrained wrote them: "default" at the top, "qk" in qk/


@pytest.fixture(scope="module")
def peft(tmp_path_factory: pytest.TempPathFactory) -> PeftSetup:
    """SmolLM2 in transformers from the GGUF, with two seeded random adapters saved to disk."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    assert SMOLLM is not None, "the bundled SmolLM2 package is not installed"
    base = AutoModelForCausalLM.from_pretrained(SMOLLM.parent, gguf_file=SMOLLM.name, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS))
    model.add_adapter("qk", LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                       target_modules=["q_proj", "k_proj"]))
    _randomize(model, "default", B_SCALE, seed=0)
    _randomize(model, "qk", QK_B_SCALE, seed=1)
    model.eval()
    folder = tmp_path_factory.mktemp("peft")
    model.save_pretrained(str(folder))
    return PeftSetup(model, folder)


def _randomize(model: Any, adapter: str, b_scale: float, seed: int) -> None:
    """lora_B starts at zero (a no-op adapter); give A and B seeded random values."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"lora_A.{adapter}." in name:  # (r, in)
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1]))
            elif f"lora_B.{adapter}." in name:  # (out, r)
                param.copy_(torch.randn(param.shape, generator=generator) * b_scale)


@dataclass
class Exports:
    lora: Path  # the "default" adapter on every projection
    qk: Path  # the Q/K-only adapter
    qk_unpermuted: Path  # the same with lora_b rows in Hugging Face's order


@pytest.fixture(scope="module")
def exports(peft: PeftSetup, tmp_path_factory: pytest.TempPathFactory) -> Exports:
    assert SMOLLM is not None
    out = tmp_path_factory.mktemp("gguf")
    made = Exports(out / "lora.gguf", out / "qk.gguf", out / "qk-unpermuted.gguf")
    export_gguf_lora(peft.folder, SMOLLM, made.lora, base_sha256=BASE_SHA256)
    export_gguf_lora(peft.folder / "qk", SMOLLM, made.qk)
    rewrite_lora(made.qk, made.qk_unpermuted, edit=_undo_rope_permutation)
    return made


@dataclass
class LlamaEngine:
    """One llama.cpp model and context, with GGUF LoRAs switched through the low-level API."""

    llm: Any
    adapters: dict[Path, Any] = field(default_factory=dict)

    def use(self, lora: Path | None) -> None:
        import llama_cpp

        if lora is None:
            llama_cpp.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
        else:
            if lora not in self.adapters:
                self.adapters[lora] = llama_cpp.llama_adapter_lora_init(self.llm.model, str(lora).encode())
                assert self.adapters[lora], f"llama.cpp refused {lora.name}"
            pointers = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.adapters[lora])
            llama_cpp.llama_set_adapters_lora(self.llm.ctx, pointers, 1, (ctypes.c_float * 1)(1.0))
        self.llm.reset()  # the KV cache holds what the previous adapter computed

    def greedy(self, lora: Path | None, ids: list[int]) -> list[int]:
        self.use(lora)
        tokens: list[int] = []
        for token in self.llm.generate(ids, top_k=1, temp=0.0, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            tokens.append(token)
            if token == self.llm.token_eos() or len(tokens) == N_NEW_TOKENS:
                break
        return tokens

    def logits(self, lora: Path | None, ids: list[int]) -> np.ndarray:
        self.use(lora)
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)])  # (tokens, vocab)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(SMOLLM), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    engine = LlamaEngine(llm)
    yield engine
    llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
    for pointer in engine.adapters.values():
        llama_cpp.llama_adapter_lora_free(pointer)
    llm.close()


def hf_greedy(model: Any, adapter: str | None, ids: list[int]) -> tuple[list[int], list[float]]:
    """Greedy tokens from transformers, and at each step how far the winner led the runner-up."""
    import torch

    with _adapter(model, adapter), torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=N_NEW_TOKENS, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
    margins = [float(top[0] - top[1]) for top in (torch.topk(step[0], 2).values for step in out.scores)]
    return out.sequences[0, len(ids):].tolist(), margins


def hf_logits(model: Any, adapter: str | None, ids: list[int]) -> np.ndarray:
    import torch

    with _adapter(model, adapter), torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].numpy()  # (tokens, vocab)


def _adapter(model: Any, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
    if adapter is None:
        return model.disable_adapter()
    model.set_adapter(adapter)
    return contextlib.nullcontext()


def matching_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


# -- the export against peft ------------------------------------------------------------------

def test_check_lora_accepts_the_export(exports: Exports) -> None:
    assert SMOLLM is not None
    info = check_lora(exports.lora, SMOLLM)
    assert info == LoraInfo(architecture="llama", alpha=float(ALPHA), rank=RANK,
                            tensor_count=2 * len(TARGETS) * N_LAYER, base_sha256=BASE_SHA256)
    assert check_lora(exports.qk, SMOLLM).base_sha256 is None


@pytest.mark.parametrize("prompt", PROMPTS)
def test_llama_cpp_with_the_export_continues_like_peft(
    prompt: str, peft: PeftSetup, exports: Exports, engine: LlamaEngine
) -> None:
    ids = engine.llm.tokenize(prompt.encode(), add_bos=True, special=True)
    base_cpp = engine.greedy(None, ids)
    base_hf, _ = hf_greedy(peft.model, None, ids)
    assert base_cpp == base_hf, "the engines disagree on the base alone; this prompt cannot test the adapter"

    lora_cpp = engine.greedy(exports.lora, ids)
    lora_hf, margins = hf_greedy(peft.model, "default", ids)
    agree = matching_prefix(lora_cpp, lora_hf)
    detail = (f"{agree} of {len(lora_hf)} tokens match: llama.cpp {engine.llm.detokenize(lora_cpp)!r}, "
              f"transformers {engine.llm.detokenize(lora_hf)!r}; transformers' lead at the first "
              f"difference: {margins[agree] if agree < len(margins) else None}")
    assert lora_cpp == lora_hf, detail
    assert lora_cpp != base_cpp, "the adapter did not change llama.cpp's continuation"


def test_lora_effect_matches_peft_and_needs_the_qk_permutation(
    peft: PeftSetup, exports: Exports, engine: LlamaEngine
) -> None:
    """The adapter's change to every position's logits, llama.cpp against transformers."""
    ids = engine.llm.tokenize(LOGIT_PROMPT.encode(), add_bos=True, special=True)
    base_cpp, base_hf = engine.logits(None, ids), hf_logits(peft.model, None, ids)

    def effect_error(lora: Path, adapter: str) -> float:
        effect_cpp = engine.logits(lora, ids) - base_cpp
        effect_hf = hf_logits(peft.model, adapter, ids) - base_hf
        return float(np.linalg.norm(effect_cpp - effect_hf) / np.linalg.norm(effect_hf))

    errors = {name: effect_error(path, adapter) for name, path, adapter in (
        ("all projections", exports.lora, "default"),
        ("q/k", exports.qk, "qk"),
        ("q/k unpermuted", exports.qk_unpermuted, "qk"),
    )}
    assert errors["all projections"] < MAX_EFFECT_ERROR, errors
    assert errors["q/k"] < MAX_EFFECT_ERROR, errors
    assert errors["q/k unpermuted"] > MIN_UNPERMUTED_ERROR, errors


# -- check_lora refusals ----------------------------------------------------------------------

Tensors = dict[str, np.ndarray]


def rewrite_lora(source: Path, target: Path, *, edit: Callable[[Tensors], Tensors] = lambda t: t,
                 architecture: str = "llama", alpha: float | Callable[[gguf.GGUFWriter], None] = ALPHA) -> Path:
    """Copy a GGUF LoRA's tensors through `edit` into a new adapter file."""
    tensors = {tensor.name: np.array(tensor.data) for tensor in gguf.GGUFReader(source).tensors}
    return write_lora(target, edit(tensors), architecture=architecture, alpha=alpha)


def _undo_rope_permutation(tensors: Tensors) -> Tensors:
    """Put lora_b's Q and K rows back in Hugging Face's per-head order (the export's inverse)."""
    out = dict(tensors)
    for name, b in tensors.items():
        heads = N_HEAD if ".attn_q." in name else N_HEAD_KV if ".attn_k." in name else 0
        if heads and name.endswith(".lora_b"):
            rows, rank = b.shape
            out[name] = b.reshape(heads, rows // heads // 2, 2, rank).swapaxes(1, 2).reshape(rows, rank)
    return out


def _renamed(old: str, new: str) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {name.replace(old, new): array for name, array in tensors.items()}


def _dropped(name: str) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {key: array for key, array in tensors.items() if key != name}


def _replaced(name: str, array: np.ndarray) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {**tensors, name: array}


def _base_as_lora(export: Path, tmp: Path) -> Path:
    assert SMOLLM is not None
    return SMOLLM


def _truncated(export: Path, tmp: Path) -> Path:
    data = export.read_bytes()
    (tmp / "truncated.gguf").write_bytes(data[: len(data) // 2])
    return tmp / "truncated.gguf"


def _other_architecture(export: Path, tmp: Path) -> Path:
    pair = {"blk.0.attn_q.weight.lora_a": np.zeros((RANK, 64), np.float32),
            "blk.0.attn_q.weight.lora_b": np.zeros((64, RANK), np.float32)}
    return write_lora(tmp / "qwen2.gguf", pair, architecture="qwen2", alpha=ALPHA)


def _rewritten(edit: Callable[[Tensors], Tensors], **options: Any) -> Callable[[Path, Path], Path]:
    return lambda export, tmp: rewrite_lora(export, tmp / "edited.gguf", edit=edit, **options)


EMBEDDING_PAIR = {"token_embd.weight.lora_a": np.zeros((N_VOCAB, RANK), np.float32),  # ne [r, vocab]
                  "token_embd.weight.lora_b": np.zeros((N_EMBD, RANK), np.float32)}  # ne [r, embd]

REFUSED_LORAS: list[tuple[str, Callable[[Path, Path], Path], type[Exception], str]] = [
    ("base model given as the adapter", _base_as_lora, InvalidModelFile, "not a LoRA adapter"),
    ("truncated", _truncated, InvalidModelFile, "truncated"),
    ("other architecture", _other_architecture, AdapterMismatch, "'qwen2'"),
    ("tensor missing from the base", _rewritten(_renamed("blk.3.attn_k.", "blk.77.attn_k.")), AdapterMismatch,
     "'blk.77.attn_k.weight', which SmolLM2"),
    ("lora_b without lora_a", _rewritten(_dropped("blk.0.ffn_up.weight.lora_a")), InvalidModelFile,
     "blk.0.ffn_up.weight.lora_a is missing"),
    ("lora_a of the wrong width",
     _rewritten(_replaced("blk.0.attn_v.weight.lora_a", np.zeros((RANK, 512), np.float32))),
     AdapterMismatch, "does not fit"),
    ("lora_a and lora_b of different ranks",
     _rewritten(_replaced("blk.0.attn_v.weight.lora_b", np.zeros((192, 4), np.float32))),
     AdapterMismatch, "does not fit"),
    ("lora_a transposed",
     _rewritten(_replaced("blk.0.attn_output.weight.lora_a", np.zeros((N_EMBD, RANK), np.float32))),
     AdapterMismatch, "does not fit"),
    ("a tensor that is no LoRA half",
     _rewritten(_replaced("blk.0.attn_q.weight.delta", np.zeros((4, 4), np.float32))),
     InvalidModelFile, "not a .lora_a or .lora_b"),
    # llama.cpp asserts (and so aborts) on an alpha of any type but f32
    ("alpha stored as float64",
     _rewritten(lambda t: t, alpha=lambda w: w.add_float64(gguf.Keys.Adapter.LORA_ALPHA, 16.0)),
     InvalidModelFile, "must be a float32"),
    # with tied embeddings llama.cpp runs the output matmul through the lookup-shaped pair: abort
    ("embedding LoRA on a tied base", _rewritten(lambda t: {**t, **EMBEDDING_PAIR}), AdapterMismatch,
     "ties to its output"),
]


@pytest.mark.parametrize(("make", "error", "message"), [case[1:] for case in REFUSED_LORAS],
                         ids=[case[0] for case in REFUSED_LORAS])
def test_check_lora_refuses(make: Callable[[Path, Path], Path], error: type[Exception], message: str,
                            exports: Exports, tmp_path: Path) -> None:
    assert SMOLLM is not None
    lora = make(exports.lora, tmp_path)
    with pytest.raises(error) as caught:
        check_lora(lora, SMOLLM)
    text = str(caught.value)
    assert message in text
    assert str(tmp_path) not in text and str(SMOLLM.parent) not in text, "messages name files by base name only"


# -- export refusals, on small hand-written peft folders ------------------------------------

def q_proj_pair(module: str = "model.layers.0.self_attn.q_proj", rank: int = 2,
                n_in: int = N_EMBD) -> dict[str, Any]:
    import torch

    prefix = f"base_model.model.{module}"
    return {f"{prefix}.lora_A.weight": torch.ones(rank, n_in),
            f"{prefix}.lora_B.weight": torch.ones(N_EMBD, rank)}


def write_peft_folder(folder: Path, config: dict[str, Any] | None = None,
                      weights: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    body = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "bias": "none",
            "use_dora": False, "modules_to_save": None, "init_lora_weights": True, **(config or {})}
    (folder / "adapter_config.json").write_text(json.dumps(body))
    save_file(q_proj_pair() if weights is None else weights, str(folder / "adapter_model.safetensors"))
    return folder


def _with(extra: dict[str, Any]) -> dict[str, Any]:
    return {**q_proj_pair(), **extra}


def _torch_zeros(*shape: int) -> Any:
    import torch

    return torch.zeros(*shape)


REFUSED_EXPORTS: list[tuple[str, dict[str, Any] | None, Callable[[], dict[str, Any]] | None, str]] = [
    ("DoRA", {"use_dora": True}, None, "DoRA"),
    ("not LoRA", {"peft_type": "IA3"}, None, "'IA3'"),
    ("modules_to_save", {"modules_to_save": ["lm_head"]}, None, "modules_to_save"),
    ("trained biases", {"bias": "lora_only"}, None, "bias"),
    ("PiSSA init", {"init_lora_weights": "pissa"}, None, "rewrites the base weights"),
    ("rank differs from the config", {"r": 4}, None, "rank 2, but the adapter config says 4"),
    ("full weights in the file", None, lambda: _with({"base_model.model.lm_head.weight": _torch_zeros(8, 8)}),
     "not a LoRA factor"),
    ("DoRA magnitude in the file", None,
     lambda: _with({"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": _torch_zeros(8)}),
     "DoRA"),
    ("lora_A alone", None,
     lambda: {k: v for k, v in q_proj_pair().items() if "lora_A" in k}, "not one lora_A.weight and one lora_B"),
    ("module llama.cpp has no tensor for", None,
     lambda: q_proj_pair("model.layers.0.self_attn.rotary_emb"), "has no tensor in a llama model"),
    ("layer past the base's last", None,
     lambda: q_proj_pair("model.layers.40.self_attn.q_proj"), "has no tensor in a llama model"),
    ("target missing from this base (tied lm_head)", None,
     lambda: q_proj_pair("lm_head"), "output.weight, which SmolLM2"),
    ("shape of another model", None, lambda: q_proj_pair(n_in=1024), "do not fit"),
    ("embedding LoRA on a tied base", None,
     lambda: {"base_model.model.model.embed_tokens.lora_embedding_A": _torch_zeros(2, N_VOCAB),
              "base_model.model.model.embed_tokens.lora_embedding_B": _torch_zeros(N_EMBD, 2)},
     "ties its output projection"),
]


@pytest.mark.parametrize(("config", "weights", "message"), [case[1:] for case in REFUSED_EXPORTS],
                         ids=[case[0] for case in REFUSED_EXPORTS])
def test_export_refuses(config: dict[str, Any] | None, weights: Callable[[], dict[str, Any]] | None,
                        message: str, tmp_path: Path) -> None:
    assert SMOLLM is not None
    folder = write_peft_folder(tmp_path / "adapter", config, None if weights is None else weights())
    out = tmp_path / "out"
    with pytest.raises(LoraExportError) as caught:
        export_gguf_lora(folder, SMOLLM, out / "adapter.gguf")
    assert message in str(caught.value)
    assert not out.exists() or not any(out.iterdir()), "a refused export leaves no file behind"


def test_rslora_scale_is_carried_by_alpha(tmp_path: Path) -> None:
    """rsLoRA scales by alpha / sqrt(r); llama.cpp divides by r, so the exported alpha is alpha * sqrt(r)."""
    assert SMOLLM is not None
    folder = write_peft_folder(tmp_path / "adapter", {"use_rslora": True, "r": 4, "lora_alpha": 8},
                               q_proj_pair(rank=4))
    export_gguf_lora(folder, SMOLLM, tmp_path / "rslora.gguf")
    info = check_lora(tmp_path / "rslora.gguf", SMOLLM)
    assert info.alpha == pytest.approx(8 * math.sqrt(4))
    assert info.rank == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
