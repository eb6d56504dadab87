"""The bundle manifest: what the daemon accepts and how it names what is wrong."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edge_gesture.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    BundleError,
    BundleManifest,
    file_entries,
    load_bundle_manifest,
    now,
    write_bundle_manifest,
)

IMAGE_SEQ = "<fake_token_around_image><global-img>" + "<image>" * 4 + "<fake_token_around_image>"


def _part(file: str) -> dict:
    return {
        "file": file,
        "weights_precision": "int8",
        "activations_precision": "fp32",
        "inputs": {"x": [1, "seq"]},
        "outputs": {"y": [1, "seq", 8]},
    }


def _write_bundle(root: Path, **overrides) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("vision", "embed", "lm"):
        (root / f"{name}.xml").write_text(f"<net name='{name}'/>")
        (root / f"{name}.bin").write_bytes(bytes(range(256)) * 4)
    (root / "tokenizer.json").write_text('{"model": {}}')
    data = {
        "schema_version": SCHEMA_VERSION,
        "format": "openvino",
        "weights_precision": "int8",
        "activations_precision": "fp32",
        "device_profile": "cpu",
        "image": {
            "size": 64,
            "patch_size": 16,
            "resample": "lanczos",
            "rescale_factor": 1 / 255,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        },
        "image_tokens_per_image": 4,
        "tokens": {
            "image": {"text": "<image>", "id": 10},
            "fake_token_around_image": {"text": "<fake_token_around_image>", "id": 11},
            "global_image": {"text": "<global-img>", "id": 12},
            "end_of_utterance": {"text": "<end_of_utterance>", "id": 13},
            "eos_token_ids": [2, 13],
        },
        "prompt": {
            "template": "<|im_start|>User:{image}{question}<end_of_utterance>\nAssistant:",
            "image_sequence": IMAGE_SEQ,
            "add_special_tokens": False,
        },
        "language": {
            "vocab_size": 100,
            "hidden_size": 8,
            "num_layers": 2,
            "num_key_value_heads": 1,
            "head_dim": 4,
            "stateful": True,
        },
        "models": {
            "vision": _part("vision.xml"),
            "text_embeddings": _part("embed.xml"),
            "language": _part("lm.xml"),
        },
        "files": {k: v.model_dump() for k, v in file_entries(root).items()},
        "source": {
            "model": "HuggingFaceTB/SmolVLM-256M-Instruct",
            "revision": None,
            "architecture": "Idefics3ForConditionalGeneration",
            "model_type": "idefics3",
        },
        "tool": {"name": "edge-gesture-export", "version": "0.1.0"},
        "created": now().isoformat(),
    }
    data.update(overrides)
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    return data


def test_valid_bundle_loads_and_renders_the_prompt(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    m = load_bundle_manifest(tmp_path)
    assert m.models["language"].file == "lm.xml"
    text = m.prompt.render("Which gesture? Say {image} literally.")
    assert text == (
        f"<|im_start|>User:{IMAGE_SEQ}Which gesture? Say {{image}} literally.<end_of_utterance>\nAssistant:"
    )


def test_written_manifest_round_trips(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    m = load_bundle_manifest(tmp_path)
    write_bundle_manifest(tmp_path, m)
    assert load_bundle_manifest(tmp_path) == m


def test_missing_file_is_named(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    (tmp_path / "lm.bin").unlink()
    with pytest.raises(BundleError, match=r"lm\.bin: missing"):
        load_bundle_manifest(tmp_path)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    raw = bytearray((tmp_path / "vision.bin").read_bytes())
    raw[100] ^= 0xFF  # same size, different content: only the checksum can tell
    (tmp_path / "vision.bin").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"vision\.bin: sha256 does not match .*files\.vision\.bin"):
        load_bundle_manifest(tmp_path)
    # Size-only checking is the documented fast path and does not read the content.
    load_bundle_manifest(tmp_path, checksums=False)


def test_truncated_file_is_caught_even_without_checksums(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    (tmp_path / "embed.bin").write_bytes(b"short")
    with pytest.raises(BundleError, match=r"embed\.bin: size 5 bytes"):
        load_bundle_manifest(tmp_path, checksums=False)


def test_newer_schema_is_refused_with_the_reason(tmp_path: Path) -> None:
    _write_bundle(
        tmp_path,
        schema_version=SCHEMA_VERSION + 1,
        tool={"name": "edge-gesture-export", "version": "9.0.0"},
        a_field_from_the_future=True,
    )
    with pytest.raises(BundleError, match=r"schema_version 2 is newer.*edge-gesture-export 9\.0\.0"):
        load_bundle_manifest(tmp_path)


def test_unparseable_json_gives_the_position(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"schema_version": 1,\n  "format": }')
    with pytest.raises(BundleError, match=r"edge-gesture-model\.json: not valid JSON: .* line 2"):
        load_bundle_manifest(tmp_path)


def test_no_manifest_and_no_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle_manifest(tmp_path / "nope")
    with pytest.raises(BundleError, match="no manifest"):
        load_bundle_manifest(tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"format": "tflite"}, r"format: Input should be 'openvino' or 'onnx'"),
        ({"device_profile": "npu"}, r"static_shapes is required when device_profile is npu"),
        ({"image_tokens_per_image": 64}, r"holds <image> 4 times, image_tokens_per_image is 64"),
        ({"colour": "red"}, r"colour: unknown field"),
        ({"schema_version": "1"}, r"schema_version: missing or not an integer"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, override: dict, message: str) -> None:
    _write_bundle(tmp_path, **override)
    with pytest.raises(BundleError, match=message):
        load_bundle_manifest(tmp_path)


def test_model_file_must_be_listed(tmp_path: Path) -> None:
    data = _write_bundle(tmp_path)
    del data["files"]["lm.bin"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"models\.language: OpenVINO needs an \.xml and its \.bin"):
        load_bundle_manifest(tmp_path)


def test_paths_escaping_the_bundle_are_refused(tmp_path: Path) -> None:
    data = _write_bundle(tmp_path)
    data["files"]["../etc/passwd"] = data["files"]["lm.bin"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"files: .*'\.\./etc/passwd' is not a plain relative path"):
        load_bundle_manifest(tmp_path)


def test_static_shapes_only_with_npu(tmp_path: Path) -> None:
    shapes = {"max_prompt_length": 128, "kv_length": 160}
    _write_bundle(tmp_path, device_profile="npu", static_shapes=shapes)
    assert load_bundle_manifest(tmp_path).static_shapes.kv_length == 160
    _write_bundle(tmp_path, device_profile="gpu", static_shapes=shapes)
    with pytest.raises(BundleError, match="static_shapes is only for device_profile npu"):
        load_bundle_manifest(tmp_path)
    _write_bundle(tmp_path, device_profile="npu", static_shapes={"max_prompt_length": 128, "kv_length": 64})
    with pytest.raises(BundleError, match=r"static_shapes: kv_length must be > max_prompt_length"):
        load_bundle_manifest(tmp_path)


def test_every_role_is_required(tmp_path: Path) -> None:
    data = _write_bundle(tmp_path)
    del data["models"]["text_embeddings"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="models must have exactly the roles vision, text_embeddings"):
        load_bundle_manifest(tmp_path)


def test_every_field_is_described() -> None:
    # The schema doubles as the documentation in models/README.md.
    schema = BundleManifest.model_json_schema()
    missing = [
        f"{name}.{field}"
        for name, d in [("BundleManifest", schema), *schema["$defs"].items()]
        for field, spec in d.get("properties", {}).items()
        if "description" not in spec
    ]
    assert missing == []


def _verification(passed: bool) -> dict:
    return {"reference": "PyTorch fp32", "max_abs_logit_diff": 2.5, "tolerance": None,
            "steps": 3, "top1_agree": passed, "passed": passed}


def test_a_failed_verification_is_refused_unless_allowed(tmp_path: Path) -> None:
    _write_bundle(tmp_path, verification=_verification(False))
    with pytest.raises(BundleError) as err:
        load_bundle_manifest(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path}: ") and "verification.passed = false" in msg
    assert "set vlm.allow_unverified = true" in msg
    assert not load_bundle_manifest(tmp_path, allow_unverified=True).verification.passed
    # Passed, or never verified (a bundle the export is still checking): loads as before.
    _write_bundle(tmp_path, verification=_verification(True))
    load_bundle_manifest(tmp_path)
    _write_bundle(tmp_path)
    load_bundle_manifest(tmp_path)


@pytest.mark.parametrize("what", ["file", "folder", "manifest"])
def test_symbolic_links_inside_the_bundle_are_refused(tmp_path: Path, what: str) -> None:
    root = tmp_path / "bundle"
    data = _write_bundle(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    if what == "file":  # same bytes, so size and sha256 would both pass
        (root / "lm.bin").rename(outside / "lm.bin")
        (root / "lm.bin").symlink_to(outside / "lm.bin")
        link = root / "lm.bin"
    elif what == "folder":
        (outside / "x.bin").write_bytes(b"x")
        (root / "extra").symlink_to(outside, target_is_directory=True)
        data["files"]["extra/x.bin"] = {"sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}
        (root / MANIFEST_NAME).write_text(json.dumps(data))
        link = root / "extra"
    else:
        (root / MANIFEST_NAME).rename(outside / MANIFEST_NAME)
        (root / MANIFEST_NAME).symlink_to(outside / MANIFEST_NAME)
        link = root / MANIFEST_NAME
    with pytest.raises(BundleError, match=rf"^{link}: a symbolic link inside the bundle"):
        load_bundle_manifest(root, checksums=True)
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle_manifest(root, checksums=False)


def test_the_bundle_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    _write_bundle(tmp_path / "smolvlm-a")
    (tmp_path / "current").symlink_to(tmp_path / "smolvlm-a", target_is_directory=True)
    assert load_bundle_manifest(tmp_path / "current").models["language"].file == "lm.xml"
