"""The built-in check: run the bundle on a fixed image and prompt and compare its logits with the
PyTorch model's, for the prompt and a few greedy decode steps (teacher-forced, so both see the
same tokens). Rule: fp32/fp16 bundles must match within a tolerance; int8/int4 bundles (weights
or activations) must pick the same top-1 token at every step.

This drives the bundle with openvino / onnxruntime directly, independently of the daemon's runtime,
so a bundle the daemon loads has been run once by something other than the code that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_gesture.bundle import BundleManifest, Verification
from edge_gesture_export.errors import ExportError

QUESTION = "Which hand gesture is shown? Answer with one word."
DECODE_STEPS = 3
#: Allowed max |bundle - PyTorch| over the compared logits, as a fraction of the largest
#: |PyTorch logit| (at least 1): fp32 differs by accumulation order only, fp16 weights by rounding.
RELATIVE_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
#: Quantized bundles: a step where the top-1 tokens differ still passes when PyTorch itself rates
#: the two within this fraction of its logit range (max - min) of each other: a near-tie that
#: rounding decides either way. Every other step must pick the same token, and at least one must.
TIE_FRACTION = 0.01


def verification_image(size: int):
    """A fixed, seeded picture: a skin-toned hand-like blob with fingers on a gradient."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    bg = np.stack([60 + 120 * xx, 80 + 60 * yy, 140 - 80 * xx * yy], axis=-1)
    noise = np.random.default_rng(7).normal(0, 8, bg.shape)
    img = Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    s = size / 512
    d.ellipse([150 * s, 230 * s, 360 * s, 470 * s], fill=(224, 172, 140))
    for i, x in enumerate((160, 215, 270, 320)):
        d.rounded_rectangle(
            [x * s, (60 + 20 * i) * s, (x + 42) * s, 300 * s], radius=20 * s, fill=(214, 162, 130)
        )
    d.rounded_rectangle([330 * s, 260 * s, 450 * s, 310 * s], radius=20 * s, fill=(214, 162, 130))
    return img


@dataclass
class Reference:
    prompt: str  # the processor's chat prompt, before image expansion
    input_ids: np.ndarray  # [n] int64, image tokens expanded
    pixel_values: np.ndarray  # [1, 3, S, S] float32
    tokens: list[int]  # PyTorch's greedy continuation, one per step after the first
    logits: list[np.ndarray]  # [vocab] per step: after the prompt, then after each token


def torch_reference(model: Any, processor: Any, image: Any, prompt: str, steps: int) -> Reference:
    import torch

    inputs = processor(text=[prompt], images=[[image]], return_tensors="pt")
    if inputs["pixel_values"].shape[1] != 1:
        raise ExportError("the processor split the image; image splitting must be off")
    logits: list[np.ndarray] = []
    tokens: list[int] = []
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        mask = inputs["attention_mask"]
        for step in range(steps):
            last = out.logits[0, -1].float().numpy()
            logits.append(last)
            if step == steps - 1:
                break
            tok = int(last.argmax())
            tokens.append(tok)
            mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
            out = model(
                input_ids=torch.tensor([[tok]]),
                attention_mask=mask,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
    return Reference(
        prompt=prompt,
        input_ids=inputs["input_ids"][0].numpy().astype(np.int64),
        pixel_values=inputs["pixel_values"][0].numpy().astype(np.float32),
        tokens=tokens,
        logits=logits,
    )


def add_special_tokens_flag(tokenizer_json: Path, text: str, ids: np.ndarray) -> bool:
    """Which `add_special_tokens` makes tokenizers' encode of the rendered prompt give the
    processor's ids; fails if neither does (the manifest's prompt facts would be wrong)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    got = {}
    for flag in (False, True):
        got[flag] = tok.encode(text, add_special_tokens=flag).ids
        if got[flag] == ids.tolist():
            return flag
    first = next((i for i, (a, b) in enumerate(zip(got[False], ids, strict=False)) if a != b), None)
    raise ExportError(
        "the prompt rebuilt from the manifest does not tokenize like the processor's "
        f"({len(got[False])} vs {len(ids)} tokens, first difference at {first}); "
        "the chat template or image expansion is not one this exporter understands"
    )


class _Parts:
    """The bundle's three models, compiled for the CPU, callable with a dict of numpy arrays."""

    def __init__(self, root: Path, manifest: BundleManifest) -> None:
        self.format = manifest.format
        self.requests: dict[str, Any] = {}
        self.inputs = {role: list(part.inputs) for role, part in manifest.models.items()}
        if self.format == "openvino":
            import openvino as ov

            core = ov.Core()
            for role, part in manifest.models.items():
                # f32 inference so the comparison measures the bundle's weights, not a bf16
                # execution mode some CPUs would pick.
                compiled = core.compile_model(root / part.file, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
                self.requests[role] = compiled.create_infer_request()
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            for role, part in manifest.models.items():
                self.requests[role] = ort.InferenceSession(
                    str(root / part.file), opts, providers=["CPUExecutionProvider"]
                )

    def reset(self, role: str) -> None:
        self.requests[role].reset_state()

    def __call__(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        r = self.requests[role]
        if self.format == "openvino":
            r.infer(feeds)
            return {o.get_any_name(): r.get_tensor(o).data.copy() for o in r.model_outputs}
        names = [o.name for o in r.get_outputs()]
        return dict(zip(names, r.run(None, feeds), strict=True))


def _vision_feeds(manifest: BundleManifest, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    side = manifest.image.size // manifest.image.patch_size
    feeds = {}
    for name in manifest.models["vision"].inputs:
        if name == "pixel_values":
            feeds[name] = pixel_values
        elif name == "patch_attention_mask":
            feeds[name] = np.ones((1, side, side), dtype=bool)
        elif name == "patch_position_ids" and manifest.image.patch_position_ids is not None:
            feeds[name] = np.array([manifest.image.patch_position_ids], dtype=np.int64)
        else:
            raise ExportError(f"verification does not know the vision input {name!r}")
    return feeds


def _embed(parts: _Parts, ids: np.ndarray) -> np.ndarray:
    (name,) = parts.inputs["text_embeddings"]
    return next(iter(parts("text_embeddings", {name: ids[None].astype(np.int64)}).values()))


def run_bundle(root: Path, manifest: BundleManifest, ref: Reference) -> list[np.ndarray]:
    """Logits per step from the bundle, fed the reference's ids, pixels and tokens."""
    parts = _Parts(root, manifest)
    features = next(iter(parts("vision", _vision_feeds(manifest, ref.pixel_values)).values()))
    features = features.reshape(-1, features.shape[-1])
    image_rows = ref.input_ids == manifest.tokens.image.id
    if int(image_rows.sum()) != features.shape[0]:
        raise ExportError(
            f"the prompt has {int(image_rows.sum())} image tokens, the vision model gave "
            f"{features.shape[0]} features"
        )
    if manifest.static_shapes is not None:
        return _run_static(parts, manifest, ref, features, image_rows)
    if manifest.language.stateful:
        return _run_stateful(parts, ref, features, image_rows)
    return _run_with_past(parts, manifest, ref, features, image_rows)


def _run_stateful(parts, ref, features, image_rows) -> list[np.ndarray]:
    emb = _embed(parts, ref.input_ids)
    emb[0, image_rows] = features
    n = len(ref.input_ids)
    parts.reset("language")
    feeds = {
        "inputs_embeds": emb,
        "attention_mask": np.ones((1, n), np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None],
        "beam_idx": np.zeros(1, np.int32),
    }
    out = [parts("language", feeds)["logits"][0, -1]]
    for tok in ref.tokens:
        feeds = {
            "inputs_embeds": _embed(parts, np.array([tok])),
            "attention_mask": np.ones((1, n + 1), np.int64),
            "position_ids": np.array([[n]], np.int64),
            "beam_idx": np.zeros(1, np.int32),
        }
        out.append(parts("language", feeds)["logits"][0, -1])
        n += 1
    return out


def _run_with_past(parts, manifest, ref, features, image_rows) -> list[np.ndarray]:
    lang = manifest.language
    emb = _embed(parts, ref.input_ids)
    emb[0, image_rows] = features
    past = {
        name: np.zeros((1, lang.num_key_value_heads, 0, lang.head_dim), np.float32)
        for name in parts.inputs["language"]
        if name.startswith("past_key_values.")
    }
    x, seen, out = emb, 0, []  # seen: tokens already in the KV cache
    for tok in [*ref.tokens, None]:
        q = x.shape[1]
        feeds = {
            "inputs_embeds": x,
            "attention_mask": np.ones((1, seen + q), np.int64),
            "position_ids": np.arange(seen, seen + q, dtype=np.int64)[None],
            **past,
        }
        res = parts("language", feeds)
        out.append(res["logits"][0, -1])
        past = {k.replace("present.", "past_key_values.", 1): v for k, v in res.items() if k != "logits"}
        seen += q
        if tok is not None:
            x = _embed(parts, np.array([tok]))
    return out


def _run_static(parts, manifest, ref, features, image_rows) -> list[np.ndarray]:
    lang, shapes = manifest.language, manifest.static_shapes
    C, K = shapes.max_prompt_length, shapes.kv_length
    n = len(ref.input_ids)
    if n > C:
        raise ExportError(f"the verification prompt has {n} tokens, max_prompt_length is {C}")
    pad = manifest.tokens.pad_token_id or 0
    kv_shape = (1, lang.num_key_value_heads, K, lang.head_dim)
    buffer = {
        name: np.zeros(kv_shape, np.float32)
        for name in parts.inputs["language"]
        if name.startswith("past_key_values.")
    }
    out, used = [], 0
    for step, tok in enumerate([None, *ref.tokens]):
        real = ref.input_ids if step == 0 else np.array([tok])
        ids = np.full(C, pad, np.int64)
        ids[: len(real)] = real
        emb = _embed(parts, ids)
        if step == 0:
            emb[0, : len(real)][image_rows] = features
        mask = np.zeros((1, K + C), np.int64)
        mask[0, :used] = 1
        mask[0, K : K + len(real)] = 1
        pos = np.zeros((1, C), np.int64)
        pos[0, : len(real)] = np.arange(used, used + len(real))
        res = parts("language", {"inputs_embeds": emb, "attention_mask": mask, "position_ids": pos, **buffer})
        out.append(res["logits"][0, len(real) - 1])
        if used + len(real) > K:
            raise ExportError(f"kv_length {K} is too small for the verification run")
        for name in buffer:
            present = res[name.replace("past_key_values.", "present.", 1)]
            buffer[name][:, :, used : used + len(real)] = present[:, :, : len(real)]
        used += len(real)
    return out


def _is_quantized(manifest: BundleManifest) -> bool:
    return manifest.weights_precision in ("int8", "int4") or any(
        p.weights_precision in ("int8", "int4") or p.activations_precision == "int8"
        for p in manifest.models.values()
    )


def step_verdict(ref: np.ndarray, got: np.ndarray) -> str:
    """'same', 'tie' (different token, PyTorch near-tie between the two) or 'different'."""
    a, b = int(ref.argmax()), int(got.argmax())
    if a == b:
        return "same"
    return "tie" if ref[a] - ref[b] <= TIE_FRACTION * float(ref.max() - ref.min()) else "different"


def compare(manifest: BundleManifest, ref: Reference, got: list[np.ndarray]) -> Verification:
    pairs = list(zip(ref.logits, got, strict=True))
    scale = max(1.0, max(float(np.abs(r).max()) for r in ref.logits))
    diff = max(float(np.abs(g - r).max()) for r, g in pairs)
    verdicts = [step_verdict(r, g) for r, g in pairs]
    common = {
        "reference": "PyTorch fp32",
        "max_abs_logit_diff": diff,
        "steps": len(pairs),
        "top1_agree": all(v == "same" for v in verdicts),
        "top1_ties": verdicts.count("tie"),
    }
    if _is_quantized(manifest):
        ok = "different" not in verdicts and "same" in verdicts
        return Verification(tolerance=None, passed=ok, **common)
    tol = RELATIVE_TOLERANCE[manifest.weights_precision] * scale
    return Verification(tolerance=tol, passed=diff <= tol, **common)


def report_lines(ref: Reference, got: list[np.ndarray], v: Verification) -> list[str]:
    lines = [
        f"verification: {len(ref.input_ids)}-token prompt + fixed image, {len(ref.logits)} steps, "
        f"against {v.reference}",
        "  step  torch top-1  bundle top-1  max|dlogit|  top-1",
    ]
    for i, (g, r) in enumerate(zip(got, ref.logits, strict=True)):
        lines.append(
            f"  {i:4d}  {int(r.argmax()):11d}  {int(g.argmax()):12d}  "
            f"{float(np.abs(g - r).max()):11.2e}  {step_verdict(r, g)}"
        )
    if v.tolerance is None:
        rule = (
            f"same top-1 token at every step (a near-tie within {TIE_FRACTION:.0%} of PyTorch's "
            "logit range excepted)"
        )
    else:
        rule = f"max|dlogit| <= {v.tolerance:.2e}"
    verdict = "PASS" if v.passed else "FAIL"
    lines.append(f"  {verdict}: {rule}; max|dlogit| = {v.max_abs_logit_diff:.2e}")
    return lines
