"""`edge-gesture-export --hand-models`: MediaPipe's hand-landmark model quantized to INT8 by NNCF.

Calibration needs hands as the daemon crops them, so the daemon's own FP32 finder (OpenVINO, the
photo searched whole) finds the hands in the calibration photos and cuts each hand's 224x224
square exactly as it would in a frame. Every other hand calibrates; the hands in between are kept
out and the INT8 landmarks are measured against the FP32 model's on them (the bounds and the
manifest are in `edge_gesture.hands.int8`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_gesture_export import __version__, calibration
from edge_gesture_export.errors import ExportError, VerificationFailed
from edge_gesture_export.export import check_replaceable, repo_models_dir
from edge_gesture_export.progress import Progress

MIN_HANDS = 20


@dataclass
class HandModelsResult:
    folder: Path
    manifest: object  # edge_gesture.hands.int8.HandModelsManifest
    lines: list[str]


def default_output(complexity: int) -> Path:
    return repo_models_dir() / f"hand-landmark-{'full' if complexity else 'lite'}-int8"


def hand_crops(files: list[Path], complexity: int) -> list[np.ndarray]:
    """Each hand the daemon finds in the photos, as the BGR square the landmark model sees."""
    import cv2

    from edge_gesture.config import HandsConfig
    from edge_gesture.hands.finder import OpenVinoHandFinder

    finder = OpenVinoHandFinder(HandsConfig(model_complexity=complexity), static_images=True)
    side = finder.landmark_input_side
    crops = []
    try:
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                raise ExportError(f"--calibration: cannot read {f} as an image")
            finder.forget()
            crops += [r.region.crop(image, side) for r in finder.find(image)]
    finally:
        finder.close()
    return crops


def _model_input(crop: np.ndarray) -> np.ndarray:
    """The .tflite's own input: RGB floats in 0..1 (the daemon adds this conversion on top)."""
    return (crop[..., ::-1].astype(np.float32) / 255.0)[None]


def measure(fp32, int8, crops: list[np.ndarray]):
    """INT8 against FP32 on the held-out hands."""
    from edge_gesture.hands.int8 import Measured, palm_length_errors

    a_req, b_req = fp32.create_infer_request(), int8.create_infer_request()
    errors, presence, agree = [], [], 0
    for crop in crops:
        x = _model_input(crop)
        a = [v.copy() for v in a_req.infer({0: x}).values()]
        b = list(b_req.infer({0: x}).values())
        ref, got = a[0].reshape(21, 3), b[0].reshape(21, 3)
        errors.append(float(palm_length_errors(got, ref).mean()))
        presence.append(abs(float(a[1].ravel()[0]) - float(b[1].ravel()[0])))
        agree += (float(a[2].ravel()[0]) > 0.5) == (float(b[2].ravel()[0]) > 0.5)
    e = np.array(errors)
    return Measured(hands=len(crops), mean_palm_lengths=round(float(e.mean()), 5),
                    p95_palm_lengths=round(float(np.percentile(e, 95)), 5),
                    max_palm_lengths=round(float(e.max()), 5),
                    presence_max_diff=round(float(max(presence)), 5),
                    handedness_agreement=round(agree / len(crops), 5))


def export_hand_models(calibration_dir: Path | None, output: Path | None, complexity: int, force: bool,
                       progress: Progress) -> HandModelsResult:
    import nncf
    import openvino as ov

    from edge_gesture.bundle import sha256_file
    from edge_gesture.hands.int8 import (
        BOUNDS,
        MANIFEST_NAME,
        FileEntry,
        HandModelsManifest,
        within_bounds,
    )
    from edge_gesture.hands.models import HandModelError, model_path

    files = calibration.find_images(calibration_dir, needed_for="--hand-models")
    out = output or default_output(complexity)
    if out.exists() or out.is_symlink():
        if not force:
            raise ExportError(f"{out} already exists: pass --force to replace it, or --output elsewhere")
        check_replaceable(out, MANIFEST_NAME)
    try:
        source = model_path("hand_landmark", complexity)
    except HandModelError as e:
        raise ExportError(str(e)) from None

    with progress.step(f"finding hands in {len(files)} calibration photos"):
        crops = hand_crops(files, complexity)
    if len(crops) < MIN_HANDS:
        raise ExportError(
            f"--calibration {calibration_dir}: found {len(crops)} hand(s) in {len(files)} photos; "
            f"at least {MIN_HANDS} are needed (photos with one or two hands in view, like the "
            "camera's; `edge-gesture run` with [dataset] enabled saves such frames)")
    calibrate, held_out = crops[0::2], crops[1::2]

    core = ov.Core()
    model = core.read_model(str(source))
    with progress.step(f"quantizing {source.name} to INT8 (NNCF, {len(calibrate)} hands)"):
        quantized = nncf.quantize(model, nncf.Dataset(calibrate, _model_input),
                                  subset_size=len(calibrate), preset=nncf.QuantizationPreset.MIXED)
    with progress.step(f"measuring INT8 against FP32 on {len(held_out)} held-out hands"):
        measured = measure(core.compile_model(model, "CPU"), core.compile_model(quantized, "CPU"),
                           held_out)
    problems = within_bounds(measured)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        name = f"hand_landmark_{'full' if complexity else 'lite'}_int8.xml"
        ov.save_model(quantized, str(work / name), compress_to_fp16=False)
        entries = {p.name: FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
                   for p in sorted(work.iterdir())}
        manifest = HandModelsManifest(
            model_complexity=complexity, file=name, source=str(source),
            source_sha256=sha256_file(source), calibration=str(calibration_dir),
            calibration_hands=len(calibrate), measured=measured, bounds=BOUNDS, passed=not problems,
            tools={"edge-gesture-export": __version__, "openvino": ov.__version__,
                   "nncf": nncf.__version__},
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), files=entries)
        (work / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.chmod(work, 0o755)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

    m = measured
    lines = [
        f"INT8 landmarks against FP32 on {m.hands} held-out hands (palm lengths, wrist to middle "
        f"knuckle): mean {m.mean_palm_lengths:.4f} (bound {BOUNDS.mean_palm_lengths}), p95 "
        f"{m.p95_palm_lengths:.4f} (bound {BOUNDS.p95_palm_lengths}), worst {m.max_palm_lengths:.4f}; "
        f"presence moved by at most {m.presence_max_diff:.3f}; handedness agrees on "
        f"{m.handedness_agreement:.1%}",
    ]
    result = HandModelsResult(out, manifest, lines)
    if problems:
        raise VerificationFailed("\n".join(lines + problems + [
            f"kept in {out}, marked passed = false: the daemon refuses it"]), result)
    lines.append(f"hand models: {out}  (set [hands] int8_models = \"{out}\")")
    return result
