"""The ONNX bundle: the three parts traced with torch.onnx, then INT8 weights with ONNX Runtime.

optimum's ONNX exporter does not cover idefics3, so the parts are the small wrappers in
wrappers.py. Dynamic profiles keep batch/sequence/past dimensions symbolic; the npu profile fixes
every dimension (see edge_gesture.bundle for the static contract).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from edge_gesture.bundle import ModelPart, StaticShapes
from edge_gesture_export.wrappers import Decoder, TokenEmbedding, VisionEncoder, kv_names

FILES = {
    "vision": "vision_encoder.onnx",
    "text_embeddings": "token_embedding.onnx",
    "language": "decoder.onnx",
}
OPSET = 17


def _export(module: Any, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic):
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about constant Python values: expected
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic or None,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter handles these wrappers; dynamo needs onnxscript
        )


def export_fp32(model: Any, out: Path, static: StaticShapes | None, position_ids: list[int]) -> None:
    """Write the three fp32 ONNX files into out."""
    import torch

    cfg = model.config
    tc = cfg.text_config
    size = cfg.vision_config.image_size
    layers = tc.num_hidden_layers
    kv_heads = tc.num_key_value_heads
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    out.mkdir(parents=True, exist_ok=True)

    _export(
        VisionEncoder(model, position_ids).eval(),
        (torch.zeros(1, 3, size, size),),
        out / FILES["vision"],
        ["pixel_values"],
        ["image_features"],
        None,  # one whole image per call, in every profile
    )
    seq = static.max_prompt_length if static else 4
    _export(
        TokenEmbedding(model).eval(),
        (torch.zeros(1, seq, dtype=torch.int64),),
        out / FILES["text_embeddings"],
        ["input_ids"],
        ["inputs_embeds"],
        None if static else {"input_ids": {0: "batch", 1: "sequence"}},
    )
    past_names, present_names = kv_names(layers, "past_key_values"), kv_names(layers, "present")
    past_len = static.kv_length if static else 3
    example = (
        torch.zeros(1, seq, tc.hidden_size),
        torch.ones(1, past_len + seq, dtype=torch.int64),
        torch.arange(seq)[None],
        *[torch.zeros(1, kv_heads, past_len, head_dim) for _ in past_names],
    )
    dynamic = None
    if not static:
        dynamic = {
            "inputs_embeds": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"},
            **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
            **{n: {0: "batch", 2: "total_sequence"} for n in present_names},
        }
    _export(
        Decoder(model, new_only=static is not None).eval(),
        example,
        out / FILES["language"],
        ["inputs_embeds", "attention_mask", "position_ids", *past_names],
        ["logits", *present_names],
        dynamic,
    )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic INT8: weights stored as int8 (per output channel), activations quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        quantize_dynamic(
            src / name,
            dst / name,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )


def copy_fp32(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        shutil.copy2(src / name, dst / name)


def _shapes(values: Any, skip: set[str]) -> dict[str, list[int | str]]:
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in values
        if v.name not in skip
    }


def describe(root: Path, weights: str) -> dict[str, ModelPart]:
    """ModelPart per role, with input/output shapes read back from the files."""
    import onnx

    parts = {}
    for role, name in FILES.items():
        graph = onnx.load(str(root / name), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}

        parts[role] = ModelPart(
            file=name,
            weights_precision=weights,
            activations_precision="fp32",
            inputs=_shapes(graph.input, inits),
            outputs=_shapes(graph.output, inits),
        )
    return parts
