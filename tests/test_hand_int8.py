"""`edge-gesture-export --hand-models`: the INT8 hand-landmark model, calibrated on hands in real
photos, measured against FP32 on others, and loaded by the daemon (`hands.int8_models`) only when
its folder checks out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("nncf", reason="the INT8 hand export needs the export extra (nncf)")
pytest.importorskip("edge_gesture_export", reason="pip install --no-deps -e ./export")

from edge_gesture.config import HandsConfig  # noqa: E402
from edge_gesture.errors import StartupError  # noqa: E402
from edge_gesture.hands.finder import OpenVinoHands  # noqa: E402
from edge_gesture.hands.int8 import BOUNDS, MANIFEST_NAME, HandModelsManifest, palm_length_errors  # noqa: E402
from tests.test_hands_openvino import GESTURES, spread  # noqa: E402

CALIBRATION_PER_CLASS = 6  # 48 photos: about 46 hands, half of them held out


def _export(*argv: str) -> subprocess.CompletedProcess:
    # A process of its own: NNCF and the conversion stay out of the test process (see
    # tests/export_worker.py), and this is the command a user runs.
    return subprocess.run([sys.executable, "-m", "edge_gesture_export", "--hand-models", *argv],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def split(gesture_data: Path, tmp_path_factory) -> tuple[Path, list[Path]]:
    """A calibration folder of some of the shared photos (links), and photos left out of it."""
    folder = tmp_path_factory.mktemp("hand-calibration")
    left_out = []
    for label in GESTURES:
        photos = sorted((gesture_data / label).glob("*.jpg"))
        chosen = spread(photos, CALIBRATION_PER_CLASS)
        for p in chosen:
            (folder / f"{label}-{p.name}").symlink_to(p)
        left_out += [p for p in photos if p not in chosen][:2]
    return folder, left_out


@pytest.fixture(scope="module")
def int8_dir(split, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "hands"
    done = _export("--calibration", str(split[0]), "--output", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "held-out hands" in done.stdout and f'int8_models = "{out}"' in done.stdout
    return out


def test_export_writes_a_checked_int8_model_within_the_stated_bounds(int8_dir: Path) -> None:
    import openvino as ov

    m = HandModelsManifest.model_validate_json((int8_dir / MANIFEST_NAME).read_text())
    assert m.passed and m.model_complexity == 1
    assert m.calibration_hands >= 20 and m.measured.hands >= 20
    assert m.measured.mean_palm_lengths <= BOUNDS.mean_palm_lengths
    assert m.measured.p95_palm_lengths <= BOUNDS.p95_palm_lengths
    assert m.measured.handedness_agreement >= BOUNDS.handedness_agreement
    assert set(m.files) == {m.file, m.file.replace(".xml", ".bin")}
    ops = {op.get_type_name() for op in ov.Core().read_model(int8_dir / m.file).get_ops()}
    assert "FakeQuantize" in ops, "activations are not quantized"


def test_the_daemon_reads_hands_with_it_like_fp32_on_photos_outside_the_calibration(int8_dir, split):
    fp32 = OpenVinoHands(HandsConfig(), static_images=True)
    int8 = OpenVinoHands(HandsConfig(int8_models=str(int8_dir)), static_images=True)
    errors, same_side = [], 0
    try:
        for photo in split[1]:
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            scale = np.array([image.shape[1], image.shape[0]], np.float32)
            for want in fp32.detect(image):
                got = [h for h in int8.detect(image)]
                assert got, f"INT8 lost the hand in {photo.name}"
                error, hand = min(((palm_length_errors(h.landmarks[:, :2] * scale,
                                                       want.landmarks[:, :2] * scale).mean(), h)
                                   for h in got), key=lambda e: e[0])
                errors.append(error)
                same_side += hand.handedness == want.handedness
    finally:
        fp32.close()
        int8.close()
    assert len(errors) >= 12
    assert np.mean(errors) <= BOUNDS.mean_palm_lengths, f"mean {np.mean(errors):.4f} palm lengths"
    assert same_side == len(errors)


def _copy(int8_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "hands"
    shutil.copytree(int8_dir, copy)
    return copy


def _refusal(folder: Path, complexity: int = 1) -> str:
    with pytest.raises(StartupError) as e:
        OpenVinoHands(HandsConfig(int8_models=str(folder), model_complexity=complexity))
    return str(e.value)


def test_a_damaged_model_file_is_refused_by_name(int8_dir, tmp_path) -> None:
    folder = _copy(int8_dir, tmp_path)
    weights = next(folder.glob("*.bin"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    message = _refusal(folder)
    assert str(weights) in message and "sha256" in message


def test_a_model_for_the_other_complexity_or_out_of_bounds_is_refused(int8_dir, tmp_path) -> None:
    assert "hands.model_complexity = 1" in _refusal(int8_dir, complexity=0)
    folder = _copy(int8_dir, tmp_path)
    manifest = folder / MANIFEST_NAME
    data = json.loads(manifest.read_text())
    data["passed"], data["measured"]["mean_palm_lengths"] = False, 0.08
    manifest.write_text(json.dumps(data))
    message = _refusal(folder)
    assert "out of bounds" in message and "mean landmark error 0.0800" in message


def test_a_folder_without_the_manifest_names_it(tmp_path) -> None:
    message = _refusal(tmp_path)
    assert str(tmp_path / MANIFEST_NAME) in message and "edge-gesture-export --hand-models" in message


def test_photos_without_enough_hands_are_refused_and_nothing_is_written(gesture_data, tmp_path):
    out = tmp_path / "hands"
    done = _export("--calibration", str(gesture_data / "none"), "--output", str(out), "--quiet")
    assert done.returncode == 2
    assert "photos; at least 20 are needed" in done.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_vlm_options_and_a_missing_calibration_are_refused(tmp_path) -> None:
    done = _export("--format", "onnx", "--calibration", str(tmp_path))
    assert done.returncode == 2 and "--format: VLM bundle options, not for --hand-models" in done.stderr
    done = _export("--output", str(tmp_path / "h"))
    assert done.returncode == 2 and "--hand-models needs --calibration DIR" in done.stderr
