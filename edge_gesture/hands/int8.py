"""The INT8 hand-landmark model that `edge-gesture-export --hand-models` writes, and its checks.

The landmark model runs on every frame for every followed hand, so it is the hand stage's
steady cost. NNCF quantizes its activations and weights to INT8, calibrated on hands found in
the user's own photos; the export then measures the INT8 landmarks against the FP32 model's on
hands it did not calibrate on, and the folder is accepted only when they stay within BOUNDS.
The daemon loads it in place of MediaPipe's FP32 model when `hands.int8_models` names the folder.

The palm detector stays FP32: quantized the same way its scores moved by up to 0.45 on a 0..1
scale (its score head does not survive INT8), for 8% less time a square on an AVX2 CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_gesture.bundle import sha256_file
from edge_gesture.hands.models import HandModelError

MANIFEST_NAME = "edge-gesture-hands.json"
FORMAT_VERSION = 1


class Bounds(BaseModel):
    """How far the INT8 landmarks may be from the FP32 model's, on hands the calibration did not
    see. A palm length is the wrist to the middle finger's knuckle; the gesture rules measure in
    it. The FP32 model run by OpenVINO is held to the same 0.02 / 0.05 against MediaPipe's own
    graph (tests/test_hands_openvino.py)."""

    model_config = ConfigDict(extra="forbid")
    mean_palm_lengths: float = 0.02
    p95_palm_lengths: float = 0.05
    presence_max_diff: float = 0.05
    handedness_agreement: float = 0.98


BOUNDS = Bounds()


class Measured(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hands: int = Field(description="Held-out hands compared (not used for calibration).")
    mean_palm_lengths: float = Field(description="Mean over hands of each hand's mean landmark error.")
    p95_palm_lengths: float
    max_palm_lengths: float
    presence_max_diff: float
    handedness_agreement: float


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int


class HandModelsManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: Literal[1] = FORMAT_VERSION
    model: Literal["hand_landmark"] = "hand_landmark"
    model_complexity: Literal[0, 1]
    file: str = Field(description="The INT8 model's .xml, relative to the folder.")
    source: str = Field(description="The mediapipe .tflite it was quantized from.")
    source_sha256: str
    calibration: str = Field(description="The calibration folder, as given.")
    calibration_hands: int
    measured: Measured
    bounds: Bounds
    passed: bool
    tools: dict[str, str] = Field(default_factory=dict)
    created: str
    files: dict[str, FileEntry]


def palm_length_errors(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each landmark's distance from the reference's, in the reference hand's palm lengths: a
    measure that does not grow with the picture or the hand's size."""
    palm = float(np.linalg.norm(reference[9, :2] - reference[0, :2]))
    return np.linalg.norm(points[:, :2] - reference[:, :2], axis=1) / max(palm, 1e-6)


def within_bounds(m: Measured, b: Bounds = BOUNDS) -> list[str]:
    """What is out of bounds, as lines for the user (empty: passed)."""
    out = []
    if m.mean_palm_lengths > b.mean_palm_lengths:
        out.append(f"mean landmark error {m.mean_palm_lengths:.4f} > {b.mean_palm_lengths} palm lengths")
    if m.p95_palm_lengths > b.p95_palm_lengths:
        out.append(f"p95 landmark error {m.p95_palm_lengths:.4f} > {b.p95_palm_lengths} palm lengths")
    if m.presence_max_diff > b.presence_max_diff:
        out.append(f"hand presence moved by up to {m.presence_max_diff:.3f} > {b.presence_max_diff}")
    if m.handedness_agreement < b.handedness_agreement:
        out.append(f"handedness agrees on {m.handedness_agreement:.1%} < {b.handedness_agreement:.0%}")
    return out


def int8_landmark_model(folder: str | Path, complexity: int) -> Path:
    """The INT8 model file to load for `hands.int8_models`, after checking the folder: its
    manifest, that it was made for this `model_complexity`, that it passed, and every file's
    sha256. Every refusal names the file and says what to do."""
    root = Path(folder)
    path = root / MANIFEST_NAME
    redo = "run `edge-gesture-export --hand-models --calibration DIR` again, or set hands.int8_models = \"\""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HandModelError(f"{path}: missing (hands.int8_models names a folder without the INT8 "
                             f"hand model's manifest); {redo}") from None
    except (OSError, ValueError) as e:
        raise HandModelError(f"{path}: unreadable ({e}); {redo}") from None
    try:
        manifest = HandModelsManifest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HandModelError(f"{path}: {where}: {first['msg']}; {redo}") from None
    if manifest.model_complexity != complexity:
        raise HandModelError(
            f"{path}: made for hands.model_complexity = {manifest.model_complexity}, the config "
            f"says {complexity}; export with --hand-complexity {complexity} or change the config")
    if not manifest.passed:
        raise HandModelError(f"{path}: the INT8 landmarks were out of bounds at export "
                             f"({'; '.join(within_bounds(manifest.measured, manifest.bounds))}); {redo}")
    for name, entry in manifest.files.items():
        f = root / name
        if not f.is_file():
            raise HandModelError(f"{f}: missing (listed in {path}); {redo}")
        if f.stat().st_size != entry.size or sha256_file(f) != entry.sha256:
            raise HandModelError(f"{f}: does not match its sha256 in {path} (damaged or replaced); {redo}")
    if manifest.file not in manifest.files:
        raise HandModelError(f"{path}: file {manifest.file} is not among its files; {redo}")
    return root / manifest.file
