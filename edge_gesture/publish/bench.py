"""`edge-gesture bench mqtt`: a burst of gesture events while the daemon's frame loop runs.

Per repeat: the daemon itself (daemon.Daemon, through bench_pipeline.run_once: its capture
thread, frame loop, hand stage, classifier, decider and publisher, with the live page, dataset
saving and the stats topic off) runs on a source paced in real time and looping; after a quiet
spell that gives the baseline frame time, N synthetic events are added to the pipeline's results
(BurstPipeline), spread evenly over one second, as a decider would hand them over, so the
daemon's own frame loop publishes them. A subscriber in a separate process (so its network
thread does not share our interpreter lock) timestamps each event on arrival with the same
system-wide monotonic clock. Reported:
- delivered / lost / duplicated events (none may be lost while the broker is up);
- the stall publishing causes the frame loop: the daemon's own `publish` stage per frame (its
  publish calls, plus logging each event and rendering its payload for the frame observers),
  wall-clock, which also catches waits for the interpreter lock and the OS scheduler on a busy
  machine; the thread's CPU time in the publish_event calls, which is publishing's own cost;
  frame times (the daemon's stages after the slot) and its end-to-end latency, with and
  without the burst;
- decision -> broker delivery latency, p50/p95/max, from the daemon's publish_event call.
Medians over repeats, because these machines are shared and noisy.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edge_gesture.capture import Frame
from edge_gesture.config import Config, load_config
from edge_gesture.daemon import FramePipeline, FrameResult
from edge_gesture.decide import GestureEvent
from edge_gesture.errors import StartupError, UsageError
from edge_gesture.machine import cpu_facts, cpu_line
from edge_gesture.observers import FrameObserver, FrameReport
from edge_gesture.publish import Publisher

#: Seconds the benchmark's subscriber has to connect and subscribe.
SUBSCRIBE_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_broker() -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    proc = subprocess.Popen([exe, "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise StartupError(f"mosquitto ({exe}) did not start; give a broker with --broker HOST:PORT")


def parse_broker(value: str) -> tuple[str, int]:
    """`--broker HOST:PORT` (HOST may be empty for this machine, or an IPv6 address in [])."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise UsageError(f"--broker: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port_s)


def check_reachable(value: str, host: str, port: int, timeout: float = 5.0) -> None:
    """Fail now, naming --broker, when nothing accepts connections there: the benchmark's
    subscriber and publisher would otherwise only time out."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except ConnectionRefusedError:
        why = "connection refused"
    except socket.gaierror as e:
        why = f"unknown host ({e.strerror})"
    except TimeoutError:
        why = f"no answer within {timeout:g} s"
    except OSError as e:
        why = e.strerror or str(e)
    raise UsageError(f"--broker {value}: {why}")


def _subscriber(host: str, port: int, topic: str, ready, stop, out) -> None:
    """Separate process: record (run_id, sequence, arrival time) of every event."""
    import paho.mqtt.client as mqtt

    got: list[tuple[str, int, float]] = []

    def on_message(c, u, msg):
        t = time.monotonic()
        body = json.loads(msg.payload)
        got.append((body["run_id"], body["sequence"], t))

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.connect(host, port)
    c.loop_start()
    stop.wait()
    c.loop_stop()
    c.disconnect()
    out.send(got)


def _pct(values, q):
    return round(float(np.percentile(values, q)), 2) if len(values) else None


class TimedPublisher(Publisher):
    """The daemon's publisher, noting for each `publish_event` call the daemon makes when it was
    made (the decision's hand-over: where the delivery latency starts), its wall-clock time and
    the frame-loop thread's CPU time in it."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.called_at: dict[int, float] = {}  # sequence -> time.monotonic() of the call
        self.call_s: list[float] = []
        self._cpu_s = 0.0  # since `take_cpu_s` last read it

    def publish_event(self, ev) -> int:
        c0, u0 = time.perf_counter(), time.thread_time()
        called = time.monotonic()
        seq = super().publish_event(ev)
        self.call_s.append(time.perf_counter() - c0)
        self._cpu_s += time.thread_time() - u0
        self.called_at[seq] = called
        return seq

    def take_cpu_s(self) -> float:
        """CPU seconds spent in `publish_event` since the previous call (one frame's worth)."""
        cpu, self._cpu_s = self._cpu_s, 0.0
        return cpu


class BurstPipeline(FramePipeline):
    """The daemon's FramePipeline; while a `Burst` is armed, each frame's result also carries
    the burst's events due by then, as a decider would hand them over, so the daemon's own
    frame loop publishes them."""

    burst: Burst | None = None

    def process(self, frame: Frame, found=None) -> FrameResult:
        result = super().process(frame, found)
        return result if self.burst is None else self.burst.add_to(result, frame)


class Burst(FrameObserver):
    """One daemon run: a quiet spell of `baseline_s` (its first half is warm-up), then `events`
    synthetic events spread evenly over `burst_s`, then half a second more; stops the daemon.

    `add_to` (from the pipeline) decides each frame's stretch and adds its events; `frame_done`
    (the daemon's report of that same frame, which the frame loop hands over next) files the
    daemon's own timings under it: the `publish` stage is the frame loop's stall."""

    def __init__(self, gestures: list[str], events: int, burst_s: float, baseline_s: float,
                 publisher: TimedPublisher, stop: Callable[[], None]):
        self._gestures = gestures
        self._events = events
        self._burst_s = burst_s
        self._baseline_s = baseline_s
        self._publisher = publisher
        self._stop = stop
        self._start: float | None = None
        self._stretch: str | None = None  # of the frame between add_to and frame_done
        self._ended = False
        self.sent = 0
        self.base_frames: list[float] = []
        self.base_e2e: list[float] = []
        self.burst_frames: list[float] = []
        self.burst_e2e: list[float] = []
        self.frame_publish: list[float] = []
        self.frame_publish_cpu: list[float] = []

    @property
    def ended(self) -> bool:
        return self._ended

    def add_to(self, result: FrameResult, frame: Frame) -> FrameResult:
        now = time.monotonic()
        if self._start is None:  # the clock starts with the first frame, not the model load
            self._start = now
        burst_start = self._start + self._baseline_s
        if now >= burst_start + self._burst_s + 0.5:
            self._ended, self._stretch = True, None
            return result
        if now < burst_start:
            # The first frames pay for the hand stage's warm-up.
            self._stretch = "base" if now >= self._start + self._baseline_s / 2 else None
            return result
        self._stretch = "burst" if now < burst_start + self._burst_s + 0.1 else None
        due = min(self._events, int(self._events * (now - burst_start) / self._burst_s) + 1)
        extra = []
        while self.sent < due:
            extra.append(GestureEvent(self._gestures[self.sent % len(self._gestures)], 0.9,
                                      "landmarks", ("left", "right")[self.sent % 2], frame.t,
                                      frame.wall))
            self.sent += 1
        # The source's own events, if it shows hands, go first and are counted too.
        return replace(result, events=[*result.events, *extra]) if extra else result

    def frame_done(self, report: FrameReport) -> None:
        cpu = self._publisher.take_cpu_s()
        stretch, self._stretch = self._stretch, None
        # The frame's time in the loop: its stages after it left the slot.
        frame_s = sum(s for stage, s in report.timings.items() if stage != "capture")
        if stretch == "base":
            self.base_frames.append(frame_s)
            self.base_e2e.append(report.end_to_end)
        elif stretch == "burst":
            self.burst_frames.append(frame_s)
            self.burst_e2e.append(report.end_to_end)
            self.frame_publish.append(report.timings["publish"])
            self.frame_publish_cpu.append(cpu)
        if self._ended:
            self._stop()


def run_once(cfg: Config, pipeline: BurstPipeline, publisher: TimedPublisher, source: str,
             events: int, burst_s: float, baseline_s: float) -> dict:
    """One run of the daemon (daemon.Daemon, through bench_pipeline.run_once) on `source`, paced
    in real time and looping, with the caller's warm pipeline and started publisher."""
    from edge_gesture.bench_pipeline import run_once as run_daemon

    daemons = []

    def attach(daemon) -> None:
        daemons.append(daemon)
        pipeline.burst = Burst(list(cfg.gestures.enabled), events, burst_s, baseline_s, publisher,
                               lambda: daemon.request_stop("burst over"))
        daemon.observers.add(pipeline.burst)

    try:
        figures = run_daemon(cfg, source, 0, pipeline, publisher, realtime=True, attach=attach)
    finally:
        burst, pipeline.burst = pipeline.burst, None
    if burst is None or not burst.ended:
        error = daemons[0].capture.error if daemons else None
        raise StartupError(f"--source {source}: the frames stopped before the burst ended"
                           + (f" ({error})" if error else ""))
    return {"sent_at": dict(publisher.called_at), "sent": len(publisher.called_at),
            "calls": list(publisher.call_s), "frame_publish": burst.frame_publish,
            "frame_publish_cpu": burst.frame_publish_cpu, "base_frames": burst.base_frames,
            "burst_frames": burst.burst_frames, "base_e2e": burst.base_e2e,
            "burst_e2e": burst.burst_e2e, "daemon_events": figures["events"]}


def main(args) -> int:
    from edge_gesture.bench_pipeline import check_source
    from edge_gesture.logsetup import configure_logging

    configure_logging("warning", "console")  # stdout carries the report
    cfg = load_config(getattr(args, "config", None)) if getattr(args, "config", None) else Config()
    # The daemon as `run` has it, without taking the web port of a running service or saving
    # pictures; the VLM stays off: the pipeline is made without one.
    cfg = cfg.model_copy(update={
        "capture": cfg.capture.model_copy(update={"at_end": "loop"}),
        "web": cfg.web.model_copy(update={"enabled": False}),
        "dataset": cfg.dataset.model_copy(update={"enabled": False}),
    })
    check_source(args.source)
    broker = None
    if args.broker:
        host, port = parse_broker(args.broker)
        check_reachable(args.broker, host, port)
    else:
        broker, port = _start_broker()
        host = "127.0.0.1"
    # A broker named with --broker is the user's input (exit 2); our private one failing is not.
    broker_error = UsageError if args.broker else StartupError
    where = f"--broker {args.broker}" if args.broker else f"broker {host}:{port}"
    cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={
        "host": host, "port": port, "outbox_size": max(cfg.mqtt.outbox_size, 2 * args.events),
        "stats_interval_s": 0.0})})
    source = args.source
    pipeline = BurstPipeline(cfg)
    runs = []
    ctx = mp.get_context("spawn")
    try:
        for _ in range(max(1, args.repeats)):
            ready, stop = ctx.Event(), ctx.Event()
            recv, send = ctx.Pipe(duplex=False)
            sub = ctx.Process(target=_subscriber, daemon=True,
                              args=(host, port, f"{cfg.topic_root}/event", ready, stop, send))
            sub.start()
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
            while not ready.wait(0.1) and sub.is_alive() and time.monotonic() < deadline:
                pass
            if not ready.is_set():
                sub.kill()
                raise broker_error(f"{where}: the benchmark's subscriber could not subscribe to "
                                   f"{cfg.topic_root}/event (it connects without a login or TLS)")
            publisher = TimedPublisher(cfg).start()
            deadline = time.monotonic() + 10
            while not publisher.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            if not publisher.connected:
                publisher.stop()
                sub.kill()
                raise broker_error(f"{where}: the publisher did not connect within 10 s")
            try:
                r = run_once(cfg, pipeline, publisher, source, args.events, 1.0, args.baseline)
            except BaseException:
                publisher.stop()
                sub.kill()
                raise
            # Everything should be there well within a couple of seconds on a live broker.
            wait_until = time.monotonic() + 10
            while publisher.acked < r["sent"] and time.monotonic() < wait_until:
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()
            got = recv.recv()
            sub.join(5)
            r["counters"] = publisher.counters()
            publisher.stop()
            mine = [(seq, t) for run_id, seq, t in got if run_id == publisher.run_id]
            seqs = [s for s, _ in mine]
            first: dict[int, float] = {}
            for s, t in mine:
                first.setdefault(s, t)
            lat = [(first[s] - r["sent_at"][s]) * 1000 for s in r["sent_at"] if s in first]
            r.update(received=len(set(seqs)), duplicates=len(seqs) - len(set(seqs)),
                     in_order=seqs == sorted(seqs), latency_ms=lat)
            runs.append(r)
    finally:
        pipeline.close()
        if broker is not None:
            broker.terminate()
            broker.wait(5)

    def ms(xs):
        return [x * 1000 for x in xs]

    per_run = [{
        "events_sent": r["sent"],
        "received": r["received"],
        "lost": r["sent"] - r["received"],
        "duplicates": r["duplicates"],
        "in_order": r["in_order"],
        "dropped_stale": r["counters"]["dropped_stale"],
        "frames_during_burst": len(r["burst_frames"]),
        "publish_per_frame_ms": {"p50": _pct(ms(r["frame_publish"]), 50),
                                 "p95": _pct(ms(r["frame_publish"]), 95),
                                 "max": _pct(ms(r["frame_publish"]), 100)},
        "publish_cpu_per_frame_ms": {"p95": _pct(ms(r["frame_publish_cpu"]), 95),
                                     "max": _pct(ms(r["frame_publish_cpu"]), 100)},
        "publish_call_us": {"p50": _pct([c * 1e6 for c in r["calls"]], 50),
                            "max": _pct([c * 1e6 for c in r["calls"]], 100)},
        "frame_ms_baseline": {"p50": _pct(ms(r["base_frames"]), 50),
                              "p95": _pct(ms(r["base_frames"]), 95),
                              "max": _pct(ms(r["base_frames"]), 100)},
        "frame_ms_burst": {"p50": _pct(ms(r["burst_frames"]), 50),
                           "p95": _pct(ms(r["burst_frames"]), 95),
                           "max": _pct(ms(r["burst_frames"]), 100)},
        "end_to_end_ms_baseline": {"p50": _pct(ms(r["base_e2e"]), 50),
                                   "p95": _pct(ms(r["base_e2e"]), 95)},
        "end_to_end_ms_burst": {"p50": _pct(ms(r["burst_e2e"]), 50),
                                "p95": _pct(ms(r["burst_e2e"]), 95)},
        "daemon_events": r["daemon_events"],
        "delivery_latency_ms": {"p50": _pct(r["latency_ms"], 50),
                                "p95": _pct(r["latency_ms"], 95),
                                "max": _pct(r["latency_ms"], 100)},
    } for r in runs]

    def med(path):
        # None: a run with no frame in that stretch (a baseline shorter than a slow frame).
        vals = []
        for r in per_run:
            v = r
            for k in path:
                v = v[k]
            if v is not None:
                vals.append(v)
        return round(statistics.median(vals), 2) if vals else None

    report = {
        "cpu": cpu_facts(),
        "source": source,
        "broker": f"{host}:{port}" + ("" if args.broker else " (private mosquitto)"),
        "protocol": cfg.mqtt.protocol,
        "qos": cfg.mqtt.qos,
        "events_per_burst": args.events,
        "burst_s": 1.0,
        "repeats": len(per_run),
        "lost_total": sum(r["lost"] for r in per_run),
        "duplicates_total": sum(r["duplicates"] for r in per_run),
        "all_in_order": all(r["in_order"] for r in per_run),
        "publish_per_frame_ms_max": med(("publish_per_frame_ms", "max")),
        "publish_per_frame_ms_p95": med(("publish_per_frame_ms", "p95")),
        "publish_per_frame_ms_max_worst": max((r["publish_per_frame_ms"]["max"] for r in per_run
                                               if r["publish_per_frame_ms"]["max"] is not None),
                                              default=None),
        "publish_cpu_per_frame_ms_max": med(("publish_cpu_per_frame_ms", "max")),
        "publish_call_us_p50": med(("publish_call_us", "p50")),
        "frame_ms_p95_baseline": med(("frame_ms_baseline", "p95")),
        "frame_ms_p95_burst": med(("frame_ms_burst", "p95")),
        "end_to_end_ms_p95_baseline": med(("end_to_end_ms_baseline", "p95")),
        "end_to_end_ms_p95_burst": med(("end_to_end_ms_burst", "p95")),
        "delivery_latency_ms_p50": med(("delivery_latency_ms", "p50")),
        "delivery_latency_ms_p95": med(("delivery_latency_ms", "p95")),
        "runs": per_run,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["lost_total"] == 0 else 1
    print(cpu_line(report["cpu"]))
    print(f"MQTT burst: {args.events} events in 1 s while processing {source} frames; "
          f"broker {report['broker']}, MQTT {report['protocol']}, QoS {report['qos']}; "
          f"{report['repeats']} runs, medians")
    print(f"  delivered: lost {report['lost_total']}, duplicates {report['duplicates_total']}, "
          f"in order: {report['all_in_order']}")
    print(f"  the daemon's publish stage per frame: p95 {report['publish_per_frame_ms_p95']}"
          f" ms, max {report['publish_per_frame_ms_max']} ms (worst run "
          f"{report['publish_per_frame_ms_max_worst']} ms); CPU time of its publish_event "
          f"calls, max {report['publish_cpu_per_frame_ms_max']} ms; one call: "
          f"{report['publish_call_us_p50']} us")
    print(f"  frame time p95: {report['frame_ms_p95_baseline']} ms without the burst, "
          f"{report['frame_ms_p95_burst']} ms during it; end to end p95: "
          f"{report['end_to_end_ms_p95_baseline']} ms, {report['end_to_end_ms_p95_burst']} ms")
    print(f"  decision -> delivery latency: p50 {report['delivery_latency_ms_p50']} ms, "
          f"p95 {report['delivery_latency_ms_p95']} ms")
    for i, r in enumerate(per_run, 1):
        print(f"  run {i}: received {r['received']}/{r['events_sent']}, publish/frame max "
              f"{r['publish_per_frame_ms']['max']} ms, latency p50/p95/max "
              f"{r['delivery_latency_ms']['p50']}/{r['delivery_latency_ms']['p95']}/"
              f"{r['delivery_latency_ms']['max']} ms, frames in burst "
              f"{r['frames_during_burst']}")
    return 0 if report["lost_total"] == 0 else 1
