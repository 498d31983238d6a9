"""Builds a tiny LLaVA folder for the vision tests, offline, in the layout the Hub's
`llava-hf/*` repositories have.

No LLaVA ships inside an installable package and the tests cannot reach the Hub, so the tests
make one from transformers' own classes: a 2-layer CLIP vision tower and a 2-layer Llama
joined by LLaVA's projector, with seeded random weights, and a `LlavaProcessor` whose
tokenizer is a byte-level BPE trained here on a few sentences. Everything is written with
`save_pretrained`, so the folder loads through `from_pretrained` exactly as a real one does.
The weights are random: answers are deterministic but mean nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "CONTEXT", "IMAGE_SIZE", "IMAGE_TOKENS", "write_tiny_llava"]

IMAGE_SIZE = 32  # pixels per side the processor resizes and crops every image to
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # one per patch; the CLS feature is dropped ("default")
CONTEXT = 256  # the Llama's max_position_embeddings

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

# LLaVA-1.5's conversation format: images first, then the text; the assistant's text is marked
# with {% generation %} the way the llava-hf templates do.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] + '\n' }}{% endfor %}"
    "{% else %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ part['text'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ part['text'] + ' ' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

CORPUS = [
    "USER: What is in this picture? ASSISTANT: A red square on a white background.",
    "USER: Describe the image. ASSISTANT: There is a cat sitting next to a blue door.",
    "The quick brown fox jumps over the lazy dog while the sun sets behind the hills.",
    "Count the apples, name the colours, and tell me what the people are doing.",
    "0123456789 !?.,:;'\"()[]{}<>-+=*/\\ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def _tokenizer() -> Any:
    """A byte-level BPE over the corpus (any text tokenizes; nothing is downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=CONTEXT,
    )


def _image_processor() -> Any:
    try:  # transformers 5 names the Pillow backend; 4.x has only the one class
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _model(vocab_size: int, image_token_id: int, pad_token_id: int, seed: int) -> Any:
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                       bos_token_id=1, eos_token_id=2, pad_token_id=pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-2,
                         image_seq_length=IMAGE_TOKENS)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    # Random init keeps logits near uniform; larger weights make greedy answers depend on the input.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.mul_(4.0)
    return model.eval()


def write_tiny_llava(out: Path, seed: int = 0) -> Path:
    """Save the tiny LLaVA (weights drawn from `seed`) and its processor to `out`; return `out`."""
    from transformers import LlavaProcessor

    tokenizer = _tokenizer()
    processor = LlavaProcessor(image_processor=_image_processor(), tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    model = _model(len(tokenizer), processor.image_token_id, tokenizer.pad_token_id, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
