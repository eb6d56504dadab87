"""The OpenVINO bundle: optimum-intel converts the model to three fp32 IRs (vision embeddings,
text embeddings, stateful language model), then NNCF compresses the weights and, on request,
quantizes the vision encoder's activations too, calibrated on images.

The npu profile fixes every shape: the vision and text-embedding IRs are reshaped, and the
language model is converted from the static decoder wrapper instead (a stateful model's growing
KV cache cannot be static), following the contract in edge_gesture.bundle.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from edge_gesture.bundle import ModelPart, StaticShapes
from edge_gesture_export.errors import ExportError
from edge_gesture_export.wrappers import Decoder, kv_names

NAMES = {
    "vision": "openvino_vision_embeddings_model",
    "text_embeddings": "openvino_text_embeddings_model",
    "language": "openvino_language_model",
}
INT4_GROUP_SIZE = 64


def convert_fp32(source: Path, work: Path) -> None:
    """optimum-intel's own export, at fp32, so every later precision starts from the same IR."""
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    # OpenVINO's PyTorch frontend logs an error when its optional input wrapper does not fit,
    # then carries on with the model as it is: noise for the user.
    logging.getLogger("openvino.frontend.pytorch.utils").setLevel(logging.CRITICAL)
    # The conversion imports nncf.torch, whose import of torch's C++-extension builder warns
    # "No CUDA runtime is found" on any machine with a CUDA toolkit but no NVIDIA GPU: nothing
    # here builds an extension or uses CUDA.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    main_export(
        str(source),
        output=work,
        task="image-text-to-text",
        ov_config=OVConfig(dtype="fp32"),
        stateful=True,
        convert_tokenizer=False,
    )
    missing = [n for n in NAMES.values() if not (work / f"{n}.xml").is_file()]
    if missing:
        raise ExportError(f"optimum-intel wrote no {', '.join(missing)} in {work}")


def static_language_model(model: Any, static: StaticShapes) -> Any:
    import openvino as ov
    import torch

    tc = model.config.text_config
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    C, K = static.max_prompt_length, static.kv_length
    past = kv_names(tc.num_hidden_layers, "past_key_values")
    example = (
        torch.zeros(1, C, tc.hidden_size),
        torch.ones(1, K + C, dtype=torch.int64),
        torch.arange(C)[None],
        *[torch.zeros(1, tc.num_key_value_heads, K, head_dim) for _ in past],
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on Python constants: expected here
        ov_model = ov.convert_model(Decoder(model, new_only=True).eval(), example_input=example)
    in_names = ["inputs_embeds", "attention_mask", "position_ids", *past]
    out_names = ["logits", *kv_names(tc.num_hidden_layers, "present")]
    for port, name in zip(ov_model.inputs, in_names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, out_names, strict=True):
        port.get_tensor().set_names({name})
    ov_model.reshape({n: list(t.shape) for n, t in zip(in_names, example, strict=True)})
    return ov_model


def _reshape_static(models: dict[str, Any], image_size: int, patch: int, static: StaticShapes):
    side = image_size // patch
    fixed = {
        "pixel_values": [1, 3, image_size, image_size],
        "patch_attention_mask": [1, side, side],
        "patch_position_ids": [1, side * side],
    }
    models["vision"].reshape({p.get_any_name(): fixed[p.get_any_name()] for p in models["vision"].inputs})
    (embed_in,) = models["text_embeddings"].inputs
    models["text_embeddings"].reshape({embed_in.get_any_name(): [1, static.max_prompt_length]})


def _compress(model: Any, weights: str) -> Any:
    import nncf

    # NNCF's INFO tables of bit-widths would bury the progress lines; the manifest records them.
    logging.getLogger("nncf").setLevel(logging.WARNING)

    if weights == "int8":
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    if weights == "int4":
        # NNCF keeps the embedding and output layers in INT8 (its default backup mode).
        try:
            return nncf.compress_weights(
                model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=INT4_GROUP_SIZE, ratio=1.0
            )
        except Exception as e:  # noqa: BLE001 - NNCF raises several types for unsupported shapes
            raise ExportError(f"INT4 compression failed (group size {INT4_GROUP_SIZE}): {e}") from e
    return model  # fp16 and fp32 are a matter of how the IR is saved


def _quantize_static(model: Any, samples: list[dict[str, Any]]) -> Any:
    import nncf

    return nncf.quantize(
        model,
        nncf.Dataset(samples),
        subset_size=len(samples),
        model_type=nncf.ModelType.TRANSFORMER,
    )


def _shape(pshape: Any) -> list[int | str]:
    return [d.get_length() if d.is_static else "?" for d in pshape]


def build(
    work: Path,
    out: Path,
    *,
    weights: str,
    static: StaticShapes | None,
    calibration: list[dict[str, Any]] | None,
    torch_model: Any,
    progress: Any,
) -> dict[str, ModelPart]:
    """Compress (and quantize) the fp32 IRs in work into out; return the parts by role."""
    import openvino as ov

    core = ov.Core()
    models = {role: core.read_model(work / f"{name}.xml") for role, name in NAMES.items()}
    cfg = torch_model.config
    if static is not None:
        with progress.step(
            f"making shapes static (prompt chunk {static.max_prompt_length}, KV buffer {static.kv_length})"
        ):
            _reshape_static(models, cfg.vision_config.image_size, cfg.vision_config.patch_size, static)
            models["language"] = static_language_model(torch_model, static)
    parts = {}
    for role, model in models.items():
        w = "int8" if (role != "language" and weights == "int4") else weights
        act = "fp32"
        if role == "vision" and calibration:
            with progress.step(f"quantizing vision activations to INT8 on {len(calibration)} images"):
                model = _quantize_static(model, calibration)
            w, act = "int8", "int8"
        elif w in ("int8", "int4"):
            with progress.step(f"compressing {role} weights to {w.upper()}"):
                model = _compress(model, w)
        path = out / f"{NAMES[role]}.xml"
        ov.save_model(model, path, compress_to_fp16=(w == "fp16"))
        parts[role] = ModelPart(
            file=path.name,
            weights_precision=w,
            activations_precision=act,
            inputs={p.get_any_name(): _shape(p.get_partial_shape()) for p in model.inputs},
            outputs={p.get_any_name(): _shape(p.get_partial_shape()) for p in model.outputs},
        )
    return parts
