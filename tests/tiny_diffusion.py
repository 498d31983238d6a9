"""Tiny random-weight diffusion pipelines for tests, saved in the libraries' real on-disk formats.

Every component is built from its library's own config class (diffusers' `UNet2DConditionModel`,
`AutoencoderKL` and schedulers, transformers' `CLIPTextModel`) at a few thousand parameters and
saved with `save_pretrained`, so the plugin loads them exactly as it loads a real model. The CLIP
tokenizer's `vocab.json` and `merges.txt` are written here by hand (the hub is out of reach): the
256 byte-level symbols, each also as an end-of-word token, and a handful of merges.

`write_tiny_single_file` turns the SD folder into one original-layout (LDM) checkpoint, the kind
a user downloads as `model.safetensors`, by renaming diffusers' keys back to the original ones;
diffusers' own converter must then read it back into the same weights.

Each writer takes a second or two on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "write_not_a_lora",
    "write_tiny_sd",
    "write_tiny_sdxl",
    "write_tiny_single_file",
    "write_tiny_style_lora",
]

LATENT_SIZE = 32  # the UNet's sample_size; images are 64 x 64 (the tiny VAE scales by 2)
MERGES = ("a t", "t h", "th e</w>", "c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>")
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
}


def _write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer folder: byte-level symbols, end-of-word variants, a few merges."""
    from tokenizers import pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*symbols, *(s + "</w>" for s in symbols)]
    tokens += [a + b for a, b in (m.split(" ") for m in MERGES)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }))


def _vocab_size(folder: Path) -> int:
    return len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))


def _text_encoder(vocab_size: int, projection: bool = False, hidden: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=hidden,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1, sample_size=2 * LATENT_SIZE,
    )


def write_tiny_sd(out: Path) -> Path:
    """A StableDiffusionPipeline folder (model_index.json and one folder per component) at `out`."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=LATENT_SIZE, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    _write_tokenizer(out / "tokenizer")
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=_text_encoder(_vocab_size(out / "tokenizer")),
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"), unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    _write_tokenizer(out / "tokenizer")  # the hand-written files, whatever save_pretrained wrote beside them
    return out


def write_tiny_sdxl(out: Path) -> Path:
    """A StableDiffusionXLPipeline folder: two text encoders (the second with a projection)."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    time_dim = 8
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=LATENT_SIZE, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2), norm_num_groups=8,
        # 6 micro-conditioning numbers (sizes, crop) of time_dim each, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * time_dim + 32,
        cross_attention_dim=64,  # both encoders' hidden states side by side: 32 + 32
    )
    for name in ("tokenizer", "tokenizer_2"):
        _write_tokenizer(out / name)
    vocab = _vocab_size(out / "tokenizer")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(vocab), text_encoder_2=_text_encoder(vocab, projection=True),
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(out / "tokenizer_2"), unet=unet,
        scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG, steps_offset=1, timestep_spacing="leading"),
    )
    pipe.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        _write_tokenizer(out / name)
    return out


def write_tiny_style_lora(pipeline_folder: Path, out_file: Path, seed: int, text_encoder: bool = True) -> Path:
    """A LoRA `.safetensors` for the folder's UNet (and first text encoder), non-zero random weights.

    peft puts the adapter on the attention projections; `init_lora_weights=False` draws both
    LoRA matrices at random, so the adapter changes the output from the first step. The file is
    written by the pipeline class's own `save_lora_weights` (diffusers' key layout).
    """
    import torch
    from diffusers import (
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import CLIPTextModel

    kind = json.loads((pipeline_folder / "model_index.json").read_text())["_class_name"]
    pipeline_cls = StableDiffusionXLPipeline if kind == "StableDiffusionXLPipeline" else StableDiffusionPipeline
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(pipeline_folder, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers: dict[str, Any] = {"unet_lora_layers": get_peft_model_state_dict(unet)}
    if text_encoder:
        encoder = CLIPTextModel.from_pretrained(pipeline_folder, subfolder="text_encoder")
        encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(encoder)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    pipeline_cls.save_lora_weights(out_file.parent, weight_name=out_file.name, **layers)
    return out_file


def write_not_a_lora(out_file: Path) -> Path:
    """A valid `.safetensors` file whose tensors belong to no LoRA of any pipeline."""
    import torch
    from safetensors.torch import save_file

    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({"classifier.weight": torch.ones(3, 3), "classifier.bias": torch.zeros(3)}, str(out_file))
    return out_file


# -- the original (LDM) single-file layout --

def _unet_to_ldm(state: dict[str, Any], layers_per_block: int, n_blocks: int) -> dict[str, Any]:
    """diffusers UNet keys -> `model.diffusion_model.*` keys of the original SD checkpoints."""
    renames = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
               ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
               ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
               ("mid_block.resnets.1.", "middle_block.2.")]
    per = layers_per_block + 1  # an input block per resnet, plus one for the downsampler
    for b in range(n_blocks):
        for j in range(layers_per_block):
            renames += [(f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{1 + b * per + j}.0."),
                        (f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{1 + b * per + j}.1.")]
        renames.append((f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{(b + 1) * per}.0.op."))
        for j in range(per):  # up blocks have one more resnet than down blocks
            renames += [(f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{b * per + j}.0."),
                        (f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{b * per + j}.1.")]
    resnet_parts = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if "resnets" in parts:  # "<block>.resnets.<j>.<part>.<weight|bias>"
            at = parts.index("resnets") + 2
            parts[at] = resnet_parts.get(parts[at], parts[at])
        new = ".".join(parts)
        if key.startswith("up_blocks.") and ".upsamplers.0.conv." in key:
            b = int(parts[1])
            has_attention = any(k.startswith(f"up_blocks.{b}.attentions.") for k in state)
            slot = 2 if has_attention else 1  # the upsampler follows the resnet, and the attention if any
            new = new.replace(f"up_blocks.{b}.upsamplers.0.conv.", f"output_blocks.{b * per + per - 1}.{slot}.conv.")
        for old, ldm in renames:
            if new.startswith(old):
                new = ldm + new[len(old):]
                break
        out["model.diffusion_model." + new] = tensor
    return out


def _vae_to_ldm(state: dict[str, Any], n_blocks: int) -> dict[str, Any]:
    """diffusers AutoencoderKL keys -> `first_stage_model.*` keys; attention linears become 1x1 convs."""
    renames = [("encoder.mid_block.resnets.0.", "encoder.mid.block_1."),
               ("encoder.mid_block.resnets.1.", "encoder.mid.block_2."),
               ("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
               ("decoder.mid_block.resnets.0.", "decoder.mid.block_1."),
               ("decoder.mid_block.resnets.1.", "decoder.mid.block_2."),
               ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
               ("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for i in range(n_blocks):
        renames += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                    (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                    # the original decoder counts its levels from the bottom
                    (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n_blocks - 1 - i}.block."),
                    (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n_blocks - 1 - i}.upsample.")]
    parts = [(".conv_shortcut.", ".nin_shortcut."), (".group_norm.", ".norm."), (".to_q.", ".q."),
             (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".proj_out.")]
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        new = key
        for old, ldm in renames:
            if new.startswith(old):
                new = ldm + new[len(old):]
                break
        for old, ldm in parts:
            new = new.replace(old, ldm)
        if ".attn_1." in new and new.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # (out, in) -> (out, in, 1, 1): the original used convs
        out["first_stage_model." + new] = tensor
    return out


def write_tiny_single_file(pipeline_folder: Path, out_file: Path) -> Path:
    """The SD folder's weights as one original-layout checkpoint (`model.diffusion_model.*`,
    `first_stage_model.*`, `cond_stage_model.transformer.text_model.*`), loadable with
    `StableDiffusionPipeline.from_single_file(out_file, config=pipeline_folder)`.

    A `.safetensors` name writes safetensors; a `.ckpt` name writes the older pickled layout,
    `{"state_dict": ...}` saved by `torch.save`.
    """
    import torch
    from safetensors.torch import load_file, save_file

    unet_config = json.loads((pipeline_folder / "unet" / "config.json").read_text())
    vae_config = json.loads((pipeline_folder / "vae" / "config.json").read_text())
    unet = load_file(str(pipeline_folder / "unet" / "diffusion_pytorch_model.safetensors"))
    vae = load_file(str(pipeline_folder / "vae" / "diffusion_pytorch_model.safetensors"))
    text = load_file(str(pipeline_folder / "text_encoder" / "model.safetensors"))
    checkpoint = {
        **_unet_to_ldm(unet, unet_config["layers_per_block"], len(unet_config["block_out_channels"])),
        **_vae_to_ldm(vae, len(vae_config["block_out_channels"])),
        # the original files hold transformers' older layout, with the `text_model.` level
        **{"cond_stage_model.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k: v
           for k, v in text.items()},
    }
    checkpoint = {k: v.contiguous() for k, v in checkpoint.items()}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.suffix == ".ckpt":
        torch.save({"state_dict": checkpoint}, out_file)
    else:
        save_file(checkpoint, str(out_file))
    return out_file
