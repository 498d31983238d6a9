"""What a configured diffusion model is on disk, read without loading a weight.

A model is a diffusers folder (`model_index.json` plus one folder per component) or one
original-layout checkpoint (`.safetensors` or `.ckpt`, the kind A1111 and ComfyUI read). This
module tells the two apart, finds the pipeline kind (SD 1.x/2.x or SDXL) from the folder's
`_class_name` or the checkpoint's key names, counts parameter bytes from safetensors headers,
and finds the component configs a single file needs. It never imports diffusers, and torch
only to read a `.ckpt`'s keys.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lampstand.plugins.errors import ModelUnavailable
from lampstand.plugins.sources import fetch_from_hub

__all__ = ["HUB_FILES", "ModelSource", "PipelineKind", "component_config_folder", "native_size", "open_source"]

PipelineKind = Literal["sd", "sdxl"]
PIPELINE_CLASSES: dict[str, PipelineKind] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
WEIGHT_FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                "text_encoder": "model", "text_encoder_2": "model"}  # component -> weights file stem
WEIGHT_COMPONENTS = tuple(WEIGHT_FILES)
CONFIG_FILES = ("*.json", "*.txt")  # model_index, component configs, scheduler, tokenizers
# What a pipeline repo named by `hf` is fetched with: configs and the components' plain
# safetensors (whole or sharded), not the fp16 copies, the .bin/.ckpt formats, the whole-model
# checkpoints at the repo's top or the safety checker.
HUB_FILES = CONFIG_FILES + tuple(f"{component}/{stem}{tail}" for component, stem in WEIGHT_FILES.items()
                                 for tail in (".safetensors", "-0*.safetensors"))
# The repo whose configs a bare checkpoint of each kind was made from (diffusers' own choice).
DEFAULT_CONFIG_REPOS = {
    "sd": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
SDXL_KEY_PREFIX = "conditioner.embedders."
SD_KEY_PREFIX = "model.diffusion_model."
SD2_CROSS_ATTENTION_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors file, as its header describes it."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def safetensors_header(path: Path) -> dict[str, Tensor]:
    """The tensors a safetensors file declares (8-byte length, then a JSON header)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8) or b"\0" * 8)
        if not 0 < length <= MAX_HEADER:
            raise ValueError(f"{path.name} is not a safetensors file")
        header = json.loads(f.read(length))
    return {name: Tensor(info["dtype"], tuple(info["shape"]))
            for name, info in header.items() if name != "__metadata__"}


def _ckpt_keys(path: Path) -> dict[str, Tensor]:
    """A pickled checkpoint's tensors, read memory-mapped and without running its code."""
    import torch

    data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    state = data.get("state_dict", data) if isinstance(data, dict) else {}
    return {k: Tensor(str(v.dtype), tuple(v.shape)) for k, v in state.items() if hasattr(v, "shape")}


@dataclass(frozen=True)
class ModelSource:
    """A diffusers folder or a single checkpoint, and what kind of pipeline it holds."""

    path: Path
    single_file: bool
    kind: PipelineKind
    sd2: bool = False  # a single SD 2.x checkpoint (its configs come from another repo)

    def weight_numels(self) -> dict[str, int]:
        """Parameters per component (the whole file for a checkpoint), from headers only."""
        if self.single_file:
            tensors = (safetensors_header(self.path) if self.path.suffix == ".safetensors" else None)
            if tensors is None:
                return {"checkpoint": self.path.stat().st_size // 4}  # a .ckpt: assume float32
            return {"checkpoint": sum(t.numel for k, t in tensors.items() if not k.startswith("model_ema."))}
        return {name: _folder_numel(self.path / name) for name in WEIGHT_COMPONENTS
                if (self.path / name).is_dir()}

    def weights_bytes(self, bytes_per_value: int) -> tuple[int, int]:
        """(all weights, the largest component) in bytes at `bytes_per_value` a parameter."""
        numels = self.weight_numels()
        total = sum(numels.values())
        largest = numels.get("unet", 0) if not self.single_file else total * 3 // 4  # the UNet's usual share
        return total * bytes_per_value, largest * bytes_per_value


def _folder_numel(folder: Path) -> int:
    """Parameters of one component folder: its safetensors files, the non-variant ones if any."""
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if f.name.count(".") == 1]  # `model.fp16.safetensors` is a variant
    total = 0
    for file in plain or files:
        total += sum(t.numel for t in safetensors_header(file).values())
    if not files:  # an older folder with pickled weights: count float32 bytes
        total = sum(f.stat().st_size for f in folder.glob("*.bin")) // 4
    return total


def open_source(path: Path, forced: Literal["auto", "sd", "sdxl"], read_pickle: bool = True) -> ModelSource:
    """The model at `path`; `ModelUnavailable` when it is neither a pipeline folder nor a checkpoint.

    Without `read_pickle` (an estimate, which must not import torch) a `.ckpt` is taken for the
    forced kind or SD.
    """
    if path.is_dir():
        return ModelSource(path, single_file=False, kind=_folder_kind(path, forced))
    if path.is_file() and path.suffix.lower() == ".ckpt" and not read_pickle:
        return ModelSource(path, single_file=True, kind="sd" if forced == "auto" else forced)
    if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        try:
            tensors = safetensors_header(path) if path.suffix.lower() == ".safetensors" else _ckpt_keys(path)
        except Exception as exc:  # damaged header, a pickle torch refuses
            raise ModelUnavailable(f"{path.name} is not a readable checkpoint: {exc}") from exc
        kind, sd2 = _checkpoint_kind(path, tensors, forced)
        return ModelSource(path, single_file=True, kind=kind, sd2=sd2)
    raise ModelUnavailable(f"{path.name} is not a diffusers folder (model_index.json) nor a .safetensors or "
                           ".ckpt checkpoint")


def _folder_kind(path: Path, forced: Literal["auto", "sd", "sdxl"]) -> PipelineKind:
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelUnavailable(f"{path.name} is not a diffusers pipeline folder (no model_index.json)")
    try:
        class_name = str(json.loads(index.read_text(encoding="utf-8")).get("_class_name", ""))
    except (ValueError, AttributeError) as exc:
        raise ModelUnavailable(f"{path.name}/model_index.json is not valid JSON: {exc}") from exc
    if forced != "auto":
        return forced
    if class_name not in PIPELINE_CLASSES:
        raise ModelUnavailable(f"{path.name} holds a {class_name or 'unnamed'} pipeline; the diffusers plugin "
                               f"runs {' and '.join(PIPELINE_CLASSES)} (set pipeline = \"sd\" or \"sdxl\" to force)")
    return PIPELINE_CLASSES[class_name]


def _checkpoint_kind(path: Path, tensors: dict[str, Tensor],
                     forced: Literal["auto", "sd", "sdxl"]) -> tuple[PipelineKind, bool]:
    cross = tensors.get(SD2_CROSS_ATTENTION_KEY)
    sd2 = cross is not None and cross.shape[-1] == 1024  # SD 2.x attends to 1024-wide OpenCLIP states
    if forced != "auto":
        return forced, sd2 and forced == "sd"
    if any(k.startswith(SDXL_KEY_PREFIX) for k in tensors):
        return "sdxl", False
    if any(k.startswith(SD_KEY_PREFIX) for k in tensors):
        return "sd", sd2
    raise ModelUnavailable(f"{path.name} is not a Stable Diffusion checkpoint (no {SD_KEY_PREFIX}* weights); "
                           "set pipeline = \"sd\" or \"sdxl\" to force")


def component_config_folder(source: ModelSource, config: Path | str | None, fetch_for: str | None = None) -> Path:
    """The local diffusers folder whose configs a single checkpoint is built from.

    `config` is a folder or an HF repo id. A repo id is looked up in the local HF cache and,
    given `fetch_for` (the model id loading it; an estimate gives none), its config and
    tokenizer files alone (a few kilobytes, `CONFIG_FILES`) are fetched through
    `sources.fetch_from_hub`, which fails offline. Without `config` the usual repo for the
    checkpoint's kind must be in the cache.
    """
    if config is not None and Path(config).is_dir():
        local = Path(config)
        if not (local / "model_index.json").is_file():
            raise ModelUnavailable(f"option config: {local.name} is not a diffusers folder (no model_index.json)")
        return local
    repo = str(config) if config is not None else _default_repo(source)
    folder = _cached_snapshot(repo)
    if folder is not None:
        return folder
    how = (f"set option config to a local diffusers folder of the same architecture, or to an HF repo id such "
           f"as {_default_repo(source)!r} (its configs are fetched when the hub can be reached)")
    if config is not None and fetch_for is not None:
        try:
            folder = fetch_from_hub(repo, None, fetch_for, CONFIG_FILES)
        except ModelUnavailable as exc:
            raise ModelUnavailable(f"option config: {exc.message}; {how}") from exc
        if (folder / "model_index.json").is_file():
            return folder
    raise ModelUnavailable(f"{source.path.name} is a single checkpoint and the configs of its components "
                           f"({repo}) are not in the local Hugging Face cache: {how}")


def _default_repo(source: ModelSource) -> str:
    return DEFAULT_CONFIG_REPOS["sd2" if source.sd2 else source.kind]


def _cached_snapshot(repo: str) -> Path | None:
    """The cached snapshot folder of `repo` holding a model_index.json, without network access."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, local_files_only=True))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or not a repo id (HFValidationError)
        return None
    return folder if (folder / "model_index.json").is_file() else None


def native_size(folder: Path) -> tuple[int, int] | None:
    """The image size a pipeline folder's UNet was trained at: sample_size x the VAE's scale."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    sample, blocks = unet.get("sample_size"), vae.get("block_out_channels")
    if not isinstance(blocks, list):
        return None
    scale = 2 ** (len(blocks) - 1)  # the VAE halves the image at each block but the last
    if isinstance(sample, int):
        return sample * scale, sample * scale
    if isinstance(sample, list) and len(sample) == 2:  # (height, width)
        return int(sample[1]) * scale, int(sample[0]) * scale
    return None
