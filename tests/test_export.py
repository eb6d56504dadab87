"""edge-gesture-export on a tiny random SmolVLM: both formats, all three device profiles, the
manifest and checksums, shapes, parity with PyTorch, and the inputs it must refuse.

Each bundle is exported once per session and shared by the tests that read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="export tests need the export extra (torch)")
pytest.importorskip("optimum.intel", reason="export tests need the export extra (optimum-intel)")
pytest.importorskip("edge_gesture_export", reason="pip install --no-deps -e ./export")

from edge_gesture_export import __version__, verify  # noqa: E402
from edge_gesture_export.cli import main  # noqa: E402
from edge_gesture_export.errors import ExportError  # noqa: E402
from edge_gesture_export.export import Options  # noqa: E402

from edge_gesture.bundle import MANIFEST_NAME, BundleManifest, load_bundle_manifest  # noqa: E402
from tests.export_worker import export_pool, export_quietly  # noqa: E402
from tests.tiny_smolvlm import TINY_IMAGE_SIZE, TINY_IMAGE_TOKENS, build_tiny_smolvlm  # noqa: E402

pytestmark = pytest.mark.export

PROMPT_CHUNK, KV_SLOTS = 64, 80  # the tiny model's prompt is 45 tokens
CONFIGS = {
    "ov-int8-cpu": dict(format="openvino", weights="int8", device_profile="cpu"),
    "ov-fp16-gpu": dict(format="openvino", weights="fp16", device_profile="gpu"),
    "ov-int8-visionint8-cpu": dict(
        format="openvino", weights="int8", quantize_vision="static-int8", device_profile="cpu"
    ),
    "ov-fp32-npu": dict(format="openvino", weights="fp32", device_profile="npu"),
    "onnx-int8-cpu": dict(format="onnx", weights="int8", device_profile="cpu"),
    "onnx-fp32-npu": dict(format="onnx", weights="fp32", device_profile="npu"),
}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_smolvlm(tmp_path_factory.mktemp("tiny") / "tiny-smolvlm")


@pytest.fixture(scope="session")
def calibration_dir(tmp_path_factory) -> Path:
    from PIL import Image, ImageDraw

    d = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(3)
    for i in range(6):
        img = Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8))
        ImageDraw.Draw(img).ellipse([10, 20, 60, 80], fill=(220, 170, 140))
        img.save(d / f"crop{i}.{'png' if i % 2 else 'jpg'}")
    return d


@pytest.fixture(scope="session")
def bundles(tiny, calibration_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    made: dict[str, tuple[Path, BundleManifest]] = {}
    pool = export_pool()

    def get(name: str) -> tuple[Path, BundleManifest]:
        if name not in made:
            cfg = dict(CONFIGS[name])
            if cfg.get("quantize_vision") == "static-int8":
                cfg["calibration"] = calibration_dir
            options = Options(model=str(tiny), output=out / name, max_prompt_length=PROMPT_CHUNK,
                              kv_length=KV_SLOTS, **cfg)
            result = pool.submit(export_quietly, options).result()
            made[name] = (result.bundle, result.manifest)
        return made[name]

    yield get
    pool.shutdown()


@pytest.fixture(scope="session")
def processor_inputs(tiny):
    """What transformers' processor makes of the verification image and question."""
    from edge_gesture_export.facts import chat_prompt
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny)
    proc.image_processor.do_image_splitting = False
    image = verify.verification_image(TINY_IMAGE_SIZE)
    return proc, proc(text=[chat_prompt(proc, verify.QUESTION)], images=[[image]], return_tensors="np")


# ---------------------------------------------------------------- every bundle


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bundle_is_complete_checksummed_and_verified(bundles, name: str) -> None:
    root, manifest = bundles(name)
    cfg = CONFIGS[name]
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk - {MANIFEST_NAME} == set(manifest.files)
    for rel, entry in manifest.files.items():
        data = (root / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256, rel
        assert len(data) == entry.size
    assert load_bundle_manifest(root) == manifest  # what the daemon will do
    assert (manifest.format, manifest.weights_precision, manifest.device_profile) == (
        cfg["format"],
        cfg["weights"],
        cfg["device_profile"],
    )
    assert manifest.tool.version == __version__
    assert manifest.source.model_type == "idefics3"
    v = manifest.verification
    assert v is not None and v.passed and v.steps == verify.DECODE_STEPS
    if cfg["weights"] in ("fp32", "fp16") and cfg.get("quantize_vision") is None:
        assert v.tolerance is not None and v.max_abs_logit_diff <= v.tolerance


@pytest.mark.parametrize("name", ["ov-int8-cpu", "onnx-fp32-npu"])
def test_manifest_prompt_and_tokens_rebuild_the_processor_input(bundles, processor_inputs, name: str) -> None:
    from tokenizers import Tokenizer

    root, m = bundles(name)
    proc, inputs = processor_inputs
    tok = Tokenizer.from_file(str(root / m.tokenizer))
    ids = tok.encode(m.prompt.render(verify.QUESTION), add_special_tokens=m.prompt.add_special_tokens)
    assert ids.ids == inputs["input_ids"][0].tolist()
    assert m.image_tokens_per_image == TINY_IMAGE_TOKENS
    assert ids.ids.count(m.tokens.image.id) == TINY_IMAGE_TOKENS
    for ref in (m.tokens.image, m.tokens.fake_token_around_image, m.tokens.global_image):
        assert tok.token_to_id(ref.text) == ref.id
    assert m.tokens.end_of_utterance.id in m.tokens.eos_token_ids
    assert m.image.size == TINY_IMAGE_SIZE and m.image.resample == "lanczos"
    # The manifest's rescale/mean/std turn raw pixels into the processor's pixel_values (a flat
    # colour, so the processor's two Lanczos resizes leave the pixels as they are).
    colour = np.array([200, 90, 30], np.uint8)
    raw = np.broadcast_to(colour, (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3)).copy()
    want = proc.image_processor(images=[[raw]], return_tensors="np")["pixel_values"][0, 0]
    got = (raw.astype(np.float32) * m.image.rescale_factor - m.image.mean) / m.image.std
    np.testing.assert_allclose(got.transpose(2, 0, 1), want, atol=1e-5)


# ---------------------------------------------------------------- shapes by profile


def _ov_shapes(path: Path):
    import openvino as ov

    model = ov.Core().read_model(path)
    return {p.get_any_name(): p.get_partial_shape() for p in [*model.inputs, *model.outputs]}


def test_npu_openvino_bundle_is_static_and_runs_on_the_cpu_plugin(bundles) -> None:
    import openvino as ov

    root, m = bundles("ov-fp32-npu")
    assert m.static_shapes.max_prompt_length == PROMPT_CHUNK
    assert m.static_shapes.kv_length == KV_SLOTS
    core = ov.Core()
    for role, part in m.models.items():
        shapes = _ov_shapes(root / part.file)
        assert all(s.is_static for s in shapes.values()), (role, shapes)
        for name, dims in {**part.inputs, **part.outputs}.items():
            assert list(shapes[name].to_shape()) == dims, (role, name)
        compiled = core.compile_model(root / part.file, "CPU")
        feeds = {
            p.get_any_name(): np.zeros(list(p.get_shape()), p.get_element_type().to_dtype())
            for p in compiled.inputs
        }
        compiled(feeds)
    vision = m.models["vision"].inputs["pixel_values"]
    assert vision == [1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]
    lang = m.models["language"]
    assert lang.inputs["inputs_embeds"] == [1, PROMPT_CHUNK, m.language.hidden_size]
    assert lang.inputs["attention_mask"] == [1, KV_SLOTS + PROMPT_CHUNK]
    kv = [1, m.language.num_key_value_heads, KV_SLOTS, m.language.head_dim]
    assert lang.inputs["past_key_values.0.key"] == kv
    assert lang.outputs["present.0.key"] == [1, kv[1], PROMPT_CHUNK, kv[3]]
    assert lang.outputs["logits"] == [1, PROMPT_CHUNK, m.language.vocab_size]
    assert m.models["text_embeddings"].inputs == {"input": [1, PROMPT_CHUNK]}


def test_npu_onnx_bundle_is_static(bundles) -> None:
    import onnx

    root, m = bundles("onnx-fp32-npu")
    for part in m.models.values():
        graph = onnx.load(str(root / part.file)).graph
        for v in [*graph.input, *graph.output]:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            assert None not in dims and 0 not in dims, (part.file, v.name, dims)


def test_cpu_openvino_language_model_is_stateful_with_dynamic_length(bundles) -> None:
    import openvino as ov

    root, m = bundles("ov-int8-cpu")
    assert m.language.stateful and m.static_shapes is None
    model = ov.Core().read_model(root / m.models["language"].file)
    assert len(model.get_sinks()) == 2 * m.language.num_layers  # one state per key and value
    shape = _ov_shapes(root / m.models["language"].file)["inputs_embeds"]
    assert shape[1].is_dynamic
    assert set(m.models["vision"].inputs) == {
        "pixel_values",
        "patch_attention_mask",
        "patch_position_ids",
    }
    assert len(m.image.patch_position_ids) == (TINY_IMAGE_SIZE // m.image.patch_size) ** 2


def test_onnx_cpu_decoder_takes_and_returns_past_key_values(bundles) -> None:
    import onnx

    root, m = bundles("onnx-int8-cpu")
    lang = m.models["language"]
    assert not m.language.stateful
    assert lang.inputs["past_key_values.0.key"][2] == "past_sequence"
    assert lang.outputs["present.0.key"][2] == "total_sequence"
    ops = {n.op_type for n in onnx.load(str(root / lang.file)).graph.node}
    # ONNX Runtime's dynamic INT8: int8 weights, activations quantized on the fly.
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops


# ---------------------------------------------------------------- precision


def test_static_int8_vision_quantizes_activations(bundles) -> None:
    import openvino as ov

    root, m = bundles("ov-int8-visionint8-cpu")
    assert m.models["vision"].activations_precision == "int8"
    assert m.models["language"].activations_precision == "fp32"
    assert m.activations_precision == "int8"
    assert m.tool.options["quantize_vision"] == "static-int8"
    ops = {op.get_type_name() for op in ov.Core().read_model(root / m.models["vision"].file).get_ops()}
    assert "FakeQuantize" in ops


def test_int8_weights_make_the_bundle_smaller(bundles) -> None:
    def lm_bytes(name: str) -> int:
        root, m = bundles(name)
        stem = Path(m.models["language"].file).stem
        return m.files[f"{stem}.bin"].size

    assert lm_bytes("ov-int8-cpu") < 0.6 * lm_bytes("ov-fp16-gpu")


# ---------------------------------------------------------------- parity, independently


def test_onnx_vision_encoder_matches_pytorch(bundles, tiny, processor_inputs) -> None:
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForImageTextToText

    root, m = bundles("onnx-fp32-npu")
    _, inputs = processor_inputs
    model = AutoModelForImageTextToText.from_pretrained(tiny, dtype=torch.float32).eval()
    with torch.no_grad():
        want = model.model.get_image_features(
            torch.from_numpy(inputs["pixel_values"]),
            torch.from_numpy(inputs["pixel_attention_mask"]),
        ).numpy()
    sess = ort.InferenceSession(str(root / m.models["vision"].file), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"pixel_values": inputs["pixel_values"][0]})
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-4)


def test_optimum_intel_loads_the_cpu_bundle(bundles, tiny, processor_inputs) -> None:
    """The bundle doubles as an optimum-intel model folder (the VLM benchmark's reference)."""
    import torch
    from optimum.intel import OVModelForVisualCausalLM
    from transformers import AutoModelForImageTextToText

    root, _ = bundles("ov-int8-cpu")
    _, inputs = processor_inputs
    feeds = {k: torch.from_numpy(v) for k, v in inputs.items() if k != "token_type_ids"}
    ov_model = OVModelForVisualCausalLM.from_pretrained(root, device="CPU", compile=True)
    pt_model = AutoModelForImageTextToText.from_pretrained(tiny, dtype=torch.float32).eval()
    with torch.no_grad():
        want = pt_model(**feeds).logits[0, -1]
    got = ov_model(**feeds).logits[0, -1]
    assert int(got.argmax()) == int(want.argmax())


def test_the_verification_process_names_the_file_it_could_not_run(bundles, tmp_path) -> None:
    """The bundle runs in a separate process for the verification: when that process fails,
    the export says which bundle and why, not just that a child died."""
    import shutil

    from edge_gesture_export.verify_process import run_bundle_in_fresh_process

    root, m = bundles("ov-int8-cpu")
    broken = tmp_path / "bundle"
    shutil.copytree(root, broken)
    lm = broken / m.models["language"].file
    lm.write_bytes(lm.read_bytes()[:100])
    ref = verify.Reference("p", np.zeros(3, np.int64), np.zeros((1, 3, 8, 8), np.float32), [1],
                           [np.zeros(4, np.float32)] * 2)
    with pytest.raises(ExportError) as e:
        run_bundle_in_fresh_process(broken, ref, tmp_path / "work")
    assert str(broken) in str(e.value) and m.models["language"].file in str(e.value)


def test_verification_fails_when_the_bundle_drifts(bundles) -> None:
    root, m = bundles("onnx-fp32-npu")
    rng = np.random.default_rng(1)
    logits = [rng.normal(0, 2, m.language.vocab_size).astype(np.float32) for _ in range(3)]
    ref = verify.Reference("p", np.zeros(3, np.int64), np.zeros(1), [1, 2], logits)
    ok = verify.compare(m, ref, [x + 1e-4 for x in logits])
    assert ok.passed and ok.top1_agree
    drifted = [x.copy() for x in logits]
    drifted[1][0] += 1.0  # beyond 1e-3 x max|logit| and enough to change nothing else
    bad = verify.compare(m, ref, drifted)
    assert not bad.passed and bad.max_abs_logit_diff == pytest.approx(1.0, abs=1e-3)
    assert "FAIL" in verify.report_lines(ref, drifted, bad)[-1]

    q_root, q = bundles("onnx-int8-cpu")
    swapped = [x.copy() for x in logits]
    top, second = np.argsort(logits[2])[::-1][:2]
    swapped[2][second] = logits[2][top] + 5.0  # a decisive different pick
    assert not verify.compare(q, ref, swapped).passed
    tied = [x.copy() for x in logits]
    tied[2][top] = tied[2][second] + 1e-3  # PyTorch's own pick, by a hair: rounding may flip it
    flipped = [x.copy() for x in tied]
    flipped[2][second] += 2e-3
    v = verify.compare(q, verify.Reference("p", ref.input_ids, ref.pixel_values, [1, 2], tied), flipped)
    assert v.passed and v.top1_ties == 1 and not v.top1_agree


def test_prompt_check_refuses_a_template_that_tokenizes_differently(bundles) -> None:
    root, m = bundles("ov-int8-cpu")
    with pytest.raises(ExportError, match="does not tokenize like the processor"):
        verify.add_special_tokens_flag(root / "tokenizer.json", "User: hello", np.array([1, 2, 3]))


# ---------------------------------------------------------------- refused inputs


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--quiet"])
    return code, capsys.readouterr().err


def test_empty_or_missing_calibration_folder(tiny, tmp_path, capsys) -> None:
    empty = tmp_path / "crops"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    base = ["--model", str(tiny), "--output", str(tmp_path / "b"), "--quantize-vision", "static-int8"]
    code, err = _cli(capsys, *base, "--calibration", str(empty))
    assert code == 2 and f"--calibration {empty}: no images in it" in err
    code, err = _cli(capsys, *base, "--calibration", str(tmp_path / "nope"))
    assert code == 2 and "no such folder" in err
    code, err = _cli(capsys, *base)
    assert code == 2 and "needs --calibration DIR" in err
    assert not (tmp_path / "b").exists()


def test_other_architectures_are_refused_by_name(tmp_path, capsys) -> None:
    llama = tmp_path / "tiny-llama"
    llama.mkdir()
    (llama / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    code, err = _cli(capsys, "--model", str(llama), "--output", str(tmp_path / "b"))
    assert code == 2
    assert "architecture LlamaForCausalLM (model_type 'llama') is not supported" in err


def test_existing_output_needs_force(bundles, tiny, tmp_path, capsys) -> None:
    out = tmp_path / "bundle"
    shutil.copytree(bundles("onnx-int8-cpu")[0], out)  # an earlier export
    args = ["--model", str(tiny), "--output", str(out), "--format", "onnx", "--weights", "fp32"]
    code, err = _cli(capsys, *args)
    assert code == 2 and f"{out} already exists: pass --force" in err
    assert load_bundle_manifest(out).weights_precision == "int8"
    # The export itself runs in another process, as everywhere in these tests.
    r = subprocess.run([sys.executable, "-m", "edge_gesture_export", *args, "--force", "--quiet"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    replaced = load_bundle_manifest(out)
    assert replaced.weights_precision == "fp32" and replaced.verification.passed


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _fake_bundle(out: Path) -> None:
    out.mkdir()
    (out / "model.bin").write_bytes(b"weights")
    (out / MANIFEST_NAME).write_text(json.dumps({"files": {"model.bin": {"size": 7}}}))


@pytest.mark.parametrize("layout", ["someone's files", "a bundle plus other files", "a file"])
def test_force_never_deletes_what_is_not_a_bundle(tmp_path, capsys, layout: str) -> None:
    """A mistyped --output (a home folder, a project) with --force must not cost anyone files."""
    out = tmp_path / "out"
    if layout == "someone's files":
        (out / "thesis").mkdir(parents=True)
        (out / "thesis" / "chapter1.tex").write_text("years of work")
        (out / "notes.txt").write_text("mine")
        expect = "not a bundle (no readable edge-gesture-model.json) and not empty"
    elif layout == "a bundle plus other files":
        _fake_bundle(out)
        (out / "notes.txt").write_text("mine")
        expect = "holds 1 file(s) its bundle manifest does not list (notes.txt)"
    else:
        out.write_text("mine")
        expect = "exists and is not a folder: --force replaces only a bundle folder or an empty folder"
    before = _tree(tmp_path)
    code, err = _cli(capsys, "--model", str(tmp_path / "any-model"), "--output", str(out), "--force")
    assert code == 2 and expect in err, err
    assert _tree(tmp_path) == before


def test_force_replaces_an_empty_folder_or_a_bundle(tmp_path) -> None:
    from edge_gesture_export.export import check_options

    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_options(Options(model="m", output=empty, force=True))[0] == empty
    bundle = tmp_path / "bundle"
    _fake_bundle(bundle)
    assert check_options(Options(model="m", output=bundle, force=True))[0] == bundle


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "onnx", "--weights", "int4"], "--weights int4 is for --format openvino"),
        (["--revision", "abc123"], "--revision abc123 applies to hub ids"),
        (["--device-profile", "npu", "--kv-length", "64"], "--kv-length (64) must be larger"),
        (["--calibration", "x"], "--calibration is only used with --quantize-vision static-int8"),
    ],
)
def test_contradictory_options(tiny, tmp_path, capsys, argv, message) -> None:
    code, err = _cli(capsys, "--model", str(tiny), "--output", str(tmp_path / "b"), *argv)
    assert code == 2 and message in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("offline_flag", [False, True])
def test_hub_id_without_network_fails_at_once(tmp_path, offline_flag: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    # A hub that refuses connections: what "no network" looks like, wherever the test runs.
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache
    if offline_flag:
        env["HF_HUB_OFFLINE"] = "1"
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "edge_gesture_export", "--model", "HuggingFaceTB/SmolVLM-256M-Instruct"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - t < 30
    assert "pass its local directory: --model /path/to/model" in proc.stderr
    assert ("HF_HUB_OFFLINE" in proc.stderr) == offline_flag
