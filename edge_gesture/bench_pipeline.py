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
    from edge_gesture.stats import PipelineStats

    # A fresh scene per run (no hand followed, new tracks and decider), so each run's events and
    # the time to find the first hand are the same.
    pipeline.start_scene()
    slot = LatestFrameSlot()
    capture = CaptureThread(cfg.capture.model_copy(update={"realtime": realtime}), slot, source)
    stats = PipelineStats(keep=100_000)
    capture.start()
    start = time.monotonic()
    first_t = first_hand_t = size = None
    events = 0
    try:
        while True:
            frame = slot.get(timeout=1.0)
            if frame is None:
                if slot.closed:
                    break
                continue
            picked = time.monotonic()
            result = pipeline.process(frame)
            if first_t is None:
                first_t, size = frame.t, (frame.image.shape[1], frame.image.shape[0])
            if first_hand_t is None and result.hands:
                first_hand_t = frame.t
            t0 = time.perf_counter()
            events += len(result.events)
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
        # Source time from the first frame to the first frame with a hand found: with a clip whose
        # hand appears at a known time, how long a new hand takes to be found.
        "first_hand_s": None if first_hand_t is None else first_hand_t - first_t,
        "frame_size": size,
        "events": events,
    }


def measure(cfg, args) -> dict:
    """The report for one configuration: `--repeats` capacity and live runs, medians."""
    from edge_gesture.daemon import FramePipeline
    from edge_gesture.publish import Publisher

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
        "hands_backend": cfg.hands.backend,
        "hands_device": cfg.hands.device,
        "frame_size": runs[0]["frame_size"],
        "first_hand_s": med(lambda r: r["first_hand_s"], runs),
        "events_per_run": med(lambda r: r["events"], runs),
        "broker_connected": broker_connected,
    }
    return report


def main(args) -> int:
    cfg = load_config(getattr(args, "config", None))
    cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(
        update={"source": args.source, "realtime": False, "at_end": "stop"})})
    backend = getattr(args, "backend", None)
    if backend == "both":
        # Both hand stages on the same source in one process, for the ratio the issue asks for.
        reports = {b: measure(_with_backend(cfg, b), args) for b in ("openvino", "mediapipe")}
        mp_fps = reports["mediapipe"]["fps_processed"]
        combined = {"cpu": reports["openvino"]["cpu"], "source": args.source, "backends": reports,
                    "fps_ratio_openvino_to_mediapipe":
                        round(reports["openvino"]["fps_processed"] / mp_fps, 2) if mp_fps else None}
        if args.json:
            print(json.dumps(combined, indent=2))
            return 0
        for b, report in reports.items():
            print(f"== hands.backend = {b}")
            _print(report, _with_backend(cfg, b), args)
        print(f"processed frames/s, openvino / mediapipe: {combined['fps_ratio_openvino_to_mediapipe']}")
        return 0
    if backend:
        cfg = _with_backend(cfg, backend)
    report = measure(cfg, args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    _print(report, cfg, args)
    return 0


def _with_backend(cfg, backend: str):
    return cfg.model_copy(update={"hands": cfg.hands.model_copy(update={"backend": backend})})


def _print(report: dict, cfg, args) -> None:
    broker_connected = report["broker_connected"]
    print(cpu_line(report["cpu"]))
    print(f"source: {args.source}  ({report['frames_per_run']} frames/run, {report['repeats']} runs, "
          "medians)")
    print(f"capacity: {report['fps_processed']} processed frames/s   runs: {report['fps_processed_runs']}")
    print(f"live (paced at the file's rate): {report['live']['fps_processed']} frames/s processed, "
          f"{report['live']['frames_dropped']} dropped per run; latency:")
    print(f"{'stage':<12}{'p50 ms':>10}{'p95 ms':>10}")
    for s, v in report["latency_ms"].items():
        print(f"{s:<12}{v['p50']!s:>10}{v['p95']!s:>10}")
    print(f"hands: {cfg.hands.backend} on {cfg.hands.device}, frames {report['frame_size']}, first hand "
          f"found {report['first_hand_s']} s after the first frame (source time), "
          f"{report['events_per_run']} events a run")
    print(f"peak RSS: {report['peak_rss_mb']} MB   broker connected: {broker_connected}")
