"""The `diffusers` plugin: Stable Diffusion 1.x/2.x and SDXL text to image through diffusers.

The package is called `diffusion` so that `import diffusers` inside it always means the library.
"""

from .memory import MemoryPlan, plan_memory
from .plugin import DiffusersPlugin

__all__ = ["DiffusersPlugin", "MemoryPlan", "plan_memory"]
