"""`edge-gesture bench pipeline`: processed frames/s, per-stage and end-to-end latency, peak RSS.

Runs the daemon's own stages (capture thread, hands, classifier, decide, publisher) over a source,
twice per repeat:
- capacity: a file read frame by frame as fast as the pipeline takes frames: processed frames/s
  is what the pipeline can sustain, not the file's frame rate;
- live: the file paced at its own frame rate, as a camera delivers, newest frame wins: the
  end-to-end latency from frame capture to the MQTT publish call, and the frames dropped.
Repeats and reports medians, because these machines are shared and noisy. A camera, stream or
the testcard never ends by itself, so without --seconds each run on one lasts LIVE_RUN_S; a
progress line goes to stderr every PROGRESS_EVERY_S, whatever the source.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

from edge_gesture.config import load_config
from edge_gesture.errors import UsageError
from edge_gesture.machine import cpu_facts, cpu_line

#: Seconds per run on a source that does not end (camera, stream, testcard) without --seconds.
LIVE_RUN_S = 20.0
#: Seconds between two progress lines on stderr.
PROGRESS_EVERY_S = 5.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check_source(source: str) -> None:
    """A --source file that is not there, named by the flag before any model loads."""
    from edge_gesture.capture import SourceKind, source_kind

    if source_kind(source) is SourceKind.FILE and not os.path.isfile(source):
        raise UsageError(f"--source {source}: no such video file")


def run_seconds(source: str, seconds: float | None) -> float:
    """How long each run lasts (0: to the end of the source): --seconds when given, else a file
    to its end and a source that never ends LIVE_RUN_S."""
    from edge_gesture.capture import SourceKind, source_kind

    if seconds is None:
        return 0.0 if source_kind(source) is SourceKind.FILE else LIVE_RUN_S
    if seconds < 0:
        raise UsageError(f"--seconds: expected 0 or more, got {seconds:g}")
    return seconds


def progress_line(backend: str, run: str, seconds: float) -> Callable[[int, float], None]:
    """A reporter for one run: `bench pipeline (openvino): run 2/6 (live), 10 s of 20, 28.4
    frames/s so far`."""
    of = f" of {seconds:g}" if seconds else ""

    def report(frames: int, elapsed: float) -> None:
        print(f"bench pipeline ({backend}): run {run}, {elapsed:.0f} s{of}, "
              f"{frames / elapsed:.1f} frames/s so far", file=sys.stderr, flush=True)

    return report


def run_once(cfg, source: str, seconds: float, pipeline, publisher, realtime: bool,
             progress: Callable[[int, float], None] | None = None) -> dict:
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
    next_progress = start + PROGRESS_EVERY_S
    first_t = first_hand_t = size = None
    events = 0
    try:
        while True:
            frame = slot.get(timeout=1.0)
            if progress is not None and (now := time.monotonic()) >= next_progress:
                progress(stats.frames_processed, now - start)
                next_progress += PROGRESS_EVERY_S
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


def measure(cfg, args, seconds: float) -> dict:
    """The report for one configuration: `--repeats` capacity and live runs of `seconds` each
    (0: to the end of the source), medians."""
    from edge_gesture.daemon import FramePipeline
    from edge_gesture.publish import Publisher

    pipeline = FramePipeline(cfg)
    publisher = Publisher(cfg)
    publisher.start()
    runs, live = [], []
    repeats = max(1, args.repeats)
    try:
        for i in range(repeats):
            for realtime, kind, out in ((False, "capacity", runs), (True, "live", live)):
                run = f"{2 * i + 1 + realtime}/{2 * repeats} ({kind})"
                out.append(run_once(cfg, args.source, seconds, pipeline, publisher, realtime,
                                    progress_line(cfg.hands.backend, run, seconds)))
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
        "seconds_per_run": seconds or None,  # None: each run went to the end of the source
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
    check_source(args.source)
    seconds = run_seconds(args.source, args.seconds)
    backend = getattr(args, "backend", None)
    if backend == "both":
        # Both hand stages on the same source in one process, for the ratio the issue asks for.
        reports = {b: measure(_with_backend(cfg, b), args, seconds) for b in ("openvino", "mediapipe")}
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
    report = measure(cfg, args, seconds)
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
    length = f"{report['seconds_per_run']:g} s/run, " if report["seconds_per_run"] else ""
    print(f"source: {args.source}  ({report['frames_per_run']} frames/run, {length}"
          f"{report['repeats']} runs, medians)")
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
