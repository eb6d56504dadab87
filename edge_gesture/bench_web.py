"""`edge-gesture bench web`: what viewers of the live page cost the frame loop, and how soon a
published event reaches the page.

One process runs the daemon itself (bench_pipeline.run_once: daemon.Daemon's capture thread,
frame loop and publisher) with [web] on, on 127.0.0.1 and a free port, over a source paced in
real time as a camera delivers it (a file at its own frame rate, newest frame wins), under two
conditions that alternate (ABBA order, so a drift of the shared machine falls on both):
- no viewer: the server is up and nobody is connected (no picture is encoded);
- N viewers: N HTTP clients each reading /stream.mjpg and counting its parts, plus one
  WebSocket client on /ws noting when each `event` message arrives.
Both see the same frames at the same times, with the same warm models and a fresh scene, so the
difference in processed frames/s and end-to-end latency is the viewers' cost as a user would see
it. While the pipeline has time to spare that cost hides in it, which is why the process's CPU
use is reported too.

The clients run in this process, on one thread and event loop of their own: like a browser on
the daemon's machine they share its CPU (one on another machine costs the daemon only the
server's side), and they read the daemon's clock. An event's latency to the page is measured on
time.monotonic(): from the end of the publish calls for its frame (the frame's read_at plus the
daemon's own end-to-end time, both on that clock) to the WebSocket message's arrival; events
and messages are matched by (run_id, sequence) from the event JSON. Events published before the
WebSocket's `hello` are left out. The capture-to-page time, from the frame's read, is reported
beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_gesture.bench_pipeline import check_source, run_once, run_seconds
from edge_gesture.config import load_config
from edge_gesture.errors import StartupError, UsageError
from edge_gesture.machine import cpu_facts, cpu_line
from edge_gesture.observers import FrameObserver, FrameReport
from edge_gesture.stats import percentiles_ms

#: How long the clients get to leave after the daemon's server stopped.
CLIENTS_END_WAIT_S = 5.0
#: A viewer that gets no byte for this long has lost the stream (the server stops within 1 s).
READ_TIMEOUT_S = 30.0
PROGRESS_EVERY_S = 5.0


@dataclass
class StreamWatch:
    """One viewer of /stream.mjpg."""

    pictures: int = 0
    first_at: float | None = None
    last_at: float | None = None
    error: str | None = None

    def fps(self) -> float | None:
        """Pictures a second between the first and the last one received."""
        if self.pictures < 2 or self.last_at == self.first_at:
            return None
        return (self.pictures - 1) / (self.last_at - self.first_at)


@dataclass
class PageWatch:
    """The WebSocket client: when its hello came, and when each event message arrived."""

    hello_at: float | None = None
    arrivals: dict[tuple[str, int], float] = field(default_factory=dict)
    error: str | None = None


class Viewers:
    """N stream viewers and one WebSocket client of the page at `base_url`, on a thread and event
    loop of their own. They end when the server closes their connections (the daemon's shutdown
    stops it), or at `stop`."""

    def __init__(self, base_url: str, n: int):
        self.base_url = base_url
        self.streams = [StreamWatch() for _ in range(n)]
        self.page = PageWatch()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="bench-viewers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = CLIENTS_END_WAIT_S) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive() and self._loop is not None and self._main is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(timeout)

    def errors(self) -> list[str]:
        out = [f"viewer {i + 1}: {s.error}" for i, s in enumerate(self.streams) if s.error]
        if self.page.error:
            out.append(f"WebSocket: {self.page.error}")
        return out

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._main = loop.create_task(self._all())
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._main)
        finally:
            loop.close()

    async def _all(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=READ_TIMEOUT_S)
        # One connection per client: the default pool would let only a few streams run at once.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(self._websocket(session),
                                 *(self._stream(session, s) for s in self.streams))

    async def _stream(self, session, watch: StreamWatch) -> None:
        import aiohttp

        try:
            async with session.get(self.base_url + "stream.mjpg") as resp:
                if resp.status != 200:
                    watch.error = f"HTTP {resp.status}: {(await resp.text()).strip()[:200]}"
                    return
                reader, length = resp.content, None
                while True:
                    line = await reader.readline()
                    if not line:
                        return  # the server closed the stream
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif line == b"\r\n" and length is not None:
                        # A part's headers ended: its picture follows.
                        await reader.readexactly(length)
                        now = time.monotonic()
                        watch.pictures += 1
                        watch.last_at = now
                        if watch.first_at is None:
                            watch.first_at = now
                        length = None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                asyncio.IncompleteReadError, ConnectionResetError):
            return  # the server stopping mid-part
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            watch.error = f"{type(e).__name__}: {e}"

    async def _websocket(self, session) -> None:
        import aiohttp

        try:
            async with session.ws_connect(self.base_url + "ws", autoping=True) as ws:
                async for msg in ws:
                    arrived = time.monotonic()  # first, before any parsing
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    body = json.loads(msg.data)
                    kind = body.get("type")
                    if kind == "event":
                        ev = body["event"]
                        self.page.arrivals[(ev["run_id"], ev["sequence"])] = arrived
                    elif kind == "hello":
                        self.page.hello_at = arrived
        except aiohttp.WSServerHandshakeError as e:
            self.page.error = f"HTTP {e.status}: {e.message}"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as e:
            self.page.error = f"{type(e).__name__}: {e}"


class EventTimes(FrameObserver):
    """The daemon's side of the event latency: per (run_id, sequence), when the event's frame
    was read and when its publish calls ended, on time.monotonic()."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, int], tuple[float, float]] = {}

    def frame_done(self, report: FrameReport) -> None:
        if not report.published:
            return
        read_at = report.frame.read_at
        published_at = read_at + report.end_to_end
        for body in report.published:
            ev = json.loads(body)
            self.times[(ev["run_id"], ev["sequence"])] = (read_at, published_at)


class _StartViewers(FrameObserver):
    """Connects the viewers at the frame loop's first turn: the server is up by then (the
    daemon starts it before its frame loop), and the first frames are just coming."""

    def __init__(self, start: Callable[[], None]):
        self._start = start

    def tick(self, processed: bool) -> None:
        if self._start is not None:
            start, self._start = self._start, None
            start()


def _progress(run: str, seconds: float) -> Callable[[int, float], None]:
    of = f" of {seconds:g}" if seconds else ""

    def report(frames: int, elapsed: float) -> None:
        print(f"bench web: run {run}, {elapsed:.0f} s{of}, {frames / elapsed:.1f} frames/s so far",
              file=sys.stderr, flush=True)

    return report


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _machine_cpu_seconds() -> float | None:
    """CPU time every process of the machine has used (Linux's /proc/stat), to tell how much of
    it others took during a run on a shared machine; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait is busy.
    ticks = [int(v) for v in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def run_condition(cfg, source: str, seconds: float, pipeline, publisher, viewers: int,
                  run: str) -> dict:
    """One run of the daemon with the live page on; `viewers` 0: nobody connects."""
    clients: list[Viewers] = []
    events = EventTimes()

    def attach(daemon) -> None:
        server = daemon.page.server
        daemon.observers.add(events)
        if viewers:
            def connect() -> None:
                clients.append(Viewers(server.url, viewers))
                clients[0].start()
            daemon.observers.add(_StartViewers(connect))

    started, cpu0, machine0 = time.monotonic(), _cpu_seconds(), _machine_cpu_seconds()
    result = run_once(cfg, source, seconds, pipeline, publisher, realtime=True,
                      progress=_progress(run, seconds), attach=attach)
    wall, cpu = time.monotonic() - started, _cpu_seconds() - cpu0
    machine1 = _machine_cpu_seconds()
    others = None if machine0 is None or machine1 is None else machine1 - machine0 - cpu
    out = {
        "fps": result["fps"],
        "dropped": result["dropped"],
        "end_to_end_ms": result["latency_ms"]["end_to_end"],
        "frame_size": result["frame_size"],
        "events": result["events"],
        "cpu_percent": 100.0 * cpu / wall if wall > 0 else None,
        "other_cpu_percent": (100.0 * max(0.0, others) / wall
                              if others is not None and wall > 0 else None),
    }
    if not viewers:
        return out
    if not clients:
        raise StartupError("bench web: the run ended before its viewers connected (no frame "
                           "loop turn); is the source empty?")
    watchers = clients[0]
    watchers.stop()
    if errors := watchers.errors():
        raise StartupError("bench web: the live page's clients could not watch: " + "; ".join(errors))
    fps = [f for f in (s.fps() for s in watchers.streams) if f is not None]
    hello = watchers.page.hello_at
    on_page, to_page, from_capture, missed = watchers.page.arrivals, [], [], 0
    for key, (read_at, published_at) in events.times.items():
        if hello is None or published_at < hello:
            continue  # before the page was open: it came in the hello, not as an event message
        if key not in on_page:
            missed += 1
            continue
        to_page.append(on_page[key] - published_at)
        from_capture.append(on_page[key] - read_at)
    out.update({
        "viewer_fps": statistics.median(fps) if fps else None,
        "viewer_fps_min": round(min(fps), 2) if fps else None,
        "viewer_pictures_min": min(s.pictures for s in watchers.streams),
        "event_to_page_s": to_page,
        "capture_to_page_s": from_capture,
        "events_missed": missed,
    })
    return out


def measure(cfg, args, seconds: float) -> dict:
    from edge_gesture.daemon import FramePipeline
    from edge_gesture.publish import Publisher

    n = args.viewers
    pipeline = FramePipeline(cfg)
    publisher = Publisher(cfg)
    publisher.start()
    runs: dict[int, list[dict]] = {0: [], n: []}
    repeats = max(1, args.repeats)
    try:
        k = 0
        for i in range(repeats):
            # ABBA: the condition that ran second runs first in the next repeat.
            for viewers in ((0, n) if i % 2 == 0 else (n, 0)):
                k += 1
                label = f"{k}/{2 * repeats} ({viewers or 'no'} viewer{'s' if viewers != 1 else ''})"
                runs[viewers].append(run_condition(cfg, args.source, seconds, pipeline,
                                                   publisher, viewers, label))
    finally:
        broker_connected = publisher.connected
        publisher.stop()
        pipeline.close()
    return report(cfg, args, seconds, runs[0], runs[n], broker_connected)


def _med(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def _condition(rs: list[dict]) -> dict:
    return {
        "fps_processed": _med(r["fps"] for r in rs),
        "fps_processed_runs": [round(r["fps"], 2) for r in rs],
        "end_to_end_ms": {q: _med(r["end_to_end_ms"][q] for r in rs) for q in ("p50", "p95")},
        "frames_dropped": _med(r["dropped"] for r in rs),
        "events_per_run": _med(r["events"] for r in rs),
        "cpu_percent": _med(r["cpu_percent"] for r in rs),
        "other_cpu_percent": _med(r["other_cpu_percent"] for r in rs),
        "other_cpu_percent_runs": [None if r["other_cpu_percent"] is None
                                   else round(r["other_cpu_percent"], 1) for r in rs],
    }


def report(cfg, args, seconds: float, alone: list[dict], watched: list[dict],
           broker_connected: bool) -> dict:
    none, viewers = _condition(alone), _condition(watched)
    viewers.update({
        "viewer_fps": _med(r["viewer_fps"] for r in watched),
        "viewer_fps_runs": [None if r["viewer_fps"] is None else round(r["viewer_fps"], 2)
                            for r in watched],
        "viewer_fps_min": min((r["viewer_fps_min"] for r in watched
                               if r["viewer_fps_min"] is not None), default=None),
        "viewer_pictures_min": min(r["viewer_pictures_min"] for r in watched),
    })
    # Pooled over the runs: a few events a run, too few for a p95 of its own.
    to_page = [s for r in watched for s in r["event_to_page_s"]]
    from_capture = [s for r in watched for s in r["capture_to_page_s"]]
    ratio = (round(viewers["fps_processed"] / none["fps_processed"], 3)
             if none["fps_processed"] else None)
    return {
        "cpu": cpu_facts(),
        "source": args.source,
        "frame_size": alone[0]["frame_size"],
        "seconds_per_run": seconds or None,  # None: each run went to the end of the source
        "repeats": len(alone),
        "viewers": args.viewers,
        "stream_fps": cfg.web.stream_fps,
        "stream_width": cfg.web.stream_width,
        "no_viewer": none,
        "with_viewers": viewers,
        "fps_ratio": ratio,
        "event_to_page_ms": {**percentiles_ms(to_page), "count": len(to_page),
                             "missed": sum(r["events_missed"] for r in watched)},
        "capture_to_page_ms": percentiles_ms(from_capture),
        "hands_backend": cfg.hands.backend,
        "broker_connected": broker_connected,
    }


def main(args) -> int:
    if args.viewers < 1:
        raise UsageError(f"--viewers: expected 1 or more, got {args.viewers}")
    cfg = load_config(getattr(args, "config", None))
    check_source(args.source)
    seconds = run_seconds(args.source, args.seconds)
    from edge_gesture.capture import SourceKind, source_kind

    is_file = source_kind(args.source) is SourceKind.FILE
    web = cfg.web
    # The bench's own server: on this machine only, a free port, no token; room for the
    # viewers, the WebSocket and a spare connection for the API.
    max_viewers = max(web.max_viewers, args.viewers + 1)
    cfg = cfg.model_copy(update={
        "capture": cfg.capture.model_copy(update={
            "source": args.source, "realtime": True,
            # --seconds on a file: the file loops to fill the run.
            "at_end": "loop" if is_file and seconds else "stop"}),
        "web": web.model_copy(update={
            "enabled": True, "host": "127.0.0.1", "port": 0, "token_file": "",
            "max_viewers": max_viewers,
            "max_connections": max(web.max_connections, max_viewers + 2)}),
        "dataset": cfg.dataset.model_copy(update={"enabled": False}),
    })
    result = measure(cfg, args, seconds)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print(result)
    return 0


def _print(r: dict) -> None:
    none, watched, n = r["no_viewer"], r["with_viewers"], r["viewers"]
    w, h = r["frame_size"] or ("?", "?")
    length = f"{r['seconds_per_run']:g} s/run" if r["seconds_per_run"] else "to its end each run"
    print(cpu_line(r["cpu"]))
    print(f"source: {r['source']} ({w}x{h}, paced at its frame rate, {length}; {r['repeats']} runs "
          f"of each condition, alternated; medians)")
    print(f"viewers: {n} reading /stream.mjpg ({r['stream_fps']:g} frames/s, {r['stream_width']} "
          "wide) and one WebSocket on /ws")
    col = f"{n} viewer{'s' if n != 1 else ''}"
    print(f"{'':<32}{'no viewer':>12}{col:>12}")
    rows = [
        ("processed frames/s", none["fps_processed"], watched["fps_processed"]),
        ("end to end p50 ms", none["end_to_end_ms"]["p50"], watched["end_to_end_ms"]["p50"]),
        ("end to end p95 ms", none["end_to_end_ms"]["p95"], watched["end_to_end_ms"]["p95"]),
        ("frames dropped a run", none["frames_dropped"], watched["frames_dropped"]),
        ("process CPU % (a core: 100)", none["cpu_percent"], watched["cpu_percent"]),
        ("other processes' CPU %", none["other_cpu_percent"], watched["other_cpu_percent"]),
        ("events a run", none["events_per_run"], watched["events_per_run"]),
    ]
    for name, a, b in rows:
        print(f"{name:<32}{a!s:>12}{b!s:>12}")
    print(f"processed frames/s, {col} / no viewer: {r['fps_ratio']}   runs: "
          f"{none['fps_processed_runs']} / {watched['fps_processed_runs']}")
    print(f"viewers' pictures/s: {watched['viewer_fps']} (slowest viewer {watched['viewer_fps_min']})")
    e, c = r["event_to_page_ms"], r["capture_to_page_ms"]
    print(f"event to page (publish call -> WebSocket message): p50 {e['p50']} ms, p95 {e['p95']} ms "
          f"over {e['count']} events ({e['missed']} missed); from the frame's capture: p50 "
          f"{c['p50']} ms, p95 {c['p95']} ms")
    print(f"hands: {r['hands_backend']}   broker connected: {r['broker_connected']}")
