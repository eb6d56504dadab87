"""`edge-gesture bench pipeline`: processed frames/s, per-stage and end-to-end latency, peak RSS.

Runs the daemon's own stages (capture thread, hands, classifier, decide, publisher) over a source,
twice per repeat:
- capacity: a file read frame by frame as fast as the pipeline takes frames: processed frames/s
  is what the pipeline can sustain, not the file's frame rate;
- live: the file paced at its own frame rate, as a camera delivers, newest frame wins: the
  end-to-end latency from frame capture to the MQTT publish call, and the frames dropped.
Repeats and reports medians, because these machines are shared and noisy.
"""

from __future__ import annotations

import json
import resource
import statistics
import time

from edge_gesture.config import load_config
from edge_gesture.machine import cpu_facts, cpu_line


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_once(cfg, source: str, seconds: float, pipeline, publisher, realtime: bool) -> dict:
    from edge_gesture.capture import CaptureThread, LatestFrameSlot
    from edge_gesture.decide import Decider
    from edge_gesture.stats import PipelineStats

    # A fresh decider per run, so each run's events are the same.
    pipeline.decider = Decider(cfg.decide, cfg.gestures.enabled)
    slot = LatestFrameSlot()
    capture = CaptureThread(cfg.capture.model_copy(update={"realtime": realtime}), slot, source)
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
        "dropped": slot.dropped,
        "latency_ms": stats.latencies(),
    }


def main(args) -> int:
    from edge_gesture.daemon import FramePipeline
    from edge_gesture.publish import Publisher

    cfg = load_config(getattr(args, "config", None))
    cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(
        update={"source": args.source, "realtime": False, "at_end": "stop"})})
    pipeline = FramePipeline(cfg)
    publisher = Publisher(cfg)
    publisher.start()
    runs, live = [], []
    try:
        for _ in range(max(1, args.repeats)):
            runs.append(run_once(cfg, args.source, args.seconds, pipeline, publisher, False))
            live.append(run_once(cfg, args.source, args.seconds, pipeline, publisher, True))
    finally:
        broker_connected = publisher.connected
        publisher.stop()
        pipeline.close()

    def med(get, rs):
        vals = [v for v in (get(r) for r in rs) if v is not None]
        return round(statistics.median(vals), 2) if vals else None

    def latencies(rs):
        return {s: {q: med(lambda r, s=s, q=q: r["latency_ms"][s][q], rs) for q in ("p50", "p95")}
                for s in rs[0]["latency_ms"]}

    report = {
        "cpu": cpu_facts(),
        "source": args.source,
        "repeats": len(runs),
        "frames_per_run": runs[0]["frames"],
        "fps_processed": med(lambda r: r["fps"], runs),
        "fps_processed_runs": [round(r["fps"], 2) for r in runs],
        "latency_ms": latencies(live),
        "live": {
            "fps_processed": med(lambda r: r["fps"], live),
            "frames_dropped": med(lambda r: r["dropped"], live),
        },
        "capacity_latency_ms": latencies(runs),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "model_complexity": cfg.hands.model_complexity,
        "broker_connected": broker_connected,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(cpu_line(report["cpu"]))
    print(f"source: {args.source}  ({report['frames_per_run']} frames/run, {len(runs)} runs, medians)")
    print(f"capacity: {report['fps_processed']} processed frames/s   runs: {report['fps_processed_runs']}")
    print(f"live (paced at the file's rate): {report['live']['fps_processed']} frames/s processed, "
          f"{report['live']['frames_dropped']} dropped per run; latency:")
    print(f"{'stage':<12}{'p50 ms':>10}{'p95 ms':>10}")
    for s, v in report["latency_ms"].items():
        print(f"{s:<12}{v['p50']!s:>10}{v['p95']!s:>10}")
    print(f"peak RSS: {report['peak_rss_mb']} MB   broker connected: {broker_connected}")
    return 0
