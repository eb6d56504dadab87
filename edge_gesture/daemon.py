"""The wiring: capture thread -> frame loop (hands, classify, decide) -> publisher, and the
frame observers that watch it (figures, systemd, stats topic, dataset; see observers.py).

Everything that connects the stages lives here; each stage is usable on its own. The frame loop
runs on the main thread and never waits on the network: the publisher has its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from edge_gesture.capture import CaptureThread, Frame, LatestFrameSlot
from edge_gesture.config import Config
from edge_gesture.deadline import Deadline
from edge_gesture.decide import Decider, GestureEvent, Observation
from edge_gesture.gestures import classify_landmarks
from edge_gesture.hands import Hand, HandTracker, open_hands
from edge_gesture.hands.tracks import HandTracks
from edge_gesture.motion import MotionTracker
from edge_gesture.observers import FrameObservers, FrameReport
from edge_gesture.stats import PipelineStats, StatsTopic

if TYPE_CHECKING:
    from edge_gesture.hands.geometry import Region
    from edge_gesture.health import PipelineView
    from edge_gesture.reload import ReloadPlan
    from edge_gesture.vlm.worker import VlmAnswer

log = structlog.get_logger("daemon")

#: Longest wait for the VLM's first load and warm-up before the frame loop starts without it.
VLM_LOAD_WAIT_S = 120.0

#: From a stop request to the end of shutdown: the README promises the exit within 5 s (the
#: unit's TimeoutStopSec is 10 s); the rest is for the frame in flight and the interpreter's exit
#: (0.5 to 1 s with OpenVINO and MediaPipe loaded on a busy 2-core machine).
STOP_BUDGET_S = 3.0
#: Kept for the publisher however long the VLM's last decision runs: `offline` must go out.
PUBLISHER_SHARE_S = 1.5
#: Kept after the publisher for the capture thread, the web server and the dataset writer.
CLOSE_SHARE_S = 0.5

#: Longest stats `status`: Home Assistant's limit for a sensor's state.
STATUS_MAX = 255


@dataclass
class FrameResult:
    hands: list[Hand]
    observations: list[Observation]
    events: list[GestureEvent]
    state_changed: bool
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    # The squares the hand finder searched for new hands in this frame (see FrameReport).
    search_squares: Sequence[Region] = ()
    # Per track id, the VLM's latest answer the fusion saw; None without a VLM.
    vlm_answers: Mapping[int, VlmAnswer] | None = None


class FramePipeline:
    """One frame through hands, landmark classification and debouncing. No threads, no I/O."""

    def __init__(self, cfg: Config, tracker: HandTracker | None = None, vlm=None):
        self.cfg = cfg
        self.tracker = tracker or open_hands(cfg.hands, cache_dir=str(cfg.service.cache_path()))
        self.tracks = HandTracks(cfg.decide.lost_after_s)
        self.decider = Decider(cfg.decide, cfg.gestures.enabled)
        self.motion = MotionTracker(cfg.motion, cfg.hands.mirrored)
        self.vlm = vlm  # a VlmWorker, or None: landmarks only

    def reconfigure(self, cfg: Config) -> bool:
        """Apply new thresholds and gesture list; True if that changed the active gestures,
        which the caller publishes (the next frame's `state_changed` only covers that frame)."""
        self.cfg = cfg
        self.tracks.lost_after_s = cfg.decide.lost_after_s  # the hands keep their track ids
        self.motion.reconfigure(cfg.motion, cfg.hands.mirrored)
        before = self.decider.state()
        self.decider.reconfigure(cfg.decide, cfg.gestures.enabled)
        return self.decider.state() != before

    def start_scene(self) -> None:
        """Forget every hand, track and gesture: the next frame starts a new scene (eval's next
        photo)."""
        self.tracker.forget()
        self.tracks = HandTracks(self.cfg.decide.lost_after_s)
        self.decider = Decider(self.cfg.decide, self.cfg.gestures.enabled)
        self.motion = MotionTracker(self.cfg.motion, self.cfg.hands.mirrored)
        if self.vlm is not None:
            self.vlm.forget()

    def process(self, frame: Frame, found: list[Hand] | None = None) -> FrameResult:
        """`found`: the hand stage's answer for this frame when the caller already has it (eval
        replays a still photo's settled hands instead of finding them again)."""
        t0 = time.perf_counter()
        squares: Sequence[Region] = ()
        if found is None:
            found = self.tracker.detect(frame.image)
            # The OpenVINO finder says where it searched; MediaPipe's graph does not.
            squares = tuple(getattr(self.tracker, "search_squares", ()))
        hands = self.tracks.assign(found, frame.t)
        t1 = time.perf_counter()
        observations = [self.observe(hand) for hand in hands]
        answers = None
        if self.vlm is not None:
            observations, answers = self._with_vlm(frame, hands, observations)
        t2 = time.perf_counter()
        motions, moving = self.motion.update(frame.t, hands, {o.track: o.label for o in observations})
        if moving:
            # A pose counts only while the hand is still: a swipe with an open hand is a swipe.
            observations = [replace(o, label=None, confidence=0.0) if o.track in moving else o
                            for o in observations]
        t3 = time.perf_counter()
        events = self.decider.update(frame.t, observations, frame.wall)
        for m in motions:
            ev = self.decider.motion_event(m.track, m.gesture, m.confidence, frame.t, frame.wall)
            if ev is not None:
                events.append(ev)
        t4 = time.perf_counter()
        return FrameResult(hands, observations, events, self.decider.state_changed,
                           {"hands": t1 - t0, "classify": t2 - t1, "motion": t3 - t2,
                            "decide": t4 - t3}, squares, answers)

    def observe(self, hand: Hand) -> Observation:
        guess = classify_landmarks(hand.landmarks, hand.handedness, aspect=hand.aspect)
        if guess.label == "unknown" or guess.confidence < self.cfg.gestures.min_confidence:
            return Observation(hand.track_id, hand.handedness, None, 0.0, "landmarks")
        return Observation(hand.track_id, hand.handedness, guess.label, guess.confidence, "landmarks")

    def _with_vlm(self, frame: Frame, hands: list[Hand], observations: list[Observation]
                  ) -> tuple[list[Observation], dict[int, VlmAnswer]]:
        """The observations fused with the VLM's answers, and those answers by track id."""
        from edge_gesture.fuse import fuse

        self.vlm.submit(frame, hands)  # never waits: the worker takes it when it is free
        up = self.vlm.available
        answers = {}
        for obs in observations:
            answer = self.vlm.latest(obs.track)
            if answer is not None:
                answers[obs.track] = answer
        return ([fuse(obs, answers.get(obs.track), frame.t, self.cfg.vlm, vlm_up=up)
                 for obs in observations], answers)

    def close(self) -> None:
        self.tracker.close()


class Daemon:
    """Runs the pipeline until asked to stop or until a file source ends."""

    def __init__(self, cfg: Config, publisher=None, config_path=None,
                 source_override: str | None = None, *, pipeline: FramePipeline | None = None,
                 latency_samples: int = 2048):
        """`source_override` is `run --source`: kept across SIGHUP reloads of `config_path`.

        `publisher` and `pipeline`, when given, are the caller's: started before `run`, and
        stopped and closed by the caller after it (the benchmark keeps one of each, warm, over
        its runs); the pipeline's VLM worker, if any, is the caller's too. By default the daemon
        makes its own and stops them. `latency_samples`: how many recent frames the latency
        percentiles cover.
        """
        # paho, prometheus_client and the service side only for a running daemon, not for
        # eval and the benchmarks that use FramePipeline alone.
        from edge_gesture.metrics import Metrics
        from edge_gesture.publish import Publisher
        from edge_gesture.service import DaemonLink, ServiceHooks

        self.cfg = cfg
        self._owns_pipeline = pipeline is None
        self._owns_publisher = publisher is None
        self.vlm = None if pipeline is None else pipeline.vlm
        if pipeline is None and cfg.vlm.enabled:
            from edge_gesture.vlm.worker import VlmWorker

            # Loads and warms up on its own thread while MediaPipe and MQTT start.
            self.vlm = VlmWorker(cfg)
            self.vlm.start(wait_s=0)
        self.slot = LatestFrameSlot()
        self.capture = CaptureThread(cfg.capture, self.slot)
        self.pipeline = pipeline or FramePipeline(cfg, vlm=self.vlm)
        self.publisher = publisher or Publisher(cfg)
        # The one count of frames, events and latencies: the stats topic, /metrics,
        # systemd's status line and the benchmark all read it.
        self.stats = PipelineStats(latency_samples, frames_read=lambda: self.capture.frames_read,
                                   frames_dropped=lambda: self.slot.dropped)
        self.metrics = Metrics(self.stats)
        self._bind_metrics()
        # Set from signal handlers: the main thread only polls it (is_set), never waits on it,
        # since Event.set in a handler would deadlock on the lock an interrupted wait holds.
        self._stop = threading.Event()
        self._stop_reason: dict[str, str] | None = None
        self._stop_requested_at: float | None = None
        self.started_at = time.monotonic()
        # systemd notify/watchdog, health and metrics, dataset, SIGHUP: after the models loaded.
        self.service = ServiceHooks(
            DaemonLink(config=lambda: self.cfg, view=self.health_view,
                       source=lambda: self.capture.source,
                       capture_reopening=self._capture_reopening,
                       new_publisher=self._new_publisher, apply_config=self.apply_config),
            self.stats, self.metrics, config_path, source_override,
            vlm_loading=self.vlm is not None)
        # Lambdas over `self`: a reload replaces the config and the publisher.
        self.observers = FrameObservers([
            self.stats, self.service,
            StatsTopic(lambda: self.cfg.mqtt.stats_interval_s, self.stats_snapshot,
                       lambda snapshot: self.publisher.publish_stats(snapshot)),
        ])
        self.page = None
        if cfg.web.enabled:
            from edge_gesture.health import problems
            from edge_gesture.web.observer import LivePage

            # Reads web.token_file now: a missing token stops the start, naming it.
            self.page = LivePage(cfg.web, check=lambda: problems(self.health_view()),
                                 metrics=self.metrics.exposition, stats=self.live_stats,
                                 mqtt=lambda: self.publisher.counters(), config=lambda: self.cfg)
            self.observers.add(self.page)

    def request_stop(self, reason: str = "signal", **detail: str) -> None:
        """Ask `run` to stop; safe in a signal handler. It logs nothing: the structlog writer
        holds a lock the interrupted main thread may own, so `run` says why it stops."""
        if self._stop_reason is None:
            self._stop_requested_at = time.monotonic()
            self._stop_reason = {"reason": reason, **detail}
        self._stop.set()

    def run(self) -> int:
        try:
            if self.vlm is not None:
                # Ready means the VLM is warm, or known to be down (then landmarks only,
                # retrying). A stop meanwhile does not wait for the load, nor announce `online`.
                log.info("waiting for the vlm to load before starting capture and mqtt",
                         bundle=self.cfg.vlm.bundle, at_most_s=VLM_LOAD_WAIT_S)
                self.vlm.wait_ready(VLM_LOAD_WAIT_S, cancel=self._stop)
                if self._stop.is_set():
                    return 0
            if self.page is not None:
                # Before MQTT says `online`: a taken port ends the start (exit 1), naming it.
                log.info("live page", url=self.page.start())
            if self._owns_publisher:
                self.publisher.start()
            self.capture.start()
            dataset = self.service.started()
            if dataset is not None:
                self.observers.add(dataset)
            self._frame_loop()
        finally:
            self._log_stopping()
            self.shutdown()
        if self.capture.error:
            log.error("stopped because the source failed", error=self.capture.error)
            return 1
        return 0

    def _frame_loop(self) -> None:
        first_frame = True
        while not self._stop.is_set():
            frame = self.slot.get(timeout=0.2)
            report = None
            if frame is None:
                if self.slot.closed:
                    return
            else:
                if first_frame:
                    log.info("first frame", shape=list(frame.image.shape))
                    first_frame = False
                report = self._handle(frame)
            # The one place every observer hears of this turn.
            self.observers.feed(report)

    def threads_left_running(self) -> list[str]:
        """After shutdown: the daemon's threads that may still be inside native code (a VLM
        load, a camera stuck in its driver); see cli.exit_now_if_threads_left."""
        left = []
        if self.vlm is not None and self.vlm.running:
            left.append("vlm")
        if self.capture.is_alive():
            left.append("capture")
        return left

    def _log_stopping(self) -> None:
        if self._stop_reason is not None:
            log.info("stopping", **self._stop_reason)
        elif self.capture.error:
            log.info("stopping", reason="source failed")
        elif self.slot.closed:
            log.info("stopping", reason="source ended")
        else:  # an exception on the frame loop; it is reported on its way out
            log.info("stopping", reason="error")

    def _handle(self, frame: Frame) -> FrameReport:
        picked = time.monotonic()
        result = self.pipeline.process(frame)
        t0 = time.perf_counter()
        published = []
        for ev in result.events:
            log.info("gesture", gesture=ev.gesture, hand=ev.hand, confidence=ev.confidence,
                     source=ev.source, frame=frame.index)
            seq = self.publisher.publish_event(ev)
            if self.page is not None:  # the page shows the MQTT bytes; rendered only for it
                published.append(self.publisher.event_json(ev, seq))
        state = self.pipeline.decider.state()
        if result.state_changed:
            self.publisher.publish_state(state)
        timings = dict(result.timings)
        timings["publish"] = time.perf_counter() - t0
        timings["capture"] = picked - frame.read_at
        return FrameReport(frame, result.hands, result.observations, result.events, state,
                           result.state_changed, timings,
                           end_to_end=time.monotonic() - frame.read_at, published=published,
                           search_squares=result.search_squares, vlm_answers=result.vlm_answers)

    # ------------------------------------------------------------ views for the observers

    def health_view(self) -> PipelineView:
        """What /healthz, the stats `status` and systemd's Status: judge; read from any thread."""
        from edge_gesture.health import PipelineView

        vlm = self.vlm.status() if self.vlm is not None else {}
        return PipelineView(
            now=time.monotonic(), last_frame_at=self.stats.last_frame_at,
            started_at=self.started_at, source_connected=self.capture.connected,
            source_ended=self.capture.ended, source_error=self.capture.error,
            publisher_connected=self.publisher.connected,
            stale_after_s=self.cfg.web.stale_after_s, vlm_state=vlm.get("state"),
            vlm_error=vlm.get("error"))

    def _capture_reopening(self) -> bool:
        c = self.capture
        return c.is_alive() and not c.connected and not c.ended and c.error is None

    def _bind_metrics(self) -> None:
        def outbox() -> int:
            return self.publisher.counters()["outbox"]

        def dropped() -> int:
            c = self.publisher.counters()
            return c["dropped_stale"] + c["dropped_full"]

        def vlm():
            return self.vlm.status() if self.vlm is not None else None

        # Lambdas over `self`, not bound methods: a reload may replace the publisher.
        self.metrics.bind(
            source_connected=lambda: self.capture.connected,
            mqtt_connected=lambda: self.publisher.connected, mqtt_outbox=outbox,
            mqtt_dropped=dropped, vlm=vlm)

    def stats_snapshot(self) -> dict:
        """The stats topic's message; its rates run from the previous call."""
        return self.stats.snapshot(source_connected=self.capture.connected,
                                   device_id=self.cfg.device_id, **self._status_figures())

    def live_stats(self) -> dict:
        """The live page's figures: the stats topic's counts without touching its rates."""
        return {**self.stats.totals(), "source_connected": self.capture.connected,
                "device_id": self.cfg.device_id, **self._status_figures()}

    def _status_figures(self) -> dict:
        from edge_gesture.health import problems

        extra = {}
        if self.vlm is not None:
            vlm = self.vlm.status()
            latency = vlm["last_latency_s"]
            # vlm_latency_ms is what Home Assistant's diagnostic sensor reads (publish/discovery).
            extra = {"vlm": vlm,
                     "vlm_latency_ms": round(latency * 1000, 1) if latency is not None else None}
        # What /healthz would say, so Home Assistant's pipeline-status sensor shows it too.
        status = "; ".join(problems(self.health_view())) or "ok"
        # Home Assistant refuses a state longer than 255 characters (the sensor goes unknown),
        # and a VLM's error can name a long path; /healthz and the log keep the whole text.
        extra["status"] = status if len(status) <= STATUS_MAX else status[:STATUS_MAX - 1] + "…"
        return extra

    # ------------------------------------------------------------ SIGHUP reload (service.py)

    def _new_publisher(self, cfg: Config):
        # Same class as the running one; its constructor reads the password file and the TLS
        # files, and raises StartupError naming the one it cannot use.
        return type(self.publisher)(cfg)

    def apply_config(self, plan: ReloadPlan, publisher) -> None:
        """Apply a reload plan; `publisher`: one built for the new [mqtt] settings, or None."""
        cfg = plan.config
        if plan.touches("logging"):
            from edge_gesture.logsetup import configure_logging

            configure_logging(cfg.logging.level, cfg.logging.format)
        state_changed = False
        if plan.touches("gestures", "decide"):
            state_changed = self.pipeline.reconfigure(cfg)
        self.cfg = cfg
        if publisher is not None:
            self._replace_publisher(publisher)  # announces the current state itself
        elif state_changed:
            # A gesture the new list no longer has ended now: subscribers must hear it now,
            # not whenever a later frame happens to change the state again.
            self.publisher.publish_state(self.pipeline.decider.state())

    def _replace_publisher(self, new) -> None:
        # The last will and the topics are fixed at connect time, so new topics or a new broker
        # mean a new connection: the old one says `offline` on its topics, the new one `online`.
        old = self.publisher
        old.stop(timeout=2.0)
        new.start()
        self.publisher = new
        new.publish_state(self.pipeline.decider.state())
        log.info("publisher restarted for new MQTT settings", topic_root=new.cfg.topic_root)

    def shutdown(self) -> None:
        """Stop every stage within STOP_BUDGET_S of the stop request: each wait takes what is
        left of one deadline, less the shares kept for the steps after it."""
        deadline = Deadline(STOP_BUDGET_S, start=self._stop_requested_at)
        self.service.stopping()
        self.capture.stop()
        if self._owns_pipeline:
            self.pipeline.close()
            if self.vlm is not None:
                # Lets the decision in flight finish (a CPU decision takes well under a second);
                # a load in progress is not waited for (see VlmWorker.stop).
                self.vlm.stop(timeout=deadline.left(keep=PUBLISHER_SHARE_S + CLOSE_SHARE_S))
        if self._owns_publisher:
            self.publisher.stop(timeout=deadline.left(keep=CLOSE_SHARE_S))
        if self.capture.is_alive():  # not started when stopped during the VLM's load
            self.capture.join(timeout=deadline.left())
        self.observers.close(timeout=deadline.left())
