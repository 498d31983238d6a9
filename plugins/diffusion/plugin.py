"""The `diffusers` plugin: text to image with a Stable Diffusion 1.x/2.x or SDXL pipeline.

torch and diffusers are imported only inside `load`, `generate_images` and the methods they
call. The model is a diffusers folder or a single checkpoint (see `model_files`); on CUDA it
runs in float16 under the memory plan that fits its budget (see `memory`), on the CPU in
float32. A generation runs the pipeline in a thread (see `threaded`): every denoising step
yields an `ImageProgress`, every image a `GeneratedImage` PNG, and closing the stream stops
the pipeline at its next step. Style LoRAs stay loaded between requests (see `loras`) but
each request runs with exactly its own.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from lampstand.plugins.contract import (
    Capability,
    Footprint,
    Health,
    ImageGenerator,
    Plugin,
)
from lampstand.plugins.fitting import cuda_at_load, default_dtype, expects_cuda
from lampstand.plugins.errors import (
    InvalidRequest,
    MemoryBudgetExceeded,
    ModelUnavailable,
)
from lampstand.plugins.types import (
    GeneratedImage,
    ImageGenerationRequest,
    ImageProgress,
)

from .loras import StyleLoraCache
from .memory import MODES, MemoryPlan, apply_memory_plan, plan_memory, working_bytes
from .model_files import (
    HUB_FILES,
    ModelSource,
    component_config_folder,
    native_size,
    open_source,
)
from .options import DiffusersOptions, parse_size
from .pipelines import load_pipeline
from .png_info import ImageRecipe, encode_png
from .schedulers import swap_scheduler
from .threaded import Emit, Stopped, iterate_in_thread

__all__ = ["DiffusersPlugin"]

log = logging.getLogger(__name__)

RUNTIME_BYTES = 768 * 1024 * 1024  # torch, diffusers and transformers in the worker
KIND_SIZES = {"sd": 512, "sdxl": 1024}
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
MIN_SIDE = 64
MAX_SEED = 2**64 - 1
MAX_GUIDANCE = 50.0


class DiffusersPlugin(Plugin, ImageGenerator):
    """One diffusion pipeline."""

    name = "diffusers"
    Options = DiffusersOptions
    hub_files = HUB_FILES
    options: DiffusersOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pipe: Any = None
        self._device = "cpu"
        self._plan: MemoryPlan | None = None
        self._budget = 0
        self._weights = (0, 0)  # (all, largest component) bytes in the loaded dtype
        self._loras: StyleLoraCache | None = None
        self._lock = threading.Lock()  # one generation at a time: a pipeline is not reentrant
        self._painter: ThreadPoolExecutor | None = None  # the one thread that runs the pipeline

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.IMAGE_GENERATION})

    # -- device, dtype and memory --

    def _plan_for(self, weights: tuple[int, int], width: int, height: int, budget: int | None) -> MemoryPlan:
        """The plan for `weights` (all, largest component) at one image size; without a budget
        (an estimate under "auto", before the card is asked) the whole pipeline on the GPU."""
        mode = self.options.memory_mode
        force = None if mode == "auto" else mode
        if budget is None:
            force = force or "full"
            budget = weights[0] + working_bytes(width, height, sliced=False)
        return plan_memory(weights[0], width, height, budget, largest_component_bytes=weights[1], force=force)

    def estimate_footprint(self) -> Footprint:
        source = open_source(self.path, self.options.pipeline, read_pickle=False)
        gpu = expects_cuda(self.options.device)
        bytes_per_value = DTYPE_BYTES[default_dtype(self.options.dtype, gpu)]
        weights = source.weights_bytes(bytes_per_value)
        width, height = self._files_default_size(source)
        if not gpu:  # activations grow with the dtype like the weights; the rule of thumb is for 2 bytes
            working = working_bytes(width, height, sliced=False) * bytes_per_value // 2
            return Footprint(ram_bytes=RUNTIME_BYTES + weights[0] + working)
        budget = self.options.vram_budget if isinstance(self.options.vram_budget, int) else None
        plan = self._plan_for(weights, width, height, budget)
        return Footprint(ram_bytes=RUNTIME_BYTES + (weights[0] if plan.offloads else 0), vram_bytes=plan.vram_bytes)

    # -- loading --

    def load(self) -> None:
        try:
            import diffusers  # noqa: F401  (checked here so the message names the extra)
            import torch  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailable("the diffusers plugin needs `pip install lampstand[sd]`") from exc
        source = open_source(self.path, self.options.pipeline)
        config = component_config_folder(source, self.options.config, self.model_id) if source.single_file else None
        gpu = cuda_at_load(self.options.device)
        # Every torch call runs on this one thread, loading included: OpenMP keeps a thread team
        # per calling thread and stops spin-waiting once teams outnumber the cores, which cost
        # 12% per step on 2 cores; CUDA keeps its handles per thread too.
        self._painter = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diffusers-{self.model_id}")
        try:
            self._painter.submit(self._build, source, config, gpu).result()
        except BaseException:
            self.unload()
            raise

    def _build(self, source: ModelSource, config: Path | None, gpu: bool) -> None:
        """Load the pipeline and place it (on the pipeline thread)."""
        import torch

        if self.options.cpu_threads:
            torch.set_num_threads(self.options.cpu_threads)
        dtype_name = default_dtype(self.options.dtype, gpu)
        self._device = "cuda" if gpu else "cpu"
        self._weights = source.weights_bytes(DTYPE_BYTES[dtype_name])
        if gpu:  # measured before the weights arrive: what the pipeline may take
            budget = self.options.vram_budget
            self._budget = torch.cuda.mem_get_info()[0] if budget == "auto" else budget
        pipe = load_pipeline(source, config, getattr(torch, dtype_name), safety_checker=False)
        if self.options.scheduler is not None:
            swap_scheduler(pipe, self.options.scheduler)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._place(*self.default_size())
        self._loras = StyleLoraCache(pipe, self.options.lora_cache)
        log.info("diffusion pipeline loaded", extra={
            "model": self.model_id, "pipeline": type(pipe).__name__, "scheduler": type(pipe.scheduler).__name__,
            "device": self._device, "dtype": dtype_name})

    def _place(self, width: int, height: int) -> None:
        """Move the pipeline to its device under the memory plan for `width` x `height`."""
        if self._device == "cpu":
            if self.options.memory_mode not in ("auto", "full"):
                log.warning("memory_mode %s applies on CUDA only; the pipeline runs whole on the CPU",
                            self.options.memory_mode, extra={"model": self.model_id})
            self._pipe.to("cpu")
            return
        self._plan = self._plan_for(self._weights, width, height, self._budget)
        apply_memory_plan(self._pipe, self._plan, self._device)
        log.log(logging.INFO if self._plan.fits else logging.WARNING, "diffusion memory plan %s",
                self._plan.describe(), extra={"model": self.model_id, "memory_mode": self._plan.mode})

    def _fit_request(self, width: int, height: int) -> None:
        """A larger image than planned for may need a more frugal plan; never a less frugal one."""
        if self._plan is None or self.options.memory_mode != "auto":
            return
        wanted = self._plan_for(self._weights, width, height, self._budget)
        if MODES.index(wanted.mode) > MODES.index(self._plan.mode):
            log.info("diffusion memory plan tightened for %dx%d", width, height, extra={"model": self.model_id})
            self._place(width, height)

    def unload(self) -> None:
        if self._painter is not None:
            self._painter.shutdown(wait=True)
        self._pipe = self._loras = self._plan = self._painter = None
        gc.collect()
        if self._device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def measured_footprint(self) -> Footprint | None:
        if self._pipe is None or self._device != "cuda":
            return None
        import torch

        offloaded = self._weights[0] if self._plan is not None and self._plan.offloads else 0
        return Footprint(ram_bytes=RUNTIME_BYTES + offloaded, vram_bytes=int(torch.cuda.memory_reserved()))

    def health(self) -> Health:
        return Health(ok=True) if self._pipe is not None else Health(ok=False, detail="the pipeline is not loaded")

    def style_loras(self) -> list[str]:
        """File names of the style LoRAs kept loaded, least recently used first."""
        return self._loras.loaded if self._loras is not None else []

    def default_size(self) -> tuple[int, int]:
        """(width, height) of a request that names no size: the option, else the UNet's native size."""
        if self.options.default_size != "auto":
            return parse_size(self.options.default_size)
        if self._pipe is not None:
            sample = self._pipe.unet.config.sample_size
            height, width = (sample, sample) if isinstance(sample, int) else sample
            scale = self._pipe.vae_scale_factor
            return width * scale, height * scale
        return self._files_default_size(open_source(self.path, self.options.pipeline, read_pickle=False))

    def _files_default_size(self, source: ModelSource) -> tuple[int, int]:
        if self.options.default_size != "auto":
            return parse_size(self.options.default_size)
        folder = source.path if not source.single_file else None
        if folder is None:
            try:
                folder = component_config_folder(source, self.options.config)
            except ModelUnavailable:  # estimating before the configs are there: the kind's usual size
                side = 768 if source.sd2 else KIND_SIZES[source.kind]
                return side, side
        return native_size(folder) or (KIND_SIZES[source.kind],) * 2

    # -- generating --

    def generate_images(self, request: ImageGenerationRequest) -> Iterator[ImageProgress | GeneratedImage]:
        if self._pipe is None or self._loras is None or self._painter is None:
            raise ModelUnavailable(f"model {self.model_id!r} is not loaded")
        width, height = self._checked_size(request)
        steps, guidance = self._checked_settings(request)
        with self._lock:
            yield from iterate_in_thread(
                lambda emit, stopped: self._paint_with_loras(request, width, height, steps, guidance, emit, stopped),
                self._painter)

    def _paint_with_loras(self, request: ImageGenerationRequest, width: int, height: int, steps: int,
                          guidance: float, emit: Emit, stopped: Any) -> None:
        """On the pipeline thread: fit the memory plan, turn the request's LoRAs on, paint, turn them off."""
        loras = self._loras
        if loras is None:
            raise ModelUnavailable(f"model {self.model_id!r} is not loaded")
        self._fit_request(width, height)
        try:
            loras.activate(request.loras)
            self._paint(request, width, height, steps, guidance, emit, stopped)
        finally:
            loras.deactivate()

    def _checked_size(self, request: ImageGenerationRequest) -> tuple[int, int]:
        if request.width is None or request.height is None:  # the server's "auto"
            return self.default_size()
        side = self.options.max_side
        if not (MIN_SIDE <= request.width <= side and MIN_SIDE <= request.height <= side) \
                or request.width % 8 or request.height % 8:
            raise InvalidRequest(f"width and height must be multiples of 8 between {MIN_SIDE} and {side} "
                                 f"for model {self.model_id!r}", param="size")
        return request.width, request.height

    def _checked_settings(self, request: ImageGenerationRequest) -> tuple[int, float]:
        steps = request.steps if request.steps is not None else self.options.default_steps
        if not 1 <= steps <= self.options.max_steps:
            raise InvalidRequest(f"steps must be between 1 and {self.options.max_steps}", param="steps")
        guidance = request.guidance_scale if request.guidance_scale is not None \
            else self.options.default_guidance_scale
        if not 0.0 <= guidance <= MAX_GUIDANCE:
            raise InvalidRequest(f"guidance_scale must be between 0 and {MAX_GUIDANCE:g}", param="guidance_scale")
        if request.n < 1:
            raise InvalidRequest("n must be at least 1", param="n")
        if not 0 <= request.seed <= MAX_SEED - (request.n - 1):
            raise InvalidRequest("seed must be between 0 and 2**64 - 1 for every image", param="seed")
        return steps, guidance

    def _paint(self, request: ImageGenerationRequest, width: int, height: int, steps: int, guidance: float,
               emit: Emit, stopped: Any) -> None:
        """Runs in the generation thread: the request's images one after another."""
        import torch

        recipe = ImageRecipe(
            prompt=request.prompt, negative_prompt=request.negative_prompt or "", steps=steps,
            guidance_scale=guidance, seed=request.seed, width=width, height=height,
            scheduler=self.options.scheduler or type(self._pipe.scheduler).__name__, model=self.model_id,
            loras=tuple((Path(lora.path).name, lora.scale) for lora in request.loras))
        for index in range(request.n):
            if stopped():  # closed while the last image was being encoded
                return
            seed = request.seed + index
            on_step = _step_reporter(index, steps, emit, stopped)
            try:
                result = self._pipe(
                    prompt=request.prompt, negative_prompt=request.negative_prompt, width=width, height=height,
                    num_inference_steps=steps, guidance_scale=guidance,
                    generator=torch.Generator(self._device).manual_seed(seed), callback_on_step_end=on_step)
            except torch.OutOfMemoryError as exc:
                raise MemoryBudgetExceeded(f"the GPU ran out of memory for a {width}x{height} image; try a "
                                           "smaller size or memory_mode = \"offload\"") from exc
            image = result.images[0]
            png = encode_png(image, replace(recipe, seed=seed))
            emit(GeneratedImage(index=index, png=png, seed=seed, width=image.width, height=image.height,
                                steps=steps, guidance_scale=guidance))


def _step_reporter(index: int, steps: int, emit: Emit, stopped: Any) -> Any:
    """A `callback_on_step_end` that emits one `ImageProgress` per requested step.

    A scheduler may take more model calls than steps (Heun takes 2 a step, PNDM one extra), so
    progress is the share of the pipeline's timesteps done, in whole requested steps.
    """
    reported = 0

    def on_step(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        nonlocal reported
        if stopped():
            raise Stopped
        done = (step + 1) * steps // max(pipe.num_timesteps, 1)
        while reported < min(done, steps):
            reported += 1
            emit(ImageProgress(index=index, step=reported, steps=steps))
        return tensors

    return on_step
