"""A tiny LLaVA-1.5-style projector ("mmproj") GGUF for vision tests, with random weights.

The vision tower is a real `transformers` `CLIPVisionModel` built from a tiny config and
seeded random weights; the projector is LLaVA-1.5's two-layer MLP (linear, GELU, linear) whose
output width is the text model's embedding width. Both are written by `gguf.GGUFWriter` under
the tensor names (`gguf.TENSOR_NAMES`, the `V_*` and `V_MMPROJ` entries) and metadata keys
(`gguf.Keys.Clip`, `gguf.Keys.ClipVision`) that llama.cpp's mtmd/clip loader reads for
projector type "mlp". The answers a model gives with it are nonsense, but they depend on the
image, which is all a test of the plumbing needs.

torch and transformers are imported only inside `write_tiny_mmproj`.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

__all__ = ["IMAGE_SIZE", "IMAGE_TOKENS", "PATCH_SIZE", "write_tiny_mmproj"]

IMAGE_SIZE = 32  # pixels per side the tower reads (llama.cpp resizes every image to this)
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # one embedding per patch, the class token is dropped
HIDDEN = 32
FFN = 64  # must differ from HIDDEN: llama.cpp guesses old files' swapped fc1/fc2 from their shapes
HEADS = 2
LAYERS = 2  # LLaVA reads the second-to-last layer, so llama.cpp runs LAYERS - 1 of them
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _name(tensor: gguf.MODEL_TENSOR, suffix: str, bid: int | None = None) -> str:
    """The GGUF name of one tensor, e.g. `v.blk.0.attn_q.weight`."""
    base = gguf.TENSOR_NAMES[tensor]
    return (base.format(bid=bid) if bid is not None else base) + (f".{suffix}" if suffix else "")


def _text_embedding_length(text_gguf: Path) -> int:
    """The embedding width of the text model the projector feeds."""
    reader = gguf.GGUFReader(text_gguf)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    return int(reader.fields[gguf.Keys.LLM.EMBEDDING_LENGTH.format(arch=arch)].contents())


# Hugging Face CLIP layer parameter -> (GGUF tensor, suffix)
_LAYER_TENSORS = {
    "self_attn.q_proj": gguf.MODEL_TENSOR.V_ENC_ATTN_Q,
    "self_attn.k_proj": gguf.MODEL_TENSOR.V_ENC_ATTN_K,
    "self_attn.v_proj": gguf.MODEL_TENSOR.V_ENC_ATTN_V,
    "self_attn.out_proj": gguf.MODEL_TENSOR.V_ENC_ATTN_O,
    "layer_norm1": gguf.MODEL_TENSOR.V_ENC_INPUT_NORM,
    "layer_norm2": gguf.MODEL_TENSOR.V_ENC_POST_ATTN_NORM,
    "mlp.fc1": gguf.MODEL_TENSOR.V_ENC_FFN_UP,
    "mlp.fc2": gguf.MODEL_TENSOR.V_ENC_FFN_DOWN,
}


def _tower_tensors(seed: int) -> dict[str, np.ndarray]:
    """A seeded random CLIP vision tower, as GGUF tensor name -> float32 array."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                              num_attention_heads=HEADS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                              projection_dim=HIDDEN)
    state = {k: v.detach().float().numpy() for k, v in CLIPVisionModel(config).state_dict().items()}
    t = gguf.MODEL_TENSOR
    tensors = {
        _name(t.V_ENC_EMBD_CLS, ""): state["embeddings.class_embedding"],  # (HIDDEN,)
        _name(t.V_ENC_EMBD_PATCH, "weight"): state["embeddings.patch_embedding.weight"],  # (HIDDEN, 3, P, P)
        _name(t.V_ENC_EMBD_POS, "weight"): state["embeddings.position_embedding.weight"],  # (IMAGE_TOKENS + 1, HIDDEN)
        _name(t.V_PRE_NORM, "weight"): state["pre_layrnorm.weight"],
        _name(t.V_PRE_NORM, "bias"): state["pre_layrnorm.bias"],
    }
    for layer in range(LAYERS):
        for hf_name, tensor in _LAYER_TENSORS.items():
            for suffix in ("weight", "bias"):
                tensors[_name(tensor, suffix, layer)] = state[f"encoder.layers.{layer}.{hf_name}.{suffix}"]
    # LLaVA feeds the projector the second-to-last layer's output, before any post-layernorm,
    # so post_layernorm is left out (as LLaVA's own conversion does).
    return tensors


def _projector_tensors(n_embd_text: int, seed: int) -> dict[str, np.ndarray]:
    """LLaVA-1.5's MLP projector, `mm.0` (HIDDEN -> n_embd) and `mm.2` (n_embd -> n_embd).

    Scaled so an image embedding is about as large as a token embedding, so images do move
    the answer.
    """
    rng = np.random.default_rng(seed)
    mm = gguf.MODEL_TENSOR.V_MMPROJ

    def linear(n_in: int, n_out: int) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)  # (out, in)

    return {
        _name(mm, "weight", 0): linear(HIDDEN, n_embd_text),
        _name(mm, "bias", 0): np.zeros(n_embd_text, dtype=np.float32),
        _name(mm, "weight", 2): linear(n_embd_text, n_embd_text),
        _name(mm, "bias", 2): np.zeros(n_embd_text, dtype=np.float32),
    }


def write_tiny_mmproj(out: Path, text_gguf: Path, seed: int = 0) -> Path:
    """Write a tiny LLaVA-1.5 projector for the text model `text_gguf` to `out`; returns `out`."""
    n_embd_text = _text_embedding_length(text_gguf)
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    writer.add_name("lampstand tiny LLaVA-1.5 projector (random weights)")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, True)
    writer.add_bool(gguf.Keys.Clip.HAS_LLAVA_PROJECTOR, True)
    writer.add_string(gguf.Keys.Clip.PROJECTOR_TYPE, "mlp")
    writer.add_uint32(gguf.Keys.ClipVision.IMAGE_SIZE, IMAGE_SIZE)
    writer.add_uint32(gguf.Keys.ClipVision.PATCH_SIZE, PATCH_SIZE)
    writer.add_uint32(gguf.Keys.ClipVision.EMBEDDING_LENGTH, HIDDEN)
    writer.add_uint32(gguf.Keys.ClipVision.FEED_FORWARD_LENGTH, FFN)
    writer.add_uint32(gguf.Keys.ClipVision.PROJECTION_DIM, n_embd_text)
    writer.add_uint32(gguf.Keys.ClipVision.BLOCK_COUNT, LAYERS)
    writer.add_uint32(gguf.Keys.ClipVision.Attention.HEAD_COUNT, HEADS)
    writer.add_float32(gguf.Keys.ClipVision.Attention.LAYERNORM_EPS, 1e-5)
    writer.add_array(gguf.Keys.ClipVision.IMAGE_MEAN, CLIP_MEAN)
    writer.add_array(gguf.Keys.ClipVision.IMAGE_STD, CLIP_STD)
    writer.add_bool(gguf.Keys.ClipVision.USE_GELU, False)  # CLIP's quick_gelu
    tensors = {**_tower_tensors(seed), **_projector_tensors(n_embd_text, seed)}
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
