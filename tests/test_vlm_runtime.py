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


# ---------------------------------------------------------------- files the daemon must not trust


def _derived_folder(cache: Path) -> Path:
    (folder,) = [p for p in (cache / "vlm").iterdir() if p.name != "verified"]
    return folder


@pytest.mark.parametrize(
    "name", ["language_answers.bin", "language_answers.xml", "embeddings.npz", "prefix_state.npz"]
)
def test_a_truncated_derived_file_is_rebuilt(tiny_ov_bundle, tmp_path, caplog, name):
    """What a power cut during the first start leaves: a saved file cut short. The next start
    deletes it, derives it again and runs as before (it used to fail at every start)."""
    opts = BackendOptions(precision="f32", cache_dir=tmp_path / "cache")
    first = VlmRuntime(tiny_ov_bundle, GESTURES, opts)
    pv = pixel_values(crop(), first.manifest.image)
    want = first.backend.prefill(first.backend.vision(pv))
    path = _derived_folder(tmp_path / "cache") / name
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    # OpenVINO's compiled-model cache would hide a cut LM file; what is tested is the file.
    for blob in (tmp_path / "cache").glob("*.blob"):
        blob.unlink()
    with caplog.at_level("WARNING"):
        again = VlmRuntime(tiny_ov_bundle, GESTURES, opts)
    np.testing.assert_allclose(again.backend.prefill(again.backend.vision(pv)), want, atol=1e-5)
    warned = [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]
    assert len(warned) == 1 and path.parent.name in warned[0]
    assert path.stat().st_size == size  # saved whole again: the start after this one is warm
    caplog.clear()
    with caplog.at_level("WARNING"):
        VlmRuntime(tiny_ov_bundle, GESTURES, opts)
    assert not [r for r in caplog.records if "rebuilding it" in r.getMessage()]


def test_a_truncated_compiled_model_cache_blob_is_recompiled(tiny_ov_bundle, tmp_path):
    """OpenVINO's own cache (CACHE_DIR, the same folder): a blob cut short by a power cut makes
    OpenVINO compile again and rewrite it, not fail."""
    opts = BackendOptions(precision="f32", cache_dir=tmp_path / "cache")
    first = VlmRuntime(tiny_ov_bundle, GESTURES, opts)
    pv = pixel_values(crop(), first.manifest.image)
    want = first.backend.prefill(first.backend.vision(pv))
    blobs = sorted((tmp_path / "cache").glob("*.blob"))
    assert blobs
    for blob in blobs:
        with open(blob, "r+b") as f:
            f.truncate(blob.stat().st_size // 2)
    again = VlmRuntime(tiny_ov_bundle, GESTURES, opts)
    np.testing.assert_allclose(again.backend.prefill(again.backend.vision(pv)), want, atol=1e-5)


def test_derived_files_appear_only_complete(tiny_ov_bundle, tmp_path):
    """They are written under a temporary name and renamed: nothing half-written is left
    under a final name, and no temporary file is left behind."""
    VlmRuntime(tiny_ov_bundle, GESTURES, BackendOptions(precision="f32", cache_dir=tmp_path / "c"))
    names = sorted(p.name for p in _derived_folder(tmp_path / "c").iterdir())
    assert names == ["embeddings.npz", "language_answers.bin", "language_answers.xml",
                     "prefix_state.npz"]


def _mark_unverified(bundle: Path) -> None:
    m = json.loads((bundle / MANIFEST_NAME).read_text())
    assert m["verification"]["passed"]
    m["verification"]["passed"] = False
    (bundle / MANIFEST_NAME).write_text(json.dumps(m))


def test_a_bundle_that_failed_its_verification_is_refused_unless_allowed(tiny_ov_bundle, tmp_path):
    b = copy_bundle(tiny_ov_bundle, tmp_path / "unverified")
    _mark_unverified(b)
    with pytest.raises(BundleError) as err:
        VlmRuntime(b, GESTURES, F32)
    msg = str(err.value)
    assert str(b) in msg and "verification.passed = false" in msg and "vlm.allow_unverified = true" in msg
    rt = VlmRuntime(b, GESTURES, F32, allow_unverified=True)
    assert rt.classify(crop())[0].label in rt.labels


def _daemon_config(tmp_path: Path, bundle: Path, **vlm):
    from edge_gesture.config import parse_config

    return parse_config({"service": {"cache_dir": str(tmp_path / "cache")},
                         "vlm": {"enabled": True, "bundle": str(bundle), "precision": "f32", **vlm}})


def test_the_daemon_warns_at_each_start_of_an_unverified_bundle(tiny_ov_bundle, tmp_path):
    from structlog.testing import capture_logs

    from edge_gesture.vlm.worker import load_runtime

    b = copy_bundle(tiny_ov_bundle, tmp_path / "unverified")
    _mark_unverified(b)
    with pytest.raises(BundleError, match="vlm.allow_unverified"):
        load_runtime(_daemon_config(tmp_path, b))
    cfg = _daemon_config(tmp_path, b, allow_unverified=True)
    for _ in range(2):
        with capture_logs() as logs:
            load_runtime(cfg)
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert len(warnings) == 1 and "allow_unverified" in warnings[0]["event"]
        assert warnings[0]["bundle"] == str(b)
    # A bundle that passed gives no such warning, whatever the flag says.
    with capture_logs() as logs:
        load_runtime(_daemon_config(tmp_path, tiny_ov_bundle, allow_unverified=True))
    assert not [e for e in logs if e["log_level"] == "warning"]


def test_a_symbolic_link_inside_the_bundle_is_refused(tiny_ov_bundle, tmp_path):
    b = copy_bundle(tiny_ov_bundle, tmp_path / "linked")
    elsewhere = tmp_path / "elsewhere.json"
    (b / "tokenizer.json").rename(elsewhere)
    (b / "tokenizer.json").symlink_to(elsewhere)  # same bytes, so the checksum still matches
    with pytest.raises(BundleError, match=r"linked/tokenizer\.json: a symbolic link inside the bundle"):
        VlmRuntime(b, GESTURES, F32)
    # The bundle folder itself may be a link (e.g. models/current -> models/smolvlm-...).
    (b / "tokenizer.json").unlink()
    elsewhere.rename(b / "tokenizer.json")
    (tmp_path / "current").symlink_to(b)
    VlmRuntime(tmp_path / "current", GESTURES, F32)


def _move_decoder_weights_out(bundle: Path, location: str) -> Path:
    """Re-save decoder.onnx with its tensors in `location` (ONNX external data), updating the
    manifest's entry for decoder.onnx only."""
    import onnx

    from edge_gesture.bundle import file_entries

    model = onnx.load(str(bundle / "decoder.onnx"))
    onnx.save_model(model, str(bundle / "decoder.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    m = json.loads((bundle / MANIFEST_NAME).read_text())
    m["files"]["decoder.onnx"] = file_entries(bundle)["decoder.onnx"].model_dump()
    (bundle / MANIFEST_NAME).write_text(json.dumps(m))
    return bundle / location


def test_onnx_external_data_must_be_listed_in_the_manifest(tiny_onnx_bundle, tmp_path):
    b = copy_bundle(tiny_onnx_bundle, tmp_path / "external")
    data = _move_decoder_weights_out(b, "decoder.onnx_data")
    with pytest.raises(BundleError) as err:
        VlmRuntime(b, GESTURES, F32)
    assert "decoder.onnx_data" in str(err.value) and "not listed" in str(err.value)
    # Listed (and so checked), it loads and answers as the one-file bundle does.
    from edge_gesture.bundle import file_entries

    m = json.loads((b / MANIFEST_NAME).read_text())
    m["files"][data.name] = file_entries(b)[data.name].model_dump()
    (b / MANIFEST_NAME).write_text(json.dumps(m))
    rt, ref = VlmRuntime(b, GESTURES, F32), VlmRuntime(tiny_onnx_bundle, GESTURES, F32)
    pv = pixel_values(crop(), rt.manifest.image)
    np.testing.assert_allclose(rt.backend.prefill(rt.backend.vision(pv)),
                               ref.backend.prefill(ref.backend.vision(pv)), atol=1e-6)
    # Listed but since changed: the checksum catches it, as for any other file.
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"decoder\.onnx_data: sha256"):
        VlmRuntime(b, GESTURES, F32)
