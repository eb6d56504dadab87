"""The torch-free runtime on a tiny random SmolVLM exported in the test session."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_gesture.bundle import MANIFEST_NAME, BundleError
from edge_gesture.vlm.backend import BackendError, BackendOptions
from edge_gesture.vlm.decode import decode
from edge_gesture.vlm.devices import DeviceError
from edge_gesture.vlm.preprocess import pixel_values
from edge_gesture.vlm.prompt import PromptError
from edge_gesture.vlm.runtime import VlmRuntime
from tests.vlm_fixtures import GESTURES

pytestmark = pytest.mark.export
F32 = BackendOptions(precision="f32")


def crop(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    import cv2

    return cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    from transformers import Idefics3ForConditionalGeneration

    return Idefics3ForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()


def torch_logits(model, ids: np.ndarray, pv: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids)[None], pixel_values=torch.from_numpy(pv)[:, None])
    return out.logits[0, -1].numpy()


def test_logits_match_pytorch(tiny_ov_bundle, torch_model, tmp_path):
    rt = VlmRuntime(tiny_ov_bundle, GESTURES, BackendOptions(precision="f32", cache_dir=tmp_path))
    pv = pixel_values(crop(), rt.manifest.image)
    tokens = list(rt.trie.tokens)
    ref = torch_logits(torch_model, rt.prompt.ids, pv)[tokens]
    got = rt.backend.prefill(rt.backend.vision(pv))
    assert np.abs(ref).max() > 0.5  # the logits carry signal, so a match means something
    np.testing.assert_allclose(got[0], ref, atol=2e-4)
    # The lookahead tokens prefilled behind the prompt: their rows are the model's next steps.
    ahead = list(rt.trie.lookahead)
    assert ahead and got.shape[0] == 1 + len(ahead)
    for i in range(1, len(ahead) + 1):
        ids = np.concatenate([rt.prompt.ids, ahead[:i]])
        np.testing.assert_allclose(got[i], torch_logits(torch_model, ids, pv)[tokens], atol=2e-4)
    # Leaving the lookahead: its cache slots are masked, two other tokens follow the prompt.
    step = [t for t in tokens if t not in ahead][:2]
    ref2 = torch_logits(torch_model, np.concatenate([rt.prompt.ids, step]), pv)[tokens]
    np.testing.assert_allclose(rt.backend.extend(step, kept=0), ref2, atol=2e-4)
    # Keeping it: tokens after the lookahead see it.
    rt.backend.prefill(rt.backend.vision(pv))
    ref3 = torch_logits(torch_model, np.concatenate([rt.prompt.ids, ahead, step]), pv)[tokens]
    np.testing.assert_allclose(rt.backend.extend(step, kept=len(ahead)), ref3, atol=2e-4)
    # Second load: the rewritten LM and embeddings come from the cache, same numbers.
    rt2 = VlmRuntime(tiny_ov_bundle, GESTURES, BackendOptions(precision="f32", cache_dir=tmp_path))
    np.testing.assert_allclose(rt2.backend.prefill(rt2.backend.vision(pv))[0], ref, atol=2e-4)


def test_answer_is_pytorchs_best_allowed_label(tiny_ov_bundle, torch_model):
    rt = VlmRuntime(tiny_ov_bundle, GESTURES, F32)
    tokens = list(rt.trie.tokens)
    for seed in range(3):
        img = crop(seed)
        pv = pixel_values(img, rt.manifest.image)
        fed: list[int] = []

        def torch_next(new: list[int], kept, pv=pv, fed=fed) -> np.ndarray:
            fed.extend(new)
            return torch_logits(torch_model, np.concatenate([rt.prompt.ids, fed]), pv)[tokens]

        # PyTorch one step at a time, no lookahead: the same answer must come out.
        want = decode(rt.trie, torch_logits(torch_model, rt.prompt.ids, pv)[tokens], torch_next)
        got, timings = rt.classify(img)
        assert got.label == want.label
        assert got.label in rt.labels and rt.labels == (*[n for n, _ in GESTURES], "none")
        assert got.probability == pytest.approx(want.probability, abs=1e-3)
        assert timings.total_s > 0


def test_both_backends_agree(tiny_ov_bundle, tiny_onnx_bundle):
    ov_rt = VlmRuntime(tiny_ov_bundle, GESTURES, F32)
    ort_rt = VlmRuntime(tiny_onnx_bundle, GESTURES, F32)
    assert ort_rt.manifest.format == "onnx"
    for seed in range(3):
        img = crop(seed)
        pv = pixel_values(img, ov_rt.manifest.image)
        np.testing.assert_allclose(
            ort_rt.backend.prefill(ort_rt.backend.vision(pv)),
            ov_rt.backend.prefill(ov_rt.backend.vision(pv)),
            atol=1e-3,
        )
        step = [t for t in ov_rt.trie.tokens if t not in ov_rt.trie.lookahead][:2]
        np.testing.assert_allclose(ort_rt.backend.extend(step, 0), ov_rt.backend.extend(step, 0),
                                   atol=1e-3)
        a, b = ov_rt.classify(img)[0], ort_rt.classify(img)[0]
        assert (a.label, round(a.probability, 3)) == (b.label, round(b.probability, 3))


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_or_corrupt_files_are_named(tiny_ov_bundle, tmp_path):
    b = copy_bundle(tiny_ov_bundle, tmp_path / "missing")
    (b / "openvino_language_model.bin").unlink()
    with pytest.raises(BundleError, match=r"openvino_language_model\.bin: missing"):
        VlmRuntime(b, GESTURES, F32)

    b = copy_bundle(tiny_ov_bundle, tmp_path / "corrupt")
    data = bytearray((b / "openvino_vision_embeddings_model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "openvino_vision_embeddings_model.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"openvino_vision_embeddings_model\.bin: sha256"):
        VlmRuntime(b, GESTURES, F32)

    b = copy_bundle(tiny_ov_bundle, tmp_path / "tokenizer")
    (b / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match=r"tokenizer\.json"):
        VlmRuntime(b, GESTURES, F32)


def test_checksums_are_checked_again_when_a_file_changes(tiny_ov_bundle, tmp_path):
    """Start-up skips re-hashing files already verified, but never for a rewritten file."""
    b = copy_bundle(tiny_ov_bundle, tmp_path / "b")
    opts = BackendOptions(cache_dir=tmp_path / "cache")
    VlmRuntime(b, GESTURES, opts)
    assert len(list((tmp_path / "cache" / "vlm" / "verified").iterdir())) == 1
    VlmRuntime(b, GESTURES, opts)  # verified before: fine
    path = b / "openvino_language_model.bin"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))  # same size, new contents
    with pytest.raises(BundleError, match=r"openvino_language_model\.bin: sha256"):
        VlmRuntime(b, GESTURES, opts)


def test_a_manifest_from_a_newer_tool_is_refused(tiny_ov_bundle, tmp_path):
    b = copy_bundle(tiny_ov_bundle, tmp_path / "newer")
    m = json.loads((b / MANIFEST_NAME).read_text())
    m["schema_version"] += 1
    m["a_field_from_the_future"] = True
    (b / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="newer than this edge-gesture reads"):
        VlmRuntime(b, GESTURES, F32)


def test_image_token_count_must_match_the_vision_model(tiny_ov_bundle, tmp_path):
    # A description smuggling an image token in breaks the one-image prompt.
    with pytest.raises(PromptError, match="image"):
        VlmRuntime(tiny_ov_bundle, [("fist", "a fist <image> here")], F32)
    # A manifest that claims fewer image tokens than the vision model gives.
    b = copy_bundle(tiny_ov_bundle, tmp_path / "tokens")
    m = json.loads((b / MANIFEST_NAME).read_text())
    img = m["tokens"]["image"]["text"]
    m["image_tokens_per_image"] -= 1
    m["prompt"]["image_sequence"] = m["prompt"]["image_sequence"].replace(img, "", 1)
    (b / MANIFEST_NAME).write_text(json.dumps(m))
    rt = VlmRuntime(b, GESTURES, F32)
    with pytest.raises(BackendError, match="vision model gave 16 image features, the prompt has 15"):
        rt.classify(crop())


def test_an_absent_device_lists_the_present_ones(tiny_ov_bundle):
    with pytest.raises(DeviceError) as err:
        VlmRuntime(tiny_ov_bundle, GESTURES, BackendOptions(vision_device="NPU"))
    msg = str(err.value)
    assert "vlm.vision_device" in msg and "'NPU' is not present" in msg and "available: CPU" in msg
    with pytest.raises(DeviceError, match="vlm.language_device.*GPU"):
        VlmRuntime(tiny_ov_bundle, GESTURES, BackendOptions(language_device="HETERO:GPU,CPU"))
    # With a fallback the daemon runs on it instead.
    rt = VlmRuntime(tiny_ov_bundle, GESTURES,
                    BackendOptions(vision_device="GPU", fallback_device="CPU"))
    assert rt.backend.devices == {"vision": "CPU", "language": "CPU"}
    # AUTO with a present candidate is fine.
    rt = VlmRuntime(tiny_ov_bundle, GESTURES, BackendOptions(vision_device="AUTO:NPU,CPU"))
    assert rt.classify(crop())[0].label in rt.labels


def test_the_runtime_never_imports_torch_transformers_or_optimum(tiny_ov_bundle, tmp_path):
    code = f"""
import sys, numpy as np
from edge_gesture.vlm.runtime import VlmRuntime
from edge_gesture.vlm.backend import BackendOptions
from edge_gesture.vlm.worker import VlmWorker
from edge_gesture.fuse import fuse
rt = VlmRuntime({str(tiny_ov_bundle)!r}, {GESTURES!r}, BackendOptions(cache_dir={str(tmp_path)!r}))
rt.warm_up()
answer = rt.classify(np.zeros((50, 50, 3), np.uint8))[0]
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))
print(answer.label, heavy)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    label, heavy = r.stdout.strip().split(" ", 1)
    assert label in {n for n, _ in GESTURES} | {"none"}
    assert heavy == "[]"


def test_static_npu_profile_bundle_gives_the_same_answers(tiny_ov_bundle, tiny_npu_bundle):
    """The npu profile (fixed shapes, caller-owned KV buffer, prompt in chunks) on the CPU."""
    dyn = VlmRuntime(tiny_ov_bundle, GESTURES, F32)
    static = VlmRuntime(tiny_npu_bundle, GESTURES, F32)
    assert static.manifest.static_shapes.max_prompt_length < static.prompt.image_start  # chunks
    for seed in range(2):
        img = crop(seed)
        pv = pixel_values(img, dyn.manifest.image)
        np.testing.assert_allclose(static.backend.prefill(static.backend.vision(pv)),
                                   dyn.backend.prefill(dyn.backend.vision(pv)), atol=1e-4)
        a, b = dyn.classify(img)[0], static.classify(img)[0]
        assert (a.label, a.tokens) == (b.label, b.tokens)
        assert a.probability == pytest.approx(b.probability, abs=1e-4)
    # A prompt that does not fit the fixed KV buffer is refused up front, saying what to do.
    wordy = [(f"gesture_{i}", "a hand held up high with every finger spread wide apart " * 3)
             for i in range(6)]
    with pytest.raises(BackendError, match="re-export with --kv-length"):
        VlmRuntime(tiny_npu_bundle, wordy, F32)


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_smolvlm2_checkpoint_exports_and_matches_pytorch(tiny_smolvlm2_checkpoint, tmp_path, fmt):
    from transformers import SmolVLMForConditionalGeneration

    from tests.vlm_fixtures import export_bundle

    bundle = export_bundle(tiny_smolvlm2_checkpoint, tmp_path / "b", "--format", fmt,
                           "--weights", "fp32")
    rt = VlmRuntime(bundle, GESTURES, BackendOptions(precision="f32", cache_dir=tmp_path / "c"))
    assert rt.manifest.source.model_type == "smolvlm"
    model = SmolVLMForConditionalGeneration.from_pretrained(tiny_smolvlm2_checkpoint).eval()
    pv = pixel_values(crop(1), rt.manifest.image)
    ref = torch_logits(model, rt.prompt.ids, pv)[list(rt.trie.tokens)]
    assert np.abs(ref).max() > 0.5
    np.testing.assert_allclose(rt.backend.prefill(rt.backend.vision(pv))[0], ref, atol=2e-4)
    assert rt.classify(crop(2))[0].label in rt.labels
