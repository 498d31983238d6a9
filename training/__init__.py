"""lampstand.training: LoRA adapters trained on your own data, for the server to hot-load.

    data        JSONL files (OpenAI chat rows, prompt/completion pairs), validated up front
    encode      rows -> tokens with the base's chat template; loss on assistant tokens only
    base_model  --base -> files -> config, tokenizer, weights
    lora        peft LoRA / QLoRA on the base, default targets per architecture
    memory      will it fit? estimated before loading weights
    loop        the torch training loop; checkpoint: resumable checkpoints; metrics: metrics.jsonl
    run         the recipe tying them together: `train(TrainConfig, Settings) -> TrainResult`
    manifest    the adapter folder: file names, manifest.json (standard library only: the server
                reads adapter folders without torch)
    gguf_lora   peft adapter -> GGUF LoRA for llama.cpp

Importing this package is cheap (no torch): the modules that need torch import it inside
their functions, and only the standard-library ones are re-exported here.
"""

from .config import TrainConfig, resolve_output
from .data import DataError, TrainingData, load_training_file
from .manifest import AdapterManifest, file_sha256, read_manifest, write_manifest

__all__ = ["TrainConfig", "resolve_output", "DataError", "TrainingData", "load_training_file", "AdapterManifest",
           "file_sha256", "read_manifest", "write_manifest"]
