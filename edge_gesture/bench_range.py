"""`edge-gesture bench range DIR`: accuracy by distance, on photos of hands across a room.

DIR holds one folder per distance, as `../shared/tools/make_range.py` writes them: `f0.110/`,
`f0.055/`, ... (the hand box as a share of the frame's width), each in the `<label>/<image>`
layout of `edge-gesture eval`. Each folder goes through `evaluate` (the daemon's own frame
pipeline with the config given, each photo held for about a second of frames), and the table
shows per distance: accuracy, the share of gesture photos whose hand was found, and events
published on no-hand photos (which must be none).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edge_gesture.evaluate import EvalError, _config, evaluate
from edge_gesture.machine import cpu_facts, cpu_line

_DISTANCE = re.compile(r"^f(\d+(?:\.\d+)?)$")
# Hand box / frame width -> metres for an 18 cm hand and a 78-degree webcam (make_range.py).
_METRES = {0.11: "1 m", 0.075: "1.5 m", 0.055: "2 m", 0.045: "2.5 m", 0.037: "3 m"}


def distance_folders(root: Path) -> list[tuple[float, Path]]:
    if not root.is_dir():
        raise EvalError(f"{root}: not a folder (expected f<share>/<label>/<image> inside)")
    found = sorted(((float(m.group(1)), p) for p in root.iterdir()
                    if p.is_dir() and (m := _DISTANCE.match(p.name))), reverse=True)
    if not found:
        raise EvalError(f"{root}: no distance folders (f0.110/, f0.055/, ... as make_range.py "
                        "writes them)")
    return found


def bench_range(root: Path, cfg) -> dict:
    rows = []
    for share, folder in distance_folders(root):
        report = evaluate(folder, cfg)
        gestures = sum(m["support"] for label, m in report["per_class"].items() if label != "none")
        rows.append({
            "share": share,
            "distance": _METRES.get(round(share, 3), ""),
            "accuracy": report["accuracy"],
            "images": report["images"],
            "hands_found": round(1 - report["gesture_images_without_hand"] / gestures, 4)
            if gestures else None,
            "events_on_none": report["events_on_none"],
            "hands_ms_p50": report["latency_ms"]["hands_p50"],
            "mistakes": report["mistakes"],
        })
    return {"cpu": cpu_facts(), "backend": cfg.hands.backend, "device": cfg.hands.device,
            "distances": rows}


def format_range(report: dict) -> str:
    lines = [cpu_line(report["cpu"]),
             f"hands.backend {report['backend']} on {report['device']}",
             f"{'hand/frame':>10} {'distance':>8} {'images':>6} {'accuracy':>8} {'hands found':>11} "
             f"{'events on none':>14} {'hands ms':>8}"]
    for r in report["distances"]:
        found = f"{r['hands_found']:.1%}" if r["hands_found"] is not None else "-"
        lines.append(f"{r['share']:>10.3f} {r['distance']:>8} {r['images']:>6} {r['accuracy']:>8.1%} "
                     f"{found:>11} {r['events_on_none']:>14} {r['hands_ms_p50']:>8}")
    return "\n".join(lines)


def main(args) -> int:
    cfg = _config(getattr(args, "config", None))
    if args.backend:
        cfg = cfg.model_copy(update={"hands": cfg.hands.model_copy(update={"backend": args.backend})})
    report = bench_range(Path(args.dir), cfg)  # an EvalError is the CLI's one-line error, exit 2
    print(json.dumps(report, indent=2) if args.json else format_range(report))
    return 0
