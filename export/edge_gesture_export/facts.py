"""What the runtime needs to know about the processor and tokenizer, read from them once here so
the daemon never runs Jinja or transformers: image preprocessing, the prompt template, token ids.
"""

from __future__ import annotations

import sys
from typing import Any

from edge_gesture.bundle import ImageSpec, LanguageSpec, PromptSpec, SpecialTokens, TokenRef
from edge_gesture_export.errors import ExportError

_QUESTION_SENTINEL = "QUESTION5f0c2e"
_IMAGE_PLACEHOLDER = "{image}"
_QUESTION_PLACEHOLDER = "{question}"


def global_image_token(processor: Any) -> str:
    # Idefics3Processor calls it global_image_tag, SmolVLMProcessor global_image_token.
    return getattr(processor, "global_image_token", None) or processor.global_image_tag


def image_tokens_per_image(processor: Any, config: Any) -> int:
    vc = config.vision_config
    expected = (vc.image_size // vc.patch_size) ** 2 // config.scale_factor**2
    if processor.image_seq_len != expected:
        raise ExportError(
            f"processor image_seq_len {processor.image_seq_len} does not match the model: "
            f"({vc.image_size}/{vc.patch_size})^2 / scale_factor^2 = {expected}"
        )
    return expected


def patch_position_ids(model: Any) -> list[int]:
    """The ids transformers' vision embeddings give the patches of one whole image, captured at
    the position-embedding lookup (they are bucketized, not 0..n-1, in transformers >= 4.55)."""
    import torch

    vc = model.config.vision_config
    side = vc.image_size // vc.patch_size
    embeddings = model.model.vision_model.embeddings
    seen: list[torch.Tensor] = []
    hook = embeddings.position_embedding.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        with torch.no_grad():
            embeddings(
                pixel_values=torch.zeros(1, 3, vc.image_size, vc.image_size),
                patch_attention_mask=torch.ones(1, side, side, dtype=torch.bool),
            )
    finally:
        hook.remove()
    return [int(i) for i in seen[0][0].tolist()]


def image_spec(processor: Any, model: Any, with_position_ids: bool) -> ImageSpec:
    from transformers.image_utils import PILImageResampling

    config = model.config
    ip = processor.image_processor
    size = ip.max_image_size["longest_edge"]
    if size != config.vision_config.image_size:
        raise ExportError(
            f"processor max_image_size {size} differs from the vision model's image_size "
            f"{config.vision_config.image_size}"
        )
    return ImageSpec(
        size=size,
        patch_size=config.vision_config.patch_size,
        pre_resize_longest_edge=ip.size.get("longest_edge") if ip.do_resize else None,
        resample=PILImageResampling(ip.resample).name.lower(),
        rescale_factor=ip.rescale_factor if ip.do_rescale else 1.0,
        mean=tuple(ip.image_mean) if ip.do_normalize else (0.0, 0.0, 0.0),
        std=tuple(ip.image_std) if ip.do_normalize else (1.0, 1.0, 1.0),
        patch_position_ids=patch_position_ids(model) if with_position_ids else None,
    )


def _token(tokenizer: Any, text: str) -> TokenRef:
    tid = tokenizer.convert_tokens_to_ids(text)
    if tid is None or (tid == tokenizer.unk_token_id and text != tokenizer.unk_token):
        raise ExportError(f"the tokenizer has no token {text!r}; is this a SmolVLM tokenizer?")
    return TokenRef(text=text, id=tid)


def special_tokens(processor: Any, generation_config: Any) -> SpecialTokens:
    tok = processor.tokenizer
    eou = _token(tok, processor.end_of_utterance_token)
    eos: list[int] = []
    gen_eos = getattr(generation_config, "eos_token_id", None)
    for t in [*(gen_eos if isinstance(gen_eos, list) else [gen_eos]), tok.eos_token_id, eou.id]:
        if t is not None and t not in eos:
            eos.append(int(t))
    return SpecialTokens(
        image=_token(tok, processor.image_token),
        fake_token_around_image=_token(tok, processor.fake_image_token),
        global_image=_token(tok, global_image_token(processor)),
        end_of_utterance=eou,
        eos_token_ids=eos,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def image_sequence(processor: Any) -> str:
    """The text one unsplit image becomes, from the processor's own module function."""
    module = sys.modules[type(processor).__module__]
    return module.get_image_prompt_string(
        0,
        0,
        processor.image_seq_len,
        processor.fake_image_token,
        processor.image_token,
        global_image_token(processor),
    )


def prompt_spec(processor: Any, add_special_tokens: bool) -> PromptSpec:
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": _QUESTION_SENTINEL}],
        }
    ]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    n_img, n_q = rendered.count(processor.image_token), rendered.count(_QUESTION_SENTINEL)
    if n_img != 1 or n_q != 1:
        raise ExportError(
            f"the chat template rendered one image as {n_img} {processor.image_token} and the "
            f"question {n_q} times (expected once each): {rendered!r}"
        )
    template = rendered.replace(processor.image_token, _IMAGE_PLACEHOLDER).replace(
        _QUESTION_SENTINEL, _QUESTION_PLACEHOLDER
    )
    return PromptSpec(
        template=template,
        image_placeholder=_IMAGE_PLACEHOLDER,
        question_placeholder=_QUESTION_PLACEHOLDER,
        image_sequence=image_sequence(processor),
        add_special_tokens=add_special_tokens,
        chat_template=getattr(processor, "chat_template", None),
    )


def chat_prompt(processor: Any, question: str) -> str:
    """The processor's own prompt for one image and a question (before image expansion)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def language_spec(config: Any, stateful: bool) -> LanguageSpec:
    tc = config.text_config
    return LanguageSpec(
        vocab_size=tc.vocab_size,
        hidden_size=tc.hidden_size,
        num_layers=tc.num_hidden_layers,
        num_key_value_heads=tc.num_key_value_heads,
        head_dim=getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads,
        stateful=stateful,
    )
