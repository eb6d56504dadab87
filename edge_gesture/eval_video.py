"""`edge-gesture eval CLIP` or `eval FOLDER`: gesture events judged on labelled video clips.

A clip is a video file (.mp4 .avi .mkv .mov .webm .gif); a folder of clips holds them at its top
level. Beside each clip a labels file says what happens when, on the clip's own clock (seconds =
frame index / the file's frame rate), for `hands.mp4` either

- `hands.mp4.labels.csv`, with the header `start,end,label`:

      start,end,label
      0,0.5,none
      0.5,2.0,open_palm
      2.0,2.5,none

- or `hands.mp4.labels.json`: `[{"start": 0.5, "end": 2.0, "label": "open_palm"}, ...]`, or that
  list under `{"labels": [...]}`.

A label is an enabled gesture (`gestures.enabled`) or `none`: a stretch with no hand in view.
Time no row covers is not judged, except that an event there is a false event.

Every frame of every clip goes through the daemon's own frame pipeline (hand search and
tracking, classifier, motion, debouncing; no VLM), none dropped, timed by the clip's clock, so
the same file gives the same events at the same frames however fast the machine is. Each clip
starts a new scene. Judging, per gesture row [start, end]: the first event of that gesture with
start <= t <= end + GRACE_S is a hit (a swipe labelled by eye may end just before its event; a
pose's event comes after the hold), any further one in that window a duplicate. An event that
falls in no window of its own gesture is a false event; one inside a `none` row also counts in
`events_on_none` (an event within a gesture row's grace counts for that row, not as a false one).

Reported: per gesture, precision (hits / its events, duplicates and false events included),
recall (hits / its rows), duplicates and the time from the row's start to its hit; overall event
precision and recall; `accuracy`, the share of rows during which exactly their own gesture was
published (nothing, for a `none` row); `confusion` (per row label, the gestures published during
its rows, each once a row, `none` when nothing was); `mistakes` (those rows); the false events;
and every event of every clip with its frame.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_gesture.config import Config
from edge_gesture.evaluate import NONE, EvalError, confusion_lines

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif"}
LABEL_SUFFIXES = (".labels.csv", ".labels.json")
#: How long after a row's end its gesture's event still counts for it (seconds).
GRACE_S = 0.5
#: Frame rate assumed when a file states none, or an implausible one (as the daemon's capture).
FALLBACK_FPS = 30.0
#: Slack for comparing frame times, as the decider's (a frame is 1/30 s).
EPS = 1e-6
_COLUMNS = ("start", "end", "label")


@dataclass(frozen=True)
class Row:
    start: float
    end: float
    label: str


@dataclass
class Clip:
    path: Path
    name: str  # as reported: relative to the evaluated folder
    rows: list[Row]


@dataclass
class ClipEvent:
    clip: str
    frame: int
    t: float
    gesture: str
    hand: str
    judged: str = "false"  # "hit", "duplicate" or "false"
    row: int | None = None  # index in the clip's rows: the window it counts for, or (a false
    #                         event) the row it fell in


@dataclass
class ClipRun:
    clip: Clip
    fps: float
    frames: int
    events: list[ClipEvent] = field(default_factory=list)
    hands_s: list[float] = field(default_factory=list)
    classify_s: list[float] = field(default_factory=list)


def is_video_input(path: Path) -> bool:
    """A video file, or a folder with a video file at its top level (else: the photo layout)."""
    if path.is_dir():
        return bool(_videos_in(path))
    return path.suffix.lower() in VIDEO_SUFFIXES  # a missing clip is named as such, not as a folder


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES)


def labels_paths(clip: Path) -> list[Path]:
    return [clip.with_name(clip.name + suffix) for suffix in LABEL_SUFFIXES]


def _number(value, what: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise EvalError(f"{where}: {what} {value!r} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise EvalError(f"{where}: {what} {value!r} is not a number")
    if x < 0:
        raise EvalError(f"{where}: {what} {value!r} is negative (seconds from the clip's start)")
    return x


def _row(fields: dict, where: str, labels: set[str]) -> Row:
    start = _number(fields["start"], "start", where)
    end = _number(fields["end"], "end", where)
    if end < start:
        raise EvalError(f"{where}: end {fields['end']} is before start {fields['start']}")
    label = fields["label"]
    if not isinstance(label, str) or label not in labels:
        raise EvalError(f"{where}: label {label!r} is not an enabled gesture or 'none' "
                        f"(enabled: {', '.join(sorted(labels - {NONE}))})")
    return Row(start, end, label)


def _read_csv(path: Path, labels: set[str]) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        names = [h.strip() for h in header] if header else []
        unknown = [h for h in names if h not in _COLUMNS]
        if unknown:
            raise EvalError(f"{path}: line 1: unknown column {unknown[0]!r} "
                            f"(the header is start,end,label)")
        missing = [c for c in _COLUMNS if c not in names]
        if missing:
            raise EvalError(f"{path}: line 1: no {missing[0]!r} column (the header is start,end,label)")
        rows = []
        for values in reader:
            where = f"{path}: line {reader.line_num}"
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                raise EvalError(f"{where}: {len(values)} values, the header has {len(names)}")
            rows.append(_row(dict(zip(names, (v.strip() for v in values), strict=True)), where, labels))
    return rows


def _read_json(path: Path, labels: set[str]) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: not JSON: {e}") from None
    if isinstance(data, dict) and set(data) == {"labels"}:
        data = data["labels"]
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected a list of {{\"start\", \"end\", \"label\"}} objects "
                        "or {\"labels\": [...]}")
    rows = []
    for i, item in enumerate(data, 1):
        where = f"{path}: entry {i}"
        if not isinstance(item, dict):
            raise EvalError(f"{where}: expected an object with start, end and label")
        unknown = [k for k in item if k not in _COLUMNS]
        if unknown:
            raise EvalError(f"{where}: unknown key {unknown[0]!r} (keys: start, end, label)")
        missing = [c for c in _COLUMNS if c not in item]
        if missing:
            raise EvalError(f"{where}: no {missing[0]!r}")
        rows.append(_row(item, where, labels))
    return rows


def read_labels(clip: Path, labels: set[str]) -> list[Row]:
    """The rows of the clip's labels file, checked; EvalError names the file and line."""
    present = [p for p in labels_paths(clip) if p.is_file()]
    if not present:
        expected = " or ".join(str(p) for p in labels_paths(clip))
        raise EvalError(f"{clip}: no labels file (expected {expected})")
    if len(present) > 1:
        raise EvalError(f"{clip}: two labels files ({present[0]} and {present[1]}); keep one")
    path = present[0]
    rows = _read_csv(path, labels) if path.name.endswith(".csv") else _read_json(path, labels)
    return sorted(rows, key=lambda r: (r.start, r.end))


def find_clips(path: Path, cfg: Config) -> list[Clip]:
    """Every clip with its labels, all checked before any clip is run."""
    if not path.exists():
        raise EvalError(f"{path}: no such video file")
    if path.is_file():
        files, base = [path], path.parent
    else:
        files, base = _videos_in(path), path
    labels = set(cfg.gestures.enabled) | {NONE}
    return [Clip(f, str(f.relative_to(base)), read_labels(f, labels)) for f in files]


def _open(path: Path):
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        return None, 0.0
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    return cap, fps if 1 <= fps <= 240 else FALLBACK_FPS


def run_clip(pipeline, clip: Clip) -> ClipRun | None:
    """Every frame of the clip through the pipeline in a new scene; None if no frame decodes."""
    from edge_gesture.capture import Frame

    cap, fps = _open(clip.path)
    if cap is None:
        return None
    pipeline.start_scene()
    run = ClipRun(clip, fps, 0)
    try:
        while True:
            ok, image = cap.read()
            if not ok or image is None:
                break
            i = run.frames
            t = i / fps
            # The clip's clock for wall time too: nothing is published, and the report stays the same.
            result = pipeline.process(Frame(image, i, t, t, time.monotonic()))
            run.hands_s.append(result.timings["hands"])
            run.classify_s.append(result.timings["classify"])
            run.events += [ClipEvent(clip.name, i, t, e.gesture, e.hand) for e in result.events]
            run.frames += 1
    finally:
        cap.release()
    return run if run.frames else None


def judge(run: ClipRun) -> None:
    """Mark each event hit, duplicate or false, and the row it counts for (module docstring)."""
    rows = run.clip.rows
    hit_rows: set[int] = set()
    for ev in run.events:  # in frame order: the first in a window is its hit
        windows = [i for i, r in enumerate(rows) if r.label == ev.gesture
                   and r.start - EPS <= ev.t <= r.end + GRACE_S + EPS]
        fresh = [i for i in windows if i not in hit_rows]
        if fresh:
            ev.judged, ev.row = "hit", fresh[0]
            hit_rows.add(fresh[0])
        elif windows:
            ev.judged, ev.row = "duplicate", windows[0]
        else:
            ev.judged = "false"
            ev.row = next((i for i, r in enumerate(rows) if r.start - EPS <= ev.t <= r.end + EPS), None)


def _seconds(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": round(float(np.percentile(values, 50)), 4),
            "p95": round(float(np.percentile(values, 95)), 4)}


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else 0.0


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def report(runs: list[ClipRun], unreadable: list[str], seconds: float, cfg: Config) -> dict:
    # (run, row index, row, gestures published during it, the events that count for it)
    stretches = []
    for run in runs:
        for i, row in enumerate(run.clip.rows):
            mine = [e for e in run.events if e.row == i]
            stretches.append((run, row, {e.gesture for e in mine}, mine))
    events = [(run, e) for run in runs for e in run.events]

    confusion: dict[str, dict[str, int]] = {}
    mistakes = []
    for run, row, published, _ in stretches:
        counts = confusion.setdefault(row.label, {})
        for g in sorted(published) or [NONE]:
            counts[g] = counts.get(g, 0) + 1
        if published != ({row.label} - {NONE}):
            mistakes.append({"clip": run.clip.name, "start": row.start, "end": row.end,
                             "truth": row.label, "published": sorted(published)})
    latency: dict[str, list[float]] = {}
    for _, row, _, mine in stretches:
        for e in mine:
            if e.judged == "hit":
                latency.setdefault(e.gesture, []).append(e.t - row.start)
    gesture_rows = [row for _, row, _, _ in stretches if row.label != NONE]
    per_class = {}
    for label in sorted({row.label for row in gesture_rows} | {e.gesture for _, e in events}):
        mine = [e for _, e in events if e.gesture == label]
        hits = sum(e.judged == "hit" for e in mine)
        support = sum(row.label == label for row in gesture_rows)
        per_class[label] = {
            # Nothing published as this gesture: nothing to be right about (as the photo eval).
            "precision": _ratio(hits, len(mine)) if mine else 0.0,
            "recall": _ratio(hits, support),  # None: no row of it, only false events
            "support": support,
            "events": len(mine),
            "hits": hits,
            "duplicates": sum(e.judged == "duplicate" for e in mine),
            "false_events": sum(e.judged == "false" for e in mine),
            "latency_s": _seconds(latency.get(label, [])),
        }

    def during(run: ClipRun, e: ClipEvent) -> str | None:
        return run.clip.rows[e.row].label if e.row is not None else None

    false = [(run, e) for run, e in events if e.judged == "false"]
    hits = sum(e.judged == "hit" for _, e in events)
    hands_s = [s for run in runs for s in run.hands_s]
    classify_s = [s for run in runs for s in run.classify_s]
    return {
        "accuracy": _ratio(len(stretches) - len(mistakes), len(stretches)) if stretches else 0.0,
        "per_class": per_class,
        "confusion": confusion,
        "clips": len(runs),
        "frames": sum(run.frames for run in runs),
        "rows": len(stretches),
        "event_precision": _ratio(hits, len(events)),
        "event_recall": _ratio(hits, len(gesture_rows)),
        "event_latency_s": _seconds([x for v in latency.values() for x in v]),
        "duplicates": sum(e.judged == "duplicate" for _, e in events),
        "events_on_none": sum(during(run, e) == NONE for run, e in false),
        "false_events": [{"clip": e.clip, "t": round(e.t, 4), "frame": e.frame, "gesture": e.gesture,
                          "during": during(run, e)} for run, e in false],
        "latency_ms": {
            "hands_p50": _ms(hands_s, 50), "hands_p95": _ms(hands_s, 95),
            "classify_p50": _ms(classify_s, 50), "classify_p95": _ms(classify_s, 95),
        },
        "seconds": round(seconds, 2),
        "grace_s": GRACE_S,
        "model_complexity": cfg.hands.model_complexity,
        "mistakes": mistakes,
        "unreadable": unreadable,
        "per_clip": [
            {"clip": run.clip.name, "fps": round(run.fps, 3), "frames": run.frames,
             "events": [{"frame": e.frame, "t": round(e.t, 4), "gesture": e.gesture, "hand": e.hand,
                         "judged": e.judged} for e in run.events]}
            for run in runs],
    }


def evaluate_videos(path: Path, cfg: Config) -> dict:
    """Run every clip under `path` (a clip or a folder of clips); the report's keys are listed
    in the module docstring and `format_report`."""
    from edge_gesture.daemon import FramePipeline

    clips = find_clips(path, cfg)
    runs: list[ClipRun] = []
    unreadable: list[str] = []
    started = time.perf_counter()
    pipeline = FramePipeline(cfg)
    try:
        for clip in clips:
            run = run_clip(pipeline, clip)
            if run is None:
                unreadable.append(clip.name)
                continue
            judge(run)
            runs.append(run)
    finally:
        pipeline.close()
    if not runs:
        raise EvalError(f"{path}: none of the {len(clips)} clip(s) could be read")
    return report(runs, unreadable, time.perf_counter() - started, cfg)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_report(rep: dict) -> str:
    labels = list(rep["per_class"])
    width = max(8, *(len(c) for c in labels)) + 1 if labels else 9
    lines = [f"{'gesture':<{width}} {'support':>7} {'events':>6} {'precision':>9} {'recall':>7} "
             f"{'dupl':>4} {'latency p50/p95 s':>17}"]
    for label, m in rep["per_class"].items():
        lat = f"{_s(m['latency_s']['p50'])}/{_s(m['latency_s']['p95'])}"
        lines.append(f"{label:<{width}} {m['support']:>7} {m['events']:>6} {_pct(m['precision']):>9} "
                     f"{_pct(m['recall']):>7} {m['duplicates']:>4} {lat:>17}")
    cols = sorted({c for row in rep["confusion"].values() for c in row})
    truths = sorted(rep["confusion"])
    cwidth = max(8, *(len(c) for c in cols + truths)) + 1
    lines += ["", *confusion_lines(rep["confusion"], truths, cols, cwidth,
                                   "confusion (rows: labelled stretches, columns: published during them)")]
    lat = rep["latency_ms"]
    lines += [
        "",
        f"events: precision {_pct(rep['event_precision'])}, recall {_pct(rep['event_recall'])}, "
        f"{rep['duplicates']} duplicate(s), {len(rep['false_events'])} false, "
        f"{rep['events_on_none']} on 'none' stretches; start to event "
        f"{_s(rep['event_latency_s']['p50'])} s median ({_s(rep['event_latency_s']['p95'])} p95)",
        f"accuracy {rep['accuracy']:.1%} ({rep['rows'] - len(rep['mistakes'])}/{rep['rows']} "
        f"labelled stretches); {rep['clips']} clip(s), {rep['frames']} frames",
        f"per frame: hands {lat['hands_p50']} ms median ({lat['hands_p95']} p95), classify "
        f"{lat['classify_p50']} ms; model_complexity {rep['model_complexity']}; "
        f"{rep['seconds']} s in all",
    ]
    for m in rep["mistakes"]:
        lines.append(f"  wrong: {m['clip']} {m['start']:g}-{m['end']:g} s {m['truth']}: published "
                     f"{', '.join(m['published']) or 'nothing'}")
    for e in rep["false_events"]:
        lines.append(f"  false event: {e['clip']} frame {e['frame']} ({e['t']:.2f} s) {e['gesture']}"
                     f" during {e['during'] or 'unlabelled time'}")
    return "\n".join(lines)
