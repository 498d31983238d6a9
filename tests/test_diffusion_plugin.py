"""The `diffusers` plugin on tiny random pipelines (tests/tiny_diffusion.py), loaded directly.

Images are 64x64 (the tiny UNet's native size) with 2-3 steps, so a generation takes a tenth
of a second on a CPU; the pipelines are written once for the module. Memory planning is a pure
function and is tested with the sizes of real SD 1.5 and SDXL weights; the memory modes
themselves run in the CUDA tests at the end, which skip without a GPU (on one, every other test
runs in float16 on the GPU too, since the device option is "auto").
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lampstand.plugins.diffusion import DiffusersPlugin, plan_memory
from lampstand.plugins.diffusion.png_info import read_recipe
from lampstand.plugins.errors import InvalidRequest, ModelUnavailable
from lampstand.plugins.types import (
    GeneratedImage,
    ImageGenerationRequest,
    ImageProgress,
    StyleLora,
)
from PIL import Image
from tiny_diffusion import (
    write_not_a_lora,
    write_tiny_sd,
    write_tiny_sdxl,
    write_tiny_single_file,
    write_tiny_style_lora,
)

GIB = 1024**3
SIZE = 64
STEPS = 2


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diffusion")
    sd, sdxl = write_tiny_sd(root / "sd"), write_tiny_sdxl(root / "sdxl")
    return {
        "sd": sd,
        "sdxl": sdxl,
        "single": write_tiny_single_file(sd, root / "single" / "tiny-sd.safetensors"),
        "ckpt": write_tiny_single_file(sd, root / "single" / "tiny-sd.ckpt"),
        "style": write_tiny_style_lora(sd, root / "loras" / "style.safetensors", seed=1),
        "style2": write_tiny_style_lora(sd, root / "loras" / "style2.safetensors", seed=2, text_encoder=False),
        "xl_style": write_tiny_style_lora(sdxl, root / "loras" / "xl_style.safetensors", seed=1,
                                          text_encoder=False),
        "not_lora": write_not_a_lora(root / "loras" / "classifier.safetensors"),
        "root": root,
    }


def loaded(path: Path, **options: Any) -> DiffusersPlugin:
    plugin = DiffusersPlugin("tiny", path, DiffusersPlugin.Options(**options))
    plugin.load()
    return plugin


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP's barriers
    stall a 2-thread step by up to 50x; `cpu_threads` sets torch's threads for the process."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd(files: dict[str, Path]) -> Iterator[DiffusersPlugin]:
    plugin = loaded(files["sd"], cpu_threads=1)
    yield plugin
    plugin.unload()


def ask(**fields: Any) -> ImageGenerationRequest:
    base: dict[str, Any] = {"prompt": "a red cat", "width": SIZE, "height": SIZE, "seed": 7, "steps": STEPS}
    return ImageGenerationRequest(**{**base, **fields})


def images(plugin: DiffusersPlugin, **fields: Any) -> list[GeneratedImage]:
    return [item for item in plugin.generate_images(ask(**fields)) if isinstance(item, GeneratedImage)]


def png(plugin: DiffusersPlugin, **fields: Any) -> bytes:
    return images(plugin, **fields)[0].png


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as decoded:
        return decoded.tobytes()


# -- images, seeds, progress --

def test_image_is_a_png_that_records_its_recipe(sd: DiffusersPlugin) -> None:
    items = list(sd.generate_images(ask(negative_prompt="blurry", guidance_scale=5.0)))
    assert [type(item) for item in items] == [ImageProgress] * STEPS + [GeneratedImage]
    image = items[-1]
    assert isinstance(image, GeneratedImage)
    assert (image.index, image.seed, image.width, image.height, image.steps, image.guidance_scale) == \
        (0, 7, SIZE, SIZE, STEPS, 5.0)
    assert image.png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(image.png)) as decoded:
        assert decoded.size == (SIZE, SIZE) and decoded.mode == "RGB"
        parameters = decoded.text["parameters"]
    assert parameters.splitlines()[:2] == ["a red cat", "Negative prompt: blurry"]
    assert "Steps: 2, Sampler: PNDMScheduler, CFG scale: 5, Seed: 7, Size: 64x64, Model: tiny" in parameters
    assert read_recipe(image.png) == {
        "prompt": "a red cat", "negative_prompt": "blurry", "steps": STEPS, "guidance_scale": 5.0, "seed": 7,
        "width": SIZE, "height": SIZE, "scheduler": "PNDMScheduler", "model": "tiny", "loras": []}


def test_same_seed_same_bytes_other_seed_other_image(sd: DiffusersPlugin) -> None:
    first = png(sd, seed=11)
    assert png(sd, seed=11) == first
    assert png(sd, seed=12) != first


def test_image_i_of_n_is_made_with_seed_plus_i(sd: DiffusersPlugin) -> None:
    items = list(sd.generate_images(ask(seed=20, n=2, steps=3)))
    # each image's steps, then the image: progress is per image
    assert [(type(i).__name__, i.index, getattr(i, "step", None)) for i in items] == [
        ("ImageProgress", 0, 1), ("ImageProgress", 0, 2), ("ImageProgress", 0, 3), ("GeneratedImage", 0, None),
        ("ImageProgress", 1, 1), ("ImageProgress", 1, 2), ("ImageProgress", 1, 3), ("GeneratedImage", 1, None)]
    made = [i for i in items if isinstance(i, GeneratedImage)]
    assert [i.seed for i in made] == [20, 21]
    assert made[1].png == png(sd, seed=21, steps=3)
    assert made[0].png != made[1].png


def test_no_size_means_the_native_size(sd: DiffusersPlugin) -> None:
    assert sd.default_size() == (SIZE, SIZE)
    image = images(sd, width=None, height=None)[0]
    assert (image.width, image.height) == (SIZE, SIZE)


def test_other_sizes_and_multiples_of_8(sd: DiffusersPlugin) -> None:
    image = images(sd, width=96, height=72)[0]
    with Image.open(io.BytesIO(image.png)) as decoded:
        assert decoded.size == (96, 72)


def test_closing_the_stream_stops_the_pipeline_within_a_step(sd: DiffusersPlugin) -> None:
    base = png(sd)
    stream = sd.generate_images(ask(steps=150, width=128, height=128))
    started = time.monotonic()
    assert next(stream) == ImageProgress(index=0, step=1, steps=150)
    assert next(stream) == ImageProgress(index=0, step=2, steps=150)
    step_seconds = (time.monotonic() - started) / 2
    closing = time.monotonic()
    stream.close()
    assert time.monotonic() - closing < 3 * step_seconds + 0.5  # the step in flight, then it stops
    assert _idle(sd)  # the close waited for the pipeline thread to finish its work
    assert png(sd) == base  # the pipeline is whole, and free for the next request


def test_closing_between_images_makes_no_more(sd: DiffusersPlugin) -> None:
    stream = sd.generate_images(ask(n=3))
    first = next(item for item in stream if isinstance(item, GeneratedImage))
    stream.close()
    assert first.index == 0
    assert _idle(sd)  # the close waited for the pipeline thread to finish its work


# -- style LoRAs --

def test_a_lora_changes_the_image_for_its_request_only(sd: DiffusersPlugin, files: dict[str, Path]) -> None:
    base = png(sd)
    styled = png(sd, loras=(StyleLora(str(files["style"]), 1.0),))
    assert styled != base
    assert png(sd) == base
    assert png(sd, loras=(StyleLora(str(files["style"]), 1.0),)) == styled  # from the cache, same weights
    half = png(sd, loras=(StyleLora(str(files["style"]), 0.5),))
    assert half not in (base, styled)
    both = images(sd, loras=(StyleLora(str(files["style"]), 1.0), StyleLora(str(files["style2"]), 0.8)))[0]
    assert both.png not in (base, styled)
    assert read_recipe(both.png)["loras"] == [{"name": "style.safetensors", "scale": 1.0},
                                             {"name": "style2.safetensors", "scale": 0.8}]
    assert "<lora:style:1> <lora:style2:0.8>" in Image.open(io.BytesIO(both.png)).text["parameters"]
    with pytest.raises(InvalidRequest) as raised:
        png(sd, loras=(StyleLora(str(files["style"]), 1.0), StyleLora(str(files["style"]), 0.5)))
    assert raised.value.param == "lora"
    assert png(sd) == base


def test_lora_cache_keeps_the_most_recent(files: dict[str, Path], tmp_path: Path) -> None:
    plugin = loaded(files["sd"], lora_cache=1, cpu_threads=1)
    try:
        one, two = StyleLora(str(files["style"])), StyleLora(str(files["style2"]))
        first = png(plugin, loras=(one,))
        assert plugin.style_loras() == ["style.safetensors"]
        png(plugin, loras=(two,))
        assert plugin.style_loras() == ["style2.safetensors"]  # the older one was evicted
        assert png(plugin, loras=(one,)) == first  # loaded again, same weights
        with pytest.raises(InvalidRequest) as raised:
            png(plugin, loras=(one, two))
        assert raised.value.param == "lora"
        # a file rewritten in place is a new LoRA
        moving = tmp_path / "moving.safetensors"
        moving.write_bytes(files["style"].read_bytes())
        assert pixels(png(plugin, loras=(StyleLora(str(moving)),))) == pixels(first)
        write_tiny_style_lora(files["sd"], moving, seed=5)
        assert pixels(png(plugin, loras=(StyleLora(str(moving)),))) != pixels(first)
        assert plugin.style_loras() == ["moving.safetensors"]
    finally:
        plugin.unload()


@pytest.mark.parametrize("name", ["not_lora", "xl_style", "garbage", "missing"])
def test_a_file_that_is_no_lora_for_this_model_is_refused(sd: DiffusersPlugin, files: dict[str, Path],
                                                          name: str) -> None:
    path = files["root"] / "loras" / f"{name}.safetensors"
    if name == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    elif name != "missing":
        path = files[name]
    base = png(sd)
    with pytest.raises(InvalidRequest) as raised:
        png(sd, loras=(StyleLora(str(path)),))
    assert raised.value.param == "lora"
    assert png(sd) == base
    assert path.name not in sd.style_loras()


# -- bad requests --

@pytest.mark.parametrize(("fields", "param"), [
    ({"width": 65}, "size"),
    ({"height": 100}, "size"),
    ({"width": 32, "height": 32}, "size"),
    ({"width": 4096}, "size"),
    ({"steps": 0}, "steps"),
    ({"steps": 151}, "steps"),
    ({"guidance_scale": -1.0}, "guidance_scale"),
    ({"seed": -1}, "seed"),
    ({"n": 0}, "n"),
])
def test_bad_requests_are_refused_naming_the_parameter(sd: DiffusersPlugin, fields: dict[str, Any],
                                                       param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        list(sd.generate_images(ask(**fields)))
    assert raised.value.param == param


# -- other pipelines and sources --

def test_sdxl_folder(files: dict[str, Path]) -> None:
    plugin = loaded(files["sdxl"], cpu_threads=1)
    try:
        items = list(plugin.generate_images(ask(steps=3)))
        assert [type(item) for item in items] == [ImageProgress] * 3 + [GeneratedImage]
        image = items[-1]
        assert isinstance(image, GeneratedImage)
        assert read_recipe(image.png)["scheduler"] == "EulerDiscreteScheduler"
        with Image.open(io.BytesIO(image.png)) as decoded:
            assert decoded.size == (SIZE, SIZE)
        assert png(plugin, steps=3) == image.png
        assert png(plugin, steps=3, seed=8) != image.png
        assert png(plugin, steps=3, loras=(StyleLora(str(files["xl_style"])),)) != image.png
        assert png(plugin, steps=3) == image.png
    finally:
        plugin.unload()


@pytest.mark.parametrize("scheduler", ["euler_a", "heun", "dpm++_2m_karras"])
def test_scheduler_option(sd: DiffusersPlugin, files: dict[str, Path], scheduler: str) -> None:
    plugin = loaded(files["sd"], scheduler=scheduler, default_steps=3, cpu_threads=1)
    try:
        items = list(plugin.generate_images(ask(steps=None)))
        # heun calls the UNet twice a step: progress still counts requested steps
        assert [(i.step, i.steps) for i in items if isinstance(i, ImageProgress)] == [(1, 3), (2, 3), (3, 3)]
        image = items[-1]
        assert isinstance(image, GeneratedImage)
        assert read_recipe(image.png)["scheduler"] == scheduler
        assert image.png != png(sd, steps=3)
    finally:
        plugin.unload()


@pytest.mark.parametrize("single", ["single", "ckpt"])
def test_single_file_checkpoint_matches_its_folder(sd: DiffusersPlugin, files: dict[str, Path], single: str) -> None:
    plugin = loaded(files[single], config=files["sd"], cpu_threads=1)
    try:
        assert png(plugin) == png(sd)  # the same weights, converted back by diffusers
    finally:
        plugin.unload()


def test_single_file_configs_from_an_hf_repo_id_in_the_cache(sd: DiffusersPlugin, files: dict[str, Path],
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    # the HF cache's layout: refs/main names the snapshot folder that holds the files
    repo = tmp_path / "hub" / "models--lampstand-tests--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(files["sd"], repo / "snapshots" / ("0" * 40))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    plugin = loaded(files["single"], config="lampstand-tests/tiny-sd", cpu_threads=1)
    try:
        assert png(plugin) == png(sd)
    finally:
        plugin.unload()


def test_single_file_without_configs_offline_names_the_option(files: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for config in (None, "someone/not-cached"):
        with pytest.raises(ModelUnavailable) as raised:
            loaded(files["single"], config=config)
        assert "option config" in raised.value.message
    assert DiffusersPlugin("t", files["single"], DiffusersPlugin.Options()).default_size() == (512, 512)


@pytest.mark.parametrize("what", ["empty folder", "other pipeline", "text file", "random safetensors"])
def test_what_is_no_pipeline_is_unavailable(files: dict[str, Path], tmp_path: Path, what: str) -> None:
    path = tmp_path / "model"
    if what == "empty folder":
        path.mkdir()
    elif what == "other pipeline":
        path.mkdir()
        (path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    elif what == "text file":
        path = tmp_path / "model.txt"
        path.write_text("hello")
    else:
        path = files["not_lora"]
    with pytest.raises(ModelUnavailable):
        loaded(path)


def test_estimate_counts_the_weights(files: dict[str, Path]) -> None:
    stored = sum(f.stat().st_size for f in files["sd"].rglob("*.safetensors"))  # float32 on disk
    estimate = DiffusersPlugin("t", files["sd"], DiffusersPlugin.Options(device="cpu")).estimate_footprint()
    assert estimate.vram_bytes == 0
    assert stored * 0.99 < estimate.ram_bytes - 768 * 1024**2 < stored + GIB  # weights, then activations
    on_gpu = DiffusersPlugin("t", files["sd"], DiffusersPlugin.Options(device="cuda")).estimate_footprint()
    assert stored * 0.49 < on_gpu.vram_bytes - 256 * 1024**2 < stored / 2 + 512 * 1024**2  # float16


def test_importing_the_plugin_imports_no_engine() -> None:
    code = ("import sys; from lampstand.plugins.diffusion import DiffusersPlugin; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="sampler"):
        DiffusersPlugin.Options(sampler="euler")
    with pytest.raises(ValueError):
        DiffusersPlugin.Options(scheduler="euler_b")
    with pytest.raises(ValueError):
        DiffusersPlugin.Options(default_size="100x64")
    assert DiffusersPlugin.Options(default_size="768x512", vram_budget=8 * GIB).vram_budget == 8 * GIB


# -- memory planning --

SD15 = int(2.13 * GIB)  # UNet, text encoder and VAE in float16
SDXL = int(6.94 * GIB)
CARD_12GB_FREE = int(11.3 * GIB)


@pytest.mark.parametrize(("weights", "side", "budget", "mode"), [
    (SD15, 512, CARD_12GB_FREE, "full"),
    (SD15, 1024, CARD_12GB_FREE, "full"),
    (SD15, 2048, CARD_12GB_FREE, "slicing"),
    (SDXL, 1024, 24 * GIB, "full"),
    (SDXL, 1024, CARD_12GB_FREE, "slicing"),
    (SDXL, 1024, 8 * GIB, "offload"),
    (SDXL, 1024, 4 * GIB, "sequential_offload"),
])
def test_plan_memory_picks_the_least_that_fits(weights: int, side: int, budget: int, mode: str) -> None:
    plan = plan_memory(weights, side, side, budget)
    assert (plan.mode, plan.fits) == (mode, True)
    assert plan.vram_bytes <= budget


def test_plan_memory_when_nothing_fits_or_a_mode_is_forced() -> None:
    hopeless = plan_memory(SDXL, 1024, 1024, 256 * 1024**2)
    assert (hopeless.mode, hopeless.fits) == ("sequential_offload", False)
    forced = plan_memory(SDXL, 1024, 1024, 8 * GIB, force="full")
    assert (forced.mode, forced.fits) == ("full", False)
    assert "does not fit" in forced.describe()
    roomy = plan_memory(SD15, 512, 512, 24 * GIB, force="offload")
    assert (roomy.mode, roomy.fits, roomy.offloads) == ("offload", True, True)
    smaller = plan_memory(SDXL, 768, 768, 12 * GIB)
    assert smaller.vram_bytes < plan_memory(SDXL, 1024, 1024, 24 * GIB).vram_bytes


# -- CUDA (skipped without a GPU) --

def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


cuda_only = pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")


@cuda_only
@pytest.mark.parametrize("mode", ["full", "slicing", "offload", "sequential_offload"])
def test_cuda_memory_modes_give_the_same_kind_of_image(files: dict[str, Path], mode: str) -> None:
    plugin = loaded(files["sd"], device="cuda", memory_mode=mode)
    try:
        image = images(plugin)[0]
        assert (image.width, image.height) == (SIZE, SIZE)
        assert png(plugin) == image.png  # same seed, same bytes on the GPU too
        assert png(plugin, seed=8) != image.png
        measured = plugin.measured_footprint()
        assert measured is not None and measured.vram_bytes > 0
        styled = png(plugin, loras=(StyleLora(str(files["style"])),))
        assert styled != image.png and png(plugin) == image.png
    finally:
        plugin.unload()


@cuda_only
def test_cuda_auto_plan_follows_the_budget(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="lampstand.plugins.diffusion.plugin")
    roomy = loaded(files["sd"], device="cuda")
    tight = loaded(files["sd"], device="cuda", vram_budget=64 * 1024**2)
    try:
        plans = [r.getMessage() for r in caplog.records if "memory plan" in r.getMessage()]
        assert plans[0].startswith("diffusion memory plan full") and "sequential_offload" in plans[1]
        assert pixels(png(roomy)) and pixels(png(tight))
        stream = tight.generate_images(ask(steps=150))
        next(stream)
        stream.close()
        assert png(tight)
    finally:
        roomy.unload()
        tight.unload()


def _idle(plugin: DiffusersPlugin) -> bool:
    """Whether no generation holds the pipeline (its painter thread has nothing left to do)."""
    if not plugin._lock.acquire(blocking=False):
        return False
    plugin._lock.release()
    return True
