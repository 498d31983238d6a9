"""Image generation: seconds per step and per image through the server vs diffusers directly.

No real Stable Diffusion weights can be fetched here, so by default the bench builds a
random-weight pipeline with Stable Diffusion 1.5's layout at reduced width (UNet channels
128-256-512-512, 2 layers per block, cross-attention 512; a 4-layer CLIP text encoder; an SD
VAE) and draws 256x256 images: the same kinds of layers, in the same order, as the real
model, so framework overhead shows in the same proportion. `--folder` times a real
pipeline folder instead (e.g. SD 1.5 or SDXL on a GPU machine).

Timed alternately in the same run, with the same scheduler, steps, size, seed and threads:

* raw:    `StableDiffusionPipeline.from_pretrained(folder)(prompt, ...)` in this process;
* server: POST /v1/images/generations to `lampstand serve` with the `diffusers` plugin,
          streamed, so each step's progress event gives the step times as the client sees
          them.

Per image is the wall time of one whole image (text encoding, the denoising loop, VAE
decoding; for the server also HTTP and PNG encoding on both sides, since the raw side
encodes its PNG too). Per step is the median time between consecutive steps. The server's
speed relative to raw is raw time / server time (goal >= 0.95), as the median of
back-to-back pairs.

Run: python bench/images.py [--repeats 3] [--steps 20] [--size 256] [--folder PATH]
     [--device auto|cpu|cuda] [--width reduced|full]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import httpx

from server_process import print_load, running_server

THREADS = 2
PROMPT = "a watercolor painting of a lighthouse on a cliff at sunset"


WIDTHS = {  # (UNet channels, cross-attention / text width, text layers, VAE channels)
    "reduced": ((128, 256, 512, 512), 512, 4, (64, 128, 256, 256)),
    "full": ((320, 640, 1280, 1280), 768, 12, (128, 256, 512, 512)),  # SD 1.5's own sizes
}


def build_pipeline(folder: Path, width: str = "reduced") -> Path:
    """A random-weight SD-1.5-shaped pipeline, saved in the diffusers format."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_diffusion import _write_tokenizer  # the offline CLIP tokenizer files the tests use

    unet_channels, text_width, text_layers, vae_channels = WIDTHS[width]
    torch.manual_seed(0)
    _write_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=4 * text_width,
        num_hidden_layers=text_layers, num_attention_heads=text_width // 64, max_position_embeddings=77))
    unet = UNet2DConditionModel(
        sample_size=64 if width == "full" else 32, block_out_channels=unet_channels, layers_per_block=2,
        cross_attention_dim=text_width, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=vae_channels, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, sample_size=256)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    _write_tokenizer(folder / "tokenizer")
    return folder


class Raw:
    """The pipeline in this process, timed per image and per step (float16 on CUDA, as the plugin)."""

    def __init__(self, folder: Path, device: str) -> None:
        import torch
        from diffusers import DiffusionPipeline

        torch.set_num_threads(THREADS)
        self.torch, self.device = torch, device
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def image(self, steps: int, size: int, seed: int) -> tuple[float, list[float]]:
        marks: list[float] = []

        def on_step(pipe: object, step: int, timestep: object, kwargs: dict) -> dict:
            self._sync()
            marks.append(time.perf_counter())
            return kwargs

        started = time.perf_counter()
        with self.torch.inference_mode():
            result = self.pipe(PROMPT, num_inference_steps=steps, height=size, width=size, guidance_scale=7.5,
                               generator=self.torch.Generator(self.device).manual_seed(seed),
                               callback_on_step_end=on_step)
        result.images[0].save(io.BytesIO(), format="PNG")
        return time.perf_counter() - started, _gaps(marks)


def served(url: str, steps: int, size: int, seed: int) -> tuple[float, list[float], bytes]:
    """One image over HTTP (streamed): wall time, step gaps, PNG."""
    body = {"model": "bench-sd", "prompt": PROMPT, "steps": steps, "size": f"{size}x{size}", "seed": seed,
            "guidance_scale": 7.5, "stream": True}
    marks: list[float] = []
    png = b""
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/images/generations", json=body, timeout=None) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event["type"] == "image_generation.progress":
                marks.append(time.perf_counter())
            elif event["type"] == "image_generation.completed":
                png = base64.b64decode(event["b64_json"])
    return time.perf_counter() - started, _gaps(marks), png


def _gaps(marks: list[float]) -> list[float]:
    return [b - a for a, b in zip(marks, marks[1:])]


def config(folder: Path, device: str) -> str:
    return f"""
[server]
request_timeout = 3600

[[models]]
id = "bench-sd"
plugin = "diffusers"
path = "{folder}"
cpu_threads = {THREADS}
device = "{device}"
preload = true
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--folder", type=Path, help="a diffusers pipeline folder (default: build one)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--width", choices=sorted(WIDTHS), default="reduced",
                        help="channel widths of the built pipeline (full: SD 1.5's, for a GPU)")
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    print_load("before")
    with tempfile.TemporaryDirectory(prefix="lampstand-bench-images-") as tmp:
        folder = args.folder or build_pipeline(Path(tmp) / "sd", args.width)
        raw = Raw(folder, args.device)
        raw.image(2, args.size, 0)  # warm-up: first-call allocations
        with running_server(config(folder, args.device), timeout_s=300) as url:
            served(url, 2, args.size, 0)
            pairs, raw_steps, server_steps = [], [], []
            same_pixels = None
            for repeat in range(args.repeats):
                raw_time, raw_gaps = raw.image(args.steps, args.size, repeat)
                server_time, server_gaps, png = served(url, args.steps, args.size, repeat)
                raw_steps += raw_gaps
                server_steps += server_gaps
                pairs.append((raw_time, server_time))
                if repeat == 0:
                    same_pixels = _same_pixels(raw, png, args.steps, args.size, repeat)
                print(f"  repeat {repeat + 1}: raw {raw_time:.2f} s, server {server_time:.2f} s")
    raw_image, server_image = median(p[0] for p in pairs), median(p[1] for p in pairs)
    print(f"pipeline: {f'built SD-1.5-shaped ({args.width} width), random weights' if args.folder is None else folder}, "
          f"{args.size}x{args.size}, {args.steps} steps, {args.device}, {THREADS} threads")
    print(f"per image: raw {raw_image:.2f} s, server {server_image:.2f} s, "
          f"ratio {median(r / s for r, s in pairs):.3f}")
    print(f"per step:  raw {median(raw_steps):.3f} s, server {median(server_steps):.3f} s, "
          f"ratio {median(raw_steps) / median(server_steps):.3f}")
    print(f"first server image equals the raw image pixel for pixel: {same_pixels}")
    print_load("after")


def _same_pixels(raw: Raw, png: bytes, steps: int, size: int, seed: int) -> bool:
    """Whether the served PNG's pixels are exactly those the raw pipeline draws for this seed."""
    import numpy as np
    from PIL import Image

    with raw.torch.inference_mode():
        expected = raw.pipe(PROMPT, num_inference_steps=steps, height=size, width=size, guidance_scale=7.5,
                            generator=raw.torch.Generator(raw.device).manual_seed(seed)).images[0]
    return bool(np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), np.asarray(expected)))


if __name__ == "__main__":
    main()
