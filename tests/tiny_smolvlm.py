"""SmolVLM checkpoints with random weights, built on the spot (no weights can be downloaded here).

- `build_tiny_smolvlm(dest)`: a tiny Idefics3 (SmolVLM) model, processor and tokenizer, saved as a
  Hugging Face checkpoint folder (`family="smolvlm"`: the SmolVLM2 classes instead). The
  tokenizer is trained in place and has SmolVLM's special tokens (`<image>`,
  `<fake_token_around_image>`, `<global-img>`, `<end_of_utterance>`, the chat markers), its chat
  template is SmolVLM's, image splitting is off and the image is 64x64 (16 image tokens),
  so exporting and running it takes seconds.
- `build_full_smolvlm(dest, shared)`: the exact SmolVLM-256M-Instruct architecture with random
  weights, from the config, processor and tokenizer files in ../shared/smolvlm-256m-instruct; for
  benchmarks (speed and size do not depend on the weight values).

Needs torch and transformers (the export extra). Used by the export tests and the VLM tests.
"""

from __future__ import annotations

from pathlib import Path

SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

TINY_IMAGE_SIZE = 64
TINY_PATCH_SIZE = 8
TINY_SCALE_FACTOR = 2
#: (64 / 8)^2 patches, merged 2x2 by the connector's pixel shuffle.
TINY_IMAGE_TOKENS = (TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2 // TINY_SCALE_FACTOR**2

_CORPUS = [
    "User: Which gesture is the hand making? Answer with one of: open palm, fist, thumbs up, "
    "thumbs down, pointing up, victory, ok, call, crossed fingers, hand on heart, none.",
    "Assistant: thumbs up. Assistant: none. Assistant: victory. Assistant: open palm.",
    "Describe the image. A hand in front of a camera, the fingers spread, the palm open.",
]


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # The same pipeline as SmolVLM's tokenizer.json: byte-level BPE, digits split, no post-processor
    # (so no BOS is added and the chat template's <|im_start|> is the first token).
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    extra = ["<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    extra += ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=extra,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        model_max_length=8192,
    )
    return fast


def _classes(family: str):
    """(config, model, image processor, processor, extra processor parts) of a model family:
    idefics3 is SmolVLM (v1), smolvlm is SmolVLM2, whose processor also holds a video part."""
    if family == "idefics3":
        from transformers import (
            Idefics3Config,
            Idefics3ForConditionalGeneration,
            Idefics3ImageProcessor,
            Idefics3Processor,
        )

        return Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, \
            Idefics3Processor, {}
    if family == "smolvlm":
        from transformers import (
            SmolVLMConfig,
            SmolVLMForConditionalGeneration,
            SmolVLMImageProcessor,
            SmolVLMProcessor,
            SmolVLMVideoProcessor,
        )

        return SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor, \
            SmolVLMProcessor, {"video_processor": SmolVLMVideoProcessor()}
    raise ValueError(f"unknown model family {family!r}")


def build_tiny_smolvlm(dest: Path, *, seed: int = 0, family: str = "idefics3") -> Path:
    """Save a tiny random checkpoint (model, processor, tokenizer) in dest; return dest.
    family: idefics3 (SmolVLM) or smolvlm (SmolVLM2)."""
    import torch

    config_cls, model_cls, image_processor_cls, processor_cls, extra = _classes(family)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    image_processor = image_processor_cls(
        do_image_splitting=False,
        size={"longest_edge": 2 * TINY_IMAGE_SIZE},
        max_image_size={"longest_edge": TINY_IMAGE_SIZE},
    )
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=TINY_IMAGE_TOKENS,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        **extra,
    )
    vocab = len(tokenizer)
    config = config_cls(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": TINY_PATCH_SIZE,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "rope_theta": 100000.0,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": False,
        },
        scale_factor=TINY_SCALE_FACTOR,
        pad_token_id=tokenizer.pad_token_id,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
        vocab_size=vocab,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # Random init gives near-uniform logits (every token within a hair of the next), so any
    # quantization would flip the arg-max; a sharper output layer gives the logits the spread a
    # trained model has, which is what the INT8 top-1 check is about.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


def build_full_smolvlm(dest: Path, shared: Path, *, seed: int = 0) -> Path:
    """Save the SmolVLM-256M-Instruct architecture with random fp32 weights, plus the real
    processor and tokenizer files from `shared` (../shared/smolvlm-256m-instruct), in dest."""
    from edge_gesture_export.random_model import build_random_model

    return build_random_model(Path(shared), Path(dest), seed=seed)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--full", type=Path, metavar="SHARED_SMOLVLM_DIR", help="build the 256M model")
    a = ap.parse_args()
    print(build_full_smolvlm(a.dest, a.full) if a.full else build_tiny_smolvlm(a.dest))
