"""`edge-gesture bench pipeline`: processed frames/s, per-stage and end-to-end latency, peak RSS.

Runs the daemon itself (daemon.Daemon: its capture thread, frame loop and publisher, with the
live page, dataset saving and the stats topic off) over a source, twice per repeat, and
reads its figures from the daemon's own count (stats.PipelineStats), the one behind `/metrics`
and the stats topic:
- capacity: a file read frame by frame as fast as the pipeline takes frames: processed frames/s
  is what the pipeline can sustain, not the file's frame rate;
- live: the file paced at its own frame rate, as a camera delivers, newest frame wins: the
  end-to-end latency from frame capture to the MQTT publish call, and the frames dropped.
The hand models and the MQTT connection are made once and kept warm over the runs. Repeats and
reports medians, because these machines are shared and noisy. A camera, stream or the testcard
never ends by itself, so without --seconds each run on one lasts LIVE_RUN_S; a progress line
goes to stderr every PROGRESS_EVERY_S, whatever the source.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edge_gesture.config import load_config
from edge_gesture.errors import UsageError
from edge_gesture.machine import cpu_facts, cpu_line
from edge_gesture.observers import FrameObserver, FrameReport

if TYPE_CHECKING:
    from edge_gesture.daemon import Daemon

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


class _RunWatch(FrameObserver):
    """The benchmark's own observer of one run: ends it after `seconds` (0: at the source's
    end), reports progress, and notes what the daemon does not count (the frame size, when the
    first hand was found)."""

    def __init__(self, stop: Callable[[], None], seconds: float,
                 progress: Callable[[int, float], None] | None, count: Callable[[], int]):
        self._stop = stop
        self._seconds = seconds
        self._progress = progress
        self._count = count
        self.start = time.monotonic()
        self._next_progress = self.start + PROGRESS_EVERY_S
        self.last_frame_at: float | None = None
        self.first_t = self.first_hand_t = self.size = None

    def frame_done(self, report: FrameReport) -> None:
        frame = report.frame
        self.last_frame_at = time.monotonic()
        if self.first_t is None:
            self.first_t, self.size = frame.t, (frame.image.shape[1], frame.image.shape[0])
        if self.first_hand_t is None and report.hands:
            self.first_hand_t = frame.t
        if self._seconds and self.last_frame_at - self.start >= self._seconds:
            self._stop()

    def tick(self, processed: bool) -> None:
        if self._progress is not None and (now := time.monotonic()) >= self._next_progress:
            self._progress(self._count(), now - self.start)
            self._next_progress += PROGRESS_EVERY_S


def run_once(cfg, source: str, seconds: float, pipeline, publisher, realtime: bool,
             progress: Callable[[int, float], None] | None = None,
             attach: Callable[[Daemon], None] | None = None) -> dict:
    """One run of the daemon's frame loop on `source`, with the caller's warm pipeline and
    started publisher. `attach(daemon)`, before it runs: another bench's hook to add its own
    observers (bench web's viewers)."""
    from edge_gesture.daemon import Daemon

    # A fresh scene per run (no hand followed, new tracks and decider), so each run's events and
    # the time to find the first hand are the same.
    pipeline.start_scene()
    # No stats topic: the figures are this report (the publisher keeps the user's [mqtt]).
    run_cfg = cfg.model_copy(update={
        "capture": cfg.capture.model_copy(update={"source": source, "realtime": realtime}),
        "mqtt": cfg.mqtt.model_copy(update={"stats_interval_s": 0.0})})
    daemon = Daemon(run_cfg, publisher, pipeline=pipeline, latency_samples=100_000)
    stats = daemon.stats
    watch = _RunWatch(lambda: daemon.request_stop("run length reached", seconds=f"{seconds:g}"),
                      seconds, progress, lambda: stats.frames_processed)
    daemon.observers.add(watch)
    if attach is not None:
        attach(daemon)
    daemon.run()
    elapsed = (watch.last_frame_at or time.monotonic()) - watch.start
    return {
        "frames": stats.frames_processed,
        "fps": stats.frames_processed / elapsed if elapsed else 0.0,
        "dropped": stats.frames_dropped,
        "latency_ms": stats.latencies(),
        # Source time from the first frame to the first frame with a hand found: with a clip whose
        # hand appears at a known time, how long a new hand takes to be found.
        "first_hand_s": None if watch.first_hand_t is None else watch.first_hand_t - watch.first_t,
        "frame_size": watch.size,
        "events": stats.events,
    }


def measure(cfg, args, seconds: float) -> dict:
    """The report for one configuration: `--repeats` capacity and live runs of `seconds` each
    (0: to the end of the source), medians."""
    from edge_gesture.daemon import FramePipeline
    from edge_gesture.publish import Publisher

    vlm = _start_vlm(cfg) if cfg.vlm.enabled else None
    pipeline = FramePipeline(cfg, vlm=vlm)
    publisher = Publisher(cfg)
    publisher.start()
    runs, live = [], []
    standalone, beside = [], []
    repeats = max(1, args.repeats)
    try:
        if vlm is not None:
            standalone = _standalone_decisions(vlm)
        for i in range(repeats):
            for realtime, kind, out in ((False, "capacity", runs), (True, "live", live)):
                run = f"{2 * i + 1 + realtime}/{2 * repeats} ({kind})"
                if vlm is not None:
                    vlm.recent_latencies_s.clear()
                out.append(run_once(cfg, args.source, seconds, pipeline, publisher, realtime,
                                    progress_line(cfg.hands.backend, run, seconds)))
                if vlm is not None and realtime:
                    beside += vlm.recent_latencies_s
    finally:
        broker_connected = publisher.connected
        publisher.stop()
        pipeline.close()
        if vlm is not None:
            vlm.stop()

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
    if vlm is not None:
        report["vlm"] = _vlm_report(cfg, standalone, beside)
    return report


#: Decisions timed on the loaded VLM before the frame loop starts: the standalone figure.
STANDALONE_DECISIONS = 10


def _start_vlm(cfg):
    """The daemon's VLM worker on the config's bundle, loaded and warmed up, or a usage error
    naming the bundle."""
    from edge_gesture.vlm.worker import VlmWorker

    vlm = VlmWorker(cfg)
    if not vlm.start(wait_s=None) and not vlm.wait_ready(600.0):
        error = vlm.status()["error"]
        vlm.stop()
        raise UsageError(f"--vlm {cfg.vlm.bundle}: {error or 'the VLM did not load within 600 s'}")
    return vlm


def _standalone_decisions(vlm) -> list[float]:
    from edge_gesture.vlm.bench import bench_crop

    crop = bench_crop(None)
    vlm.time_decision(crop)  # after the warm-up, one more so caches are as in the daemon
    return [vlm.time_decision(crop) for _ in range(STANDALONE_DECISIONS)]


def _vlm_report(cfg, standalone: list[float], beside: list[float]) -> dict:
    def pct(xs, q):
        return round(1000 * float(np.percentile(xs, q)), 1) if xs else None

    inside = pct(beside, 50)
    alone = pct(standalone, 50)
    return {
        "bundle": cfg.vlm.bundle,
        "device": cfg.vlm.device,
        "standalone_decisions": len(standalone),
        "standalone_p50_ms": alone,
        "standalone_p95_ms": pct(standalone, 95),
        "in_daemon_decisions": len(beside),
        "in_daemon_p50_ms": inside,
        "in_daemon_p95_ms": pct(beside, 95),
        "in_daemon_to_standalone": round(inside / alone, 2) if inside and alone else None,
    }


def main(args) -> int:
    cfg = load_config(getattr(args, "config", None))
    # The daemon's frame loop as `run` has it, without what a benchmark must not do: take the
    # web port of a running service or save pictures. The VLM runs beside it only with --vlm.
    vlm_bundle = getattr(args, "vlm", None)
    cfg = cfg.model_copy(update={
        "vlm": cfg.vlm.model_copy(update={"enabled": bool(vlm_bundle), "bundle": vlm_bundle or ""}),
        "capture": cfg.capture.model_copy(
            update={"source": args.source, "realtime": False, "at_end": "stop"}),
        "web": cfg.web.model_copy(update={"enabled": False}),
        "dataset": cfg.dataset.model_copy(update={"enabled": False}),
    })
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
    if "vlm" in report:
        v = report["vlm"]
        print(f"vlm decision crop->label ({v['bundle']} on {v['device']}): standalone p50 "
              f"{v['standalone_p50_ms']} ms, p95 {v['standalone_p95_ms']} ms ({v['standalone_decisions']} "
              f"decisions, frame loop idle); inside the running daemon p50 {v['in_daemon_p50_ms']} ms, "
              f"p95 {v['in_daemon_p95_ms']} ms ({v['in_daemon_decisions']} decisions over the live runs): "
              f"{v['in_daemon_to_standalone']}x")
