"""`edge-gesture eval DIR`: accuracy on a folder of labelled photos, as the daemon would publish.

Layout: `DIR/<label>/<image>`, one sub-folder per gesture name, `none` for pictures without a
hand. Every image goes through MediaPipe in still-image mode and the daemon's own per-hand
observation (landmark classifier, `gestures.min_confidence`), then the observation is held for
about a second of 30 fps frames in a fresh `Decider` with the configured smoothing, thresholds and
hold. The predicted label is the gesture of the event that fires (the most confident, if several
hands fire), or `none` when no event fires: exactly what a subscriber would see if the photo were
held in front of the camera. So a `none` image passes only when nothing is published for it.

Precision of a class nothing was predicted as is reported as 0 (nothing to be right about).

A video file, or a folder with video files at its top level, is judged event by event against a
labels file beside each clip instead: see edge_gesture/eval_video.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_gesture.config import (
    LANDMARK_GESTURES,
    MOTION_GESTURES,
    Config,
    ConfigError,
    find_config_path,
    load_config,
)
from edge_gesture.errors import UsageError

NONE = "none"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FRAME_RATE = 30.0


@dataclass
class ImageResult:
    path: str  # relative to the evaluated folder
    truth: str
    predicted: str  # the published gesture, or "none"
    classifier: str  # the classifier's label for its most confident hand ("none": no hand)
    confidence: float  # that guess's score, even when below gestures.min_confidence
    hands: int
    events: list[str] = field(default_factory=list)
    hands_ms: float = 0.0
    classify_ms: float = 0.0


class EvalError(UsageError):
    """The folder cannot be evaluated; the message says why and names the path."""


def find_images(folder: Path) -> list[tuple[str, Path]]:
    """(label, path) for every image under folder/<label>/, sorted; hidden entries ignored."""
    if not folder.is_dir():
        raise EvalError(f"{folder}: not a folder (expected <label>/<image> inside)")
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for img in sorted(sub.iterdir()):
            if img.is_file() and not img.name.startswith(".") and img.suffix.lower() in IMAGE_SUFFIXES:
                items.append((sub.name, img))
    if not items:
        raise EvalError(f"{folder}: no images found in <label>/ sub-folders "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


def photo_labels(items: list[tuple[str, Path]], folder: Path,
                 cfg: Config) -> tuple[list[tuple[str, Path]], list[dict]]:
    """The photos eval can judge, and the folders it skips. A still photo through the landmark
    stage (no VLM here) can show a landmark gesture or no hand; a motion gesture or one only the
    VLM knows ([[gestures.custom]]), as the daemon's dataset files them, cannot fire, so its
    folder is skipped and named rather than scored 0%. Any other name is an error: a typo would
    otherwise score 0% too."""
    valid = set(LANDMARK_GESTURES) | {NONE}
    unjudgeable = {g: "a motion gesture, which one still photo cannot show (evaluate it on "
                   "labelled clips)" for g in MOTION_GESTURES}
    unjudgeable |= {g.name: "a [[gestures.custom]] gesture, which only the VLM recognises "
                    "(eval runs the landmark stage)" for g in cfg.gestures.custom}
    kept, skipped = [], {}
    for label, path in items:
        if label in valid:
            kept.append((label, path))
        elif label in unjudgeable:
            skipped[label] = skipped.get(label, 0) + 1
        else:
            raise EvalError(f"{folder / label}: unknown label {label!r}; photo folders are named "
                            f"{', '.join(sorted(valid))}")
    return kept, [{"folder": label, "images": n, "why": unjudgeable[label]}
                  for label, n in skipped.items()]


def jpeg_truncated(data: bytes) -> bool:
    """A JPEG whose data ends before its end-of-image marker (a copy cut short). OpenCV decodes
    one anyway, grey below the cut, and libjpeg's warning on stderr does not say which file.
    Walks the marker segments by their lengths, so an EXIF thumbnail's own end marker is not
    taken for the photo's. Anything that is not a JPEG is for the decoder to judge."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i, n = 2, len(data)
    while (i := data.find(b"\xff", i)) != -1 and i + 1 < n:
        code = data[i + 1]
        if code == 0xD9:  # end of image
            return False
        if code in (0x00, 0x01, 0xD8) or 0xD0 <= code <= 0xD7:
            i += 2  # a stuffed 0xFF inside the scan data, or a marker without a length
        elif code == 0xFF:
            i += 1  # fill byte before a marker
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")  # a segment: skip its contents
    return True


def _hold_seconds(cfg: Config) -> float:
    # Long enough for the configured window and hold to let an event through, and at least a second.
    return max(1.0, cfg.decide.window_s + cfg.decide.min_hold_s + 0.5)


def _percentile_ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else 0.0


def _per_class(results: list[ImageResult], labels: list[str]) -> dict[str, dict]:
    truth = Counter(r.truth for r in results)
    predicted = Counter(r.predicted for r in results)
    hits = Counter(r.truth for r in results if r.truth == r.predicted)
    out = {}
    for label in labels:
        p = hits[label] / predicted[label] if predicted[label] else 0.0
        out[label] = {
            "precision": round(p, 4),
            "recall": round(hits[label] / truth[label], 4),
            "support": truth[label],
        }
    return out


def _same_hands(a: list, b: list, tolerance_px: float = 1.0) -> bool:
    """The same hands at the same places, to about a pixel."""
    def px(hand) -> np.ndarray:
        return hand.landmarks[:, :2] * np.array(hand.frame_size, np.float32)

    return len(a) == len(b) and all(
        x.handedness == y.handedness and float(np.abs(px(x) - px(y)).max()) <= tolerance_px
        for x, y in zip(a, b, strict=True))


def _judge(pipeline, image: np.ndarray, path: str, truth: str, cfg: Config,
           hold_frames: int) -> ImageResult:
    """One photo held in front of the camera: `hold_frames` frames of it through the daemon's
    own frame pipeline (hand search and tracking, classifier, tracks, debouncing), fresh for
    each photo."""
    from edge_gesture.capture import Frame
    from edge_gesture.gestures import UNKNOWN, classify_landmarks

    pipeline.start_scene()
    events, hands_s, classify_s = [], [], []
    result = None
    found, steady = None, 0
    for i in range(hold_frames):
        frame = Frame(image, i, i / FRAME_RATE, 0.0, 0.0)
        if steady < pipeline.tracker.frames_to_settle:
            t0 = time.perf_counter()
            now = pipeline.tracker.detect(image)
            hands_s.append(time.perf_counter() - t0)
            steady = steady + 1 if found is not None and _same_hands(found, now) else 0
            found = now
        # else: the photo is still and the hand stage has settled (every search square looked
        # at again with nothing new), so later frames would find these same hands.
        result = pipeline.process(frame, found=found)
        events += result.events
        classify_s.append(result.timings["classify"])
    hands = result.hands if result is not None else []
    # The raw best guess on the last frame, kept for the report so a miss shows what the
    # classifier saw.
    guesses = [classify_landmarks(h.landmarks, h.handedness, aspect=h.aspect, min_confidence=0.0)
               for h in hands]
    guess = max(guesses, key=lambda g: g.confidence, default=None)
    fired = max(events, key=lambda e: e.confidence, default=None)
    return ImageResult(
        path=path,
        truth=truth,
        predicted=fired.gesture if fired else NONE,
        classifier=NONE if guess is None else (
            guess.label if guess.confidence >= cfg.gestures.min_confidence else UNKNOWN),
        confidence=guess.confidence if guess else 0.0,
        hands=len(hands),
        events=[e.gesture for e in events],
        hands_ms=float(np.median(hands_s)) * 1000 if hands_s else 0.0,
        classify_ms=float(np.median(classify_s)) * 1000 if classify_s else 0.0,
    )


def evaluate(folder: Path, cfg: Config) -> dict:
    """Run the whole folder; returns the report (see module docstring and `format_report`)."""
    from edge_gesture.daemon import FramePipeline

    items, skipped = photo_labels(find_images(folder), folder, cfg)
    if not items:
        raise EvalError(f"{folder}: no photos eval can judge (skipped: "
                        f"{', '.join(s['folder'] + '/' for s in skipped)})")
    hold_frames = int(round(_hold_seconds(cfg) * FRAME_RATE))
    results: list[ImageResult] = []
    unreadable: list[str] = []
    truncated: list[str] = []
    started = time.perf_counter()
    pipeline = FramePipeline(cfg)
    try:
        for label, path in items:
            rel = str(path.relative_to(folder))
            if jpeg_truncated(path.read_bytes()):
                truncated.append(rel)
                continue
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                unreadable.append(rel)
                continue
            results.append(_judge(pipeline, image, rel, label, cfg, hold_frames))
    finally:
        pipeline.close()
    elapsed = time.perf_counter() - started
    if not results:
        raise EvalError(f"{folder}: none of the {len(items)} images could be read")

    labels = sorted({r.truth for r in results})
    confusion: dict[str, dict[str, int]] = {t: {} for t in labels}
    for r in results:
        row = confusion[r.truth]
        row[r.predicted] = row.get(r.predicted, 0) + 1
    correct = sum(r.truth == r.predicted for r in results)
    hands_ms = [r.hands_ms for r in results]
    classify_ms = [r.classify_ms for r in results]
    return {
        "accuracy": round(correct / len(results), 4),
        "per_class": _per_class(results, labels),
        "confusion": confusion,
        "images": len(results),
        "correct": correct,
        "events_on_none": sum(len(r.events) for r in results if r.truth == NONE),
        "gesture_images_without_hand": sum(r.hands == 0 for r in results if r.truth != NONE),
        "classifier_accuracy": round(
            sum(r.truth == r.classifier for r in results) / len(results), 4),
        "latency_ms": {
            "hands_p50": _percentile_ms(hands_ms, 50),
            "hands_p95": _percentile_ms(hands_ms, 95),
            "classify_p50": _percentile_ms(classify_ms, 50),
            "classify_p95": _percentile_ms(classify_ms, 95),
        },
        "seconds": round(elapsed, 2),
        "hold_seconds": round(hold_frames / FRAME_RATE, 2),
        "model_complexity": cfg.hands.model_complexity,
        "mistakes": [
            {"path": r.path, "truth": r.truth, "predicted": r.predicted,
             "classifier": r.classifier, "confidence": r.confidence, "hands": r.hands}
            for r in results if r.truth != r.predicted
        ],
        "unreadable": unreadable,
        "truncated": truncated,
        "skipped": skipped,
    }


def confusion_lines(confusion: dict[str, dict[str, int]], rows: list[str], cols: list[str], width: int,
                    title: str) -> list[str]:
    """The confusion table as text: a header of `cols`, then a line per row label."""
    lines = [title, " " * width + "".join(f"{c[:width - 1]:>{width}}" for c in cols)]
    for t in rows:
        row = confusion[t]
        lines.append(f"{t:<{width}}" + "".join(f"{row.get(c, 0) or '.':>{width}}" for c in cols))
    return lines


def format_report(report: dict) -> str:
    labels = list(report["per_class"])
    preds = sorted({p for row in report["confusion"].values() for p in row} - set(labels))
    cols = labels + preds
    width = max(8, *(len(c) for c in cols)) + 1
    lines = [f"{'label':<{width}} {'support':>7} {'precision':>9} {'recall':>7}"]
    for label, m in report["per_class"].items():
        lines.append(f"{label:<{width}} {m['support']:>7} {m['precision']:>9.1%} {m['recall']:>7.1%}")
    lines += ["", *confusion_lines(report["confusion"], labels, cols, width,
                                   "confusion (rows: true label, columns: published)")]
    lat = report["latency_ms"]
    lines += [
        "",
        f"accuracy {report['accuracy']:.1%} ({report['correct']}/{report['images']} images); "
        f"landmark classifier alone {report['classifier_accuracy']:.1%}",
        f"events on 'none' images: {report['events_on_none']}; gesture images without a hand "
        f"found: {report['gesture_images_without_hand']}",
        f"per image: hands {lat['hands_p50']} ms median ({lat['hands_p95']} p95), classify "
        f"{lat['classify_p50']} ms; model_complexity {report['model_complexity']}; "
        f"{report['seconds']} s in all",
    ]
    for m in report["mistakes"]:
        lines.append(f"  wrong: {m['path']}: {m['truth']} -> {m['predicted']} "
                     f"(classifier {m['classifier']} {m['confidence']:.2f}, {m['hands']} hand(s))")
    return "\n".join(lines)


def _config(path: str | None) -> Config:
    if path is None:
        try:
            path = find_config_path(None)
        except ConfigError:
            print("note: no config file found, evaluating with the default settings",
                  file=sys.stderr)
            return Config()
    return load_config(path)


def main(args) -> int:
    """Entry of `edge-gesture eval PATH [--json] [--config PATH]`: labelled photos, or clips."""
    from edge_gesture import eval_video

    cfg = _config(getattr(args, "config", None))
    path = Path(args.dir)
    if eval_video.is_video_input(path):
        run, report_text, kind = eval_video.evaluate_videos, eval_video.format_report, "video"
    else:
        run, report_text, kind = evaluate, format_report, "image"
    report = run(path, cfg)  # an EvalError is the CLI's one-line error, exit 2
    for s in report.get("skipped", []):
        print(f"warning: {s['folder']}/: {s['images']} photo(s) skipped: {s['why']}", file=sys.stderr)
    for u in report["unreadable"]:
        print(f"warning: {u}: not a readable {kind}, skipped", file=sys.stderr)
    for u in report.get("truncated", []):
        print(f"warning: {u}: truncated JPEG (its data ends before the end-of-image marker), "
              "skipped", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0
