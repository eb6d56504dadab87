"""`edge-gesture bench pipeline`: processed frames/s, per-stage and end-to-end latency, peak RSS.

Runs the daemon's own stages (capture thread, hands, classifier, decide, publisher) over a source.
A file is read frame by frame as fast as the pipeline takes frames, so the figure is the
pipeline's capacity, not the file's frame rate. Repeats the run and reports medians, because
these machines are shared and noisy.
"""

from __future__ import annotations

import json
import resource
import statistics
import time

from edge_gesture.config import load_config


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_once(cfg, source: str, seconds: float, pipeline, publisher) -> dict:
    from edge_gesture.capture import CaptureThread, LatestFrameSlot
    from edge_gesture.stats import PipelineStats

    slot = LatestFrameSlot()
    capture = CaptureThread(cfg.capture, slot, source)
    stats = PipelineStats(keep=100_000)
    capture.start()
    start = time.monotonic()
    try:
        while True:
            frame = slot.get(timeout=1.0)
            if frame is None:
                if slot.closed:
                    break
                continue
            picked = time.monotonic()
            result = pipeline.process(frame)
            t0 = time.perf_counter()
            for ev in result.events:
                publisher.publish_event(ev)
            if result.state_changed:
                publisher.publish_state(pipeline.decider.state())
            timings = dict(result.timings, publish=time.perf_counter() - t0,
                           capture=picked - frame.read_at)
            stats.record_frame(timings, end_to_end=time.monotonic() - frame.read_at)
            if seconds and time.monotonic() - start >= seconds:
                break
    finally:
        capture.stop()
        capture.join(2)
    elapsed = time.monotonic() - start
    return {
        "frames": stats.frames_processed,
        "fps": stats.frames_processed / elapsed if elapsed else 0.0,
        "latency_ms": stats.latencies(),
    }


def main(args) -> int:
    from edge_gesture.daemon import FramePipeline
    from edge_gesture.decide import Decider
    from edge_gesture.publish import Publisher

    cfg = load_config(getattr(args, "config", None))
    cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(
        update={"source": args.source, "realtime": False, "at_end": "stop"})})
    pipeline = FramePipeline(cfg)
    publisher = Publisher(cfg)
    publisher.start()
    runs = []
    try:
        for _ in range(max(1, args.repeats)):
            # A fresh decider per run, so each run's events are the same.
            pipeline.decider = Decider(cfg.decide, cfg.gestures.enabled)
            runs.append(run_once(cfg, args.source, args.seconds, pipeline, publisher))
    finally:
        broker_connected = publisher.connected
        publisher.stop()
        pipeline.close()

    def med(get):
        vals = [v for v in (get(r) for r in runs) if v is not None]
        return round(statistics.median(vals), 2) if vals else None

    stages = list(runs[0]["latency_ms"].keys())
    report = {
        "source": args.source,
        "repeats": len(runs),
        "frames_per_run": runs[0]["frames"],
        "fps_processed": med(lambda r: r["fps"]),
        "fps_processed_runs": [round(r["fps"], 2) for r in runs],
        "latency_ms": {s: {q: med(lambda r, s=s, q=q: r["latency_ms"][s][q]) for q in ("p50", "p95")}
                       for s in stages},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "model_complexity": cfg.hands.model_complexity,
        "broker_connected": broker_connected,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"source: {args.source}  ({report['frames_per_run']} frames/run, {len(runs)} runs, medians)")
    print(f"processed: {report['fps_processed']} frames/s   runs: {report['fps_processed_runs']}")
    print(f"{'stage':<12}{'p50 ms':>10}{'p95 ms':>10}")
    for s, v in report["latency_ms"].items():
        print(f"{s:<12}{v['p50']!s:>10}{v['p95']!s:>10}")
    print(f"peak RSS: {report['peak_rss_mb']} MB   broker connected: {broker_connected}")
    return 0
