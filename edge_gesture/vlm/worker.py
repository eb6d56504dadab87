"""The VLM in the daemon: a thread that answers for the newest hand crop, never holding up frames.

The frame loop calls `submit(frame, hands)` on every frame; it costs a few comparisons. The
worker runs at most one decision at a time, at most `max_rate_hz`, always on the newest frame
offered (older offers are overwritten, not queued). Hands are known by their track id
(hands.tracks), so two hands with the same left/right label are two hands here too. A hand whose
landmarks have not moved since its last decision is not asked again; its last answer stays valid
and its time moves on. What is kept for a track goes once it has been out of view for
`decide.lost_after_s` (its id never comes back).

Failures never reach the frame loop: a bundle or device that will not load, an inference that
raises, or decisions slower than `timeout_s` make the worker unavailable (the daemon then runs on
landmarks alone and says so in its stats), logged once per episode, and the runtime is reloaded
after a doubling backoff.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from edge_gesture.config import LANDMARK_GESTURES, MOTION_GESTURES, Config
from edge_gesture.vlm.backend import BackendOptions
from edge_gesture.vlm.preprocess import hand_crop
from edge_gesture.vlm.prompt import DEFAULT_DESCRIPTIONS
from edge_gesture.vlm.remote import RemoteError

log = structlog.get_logger("vlm")


@dataclass(frozen=True, slots=True)
class VlmAnswer:
    track: int  # the hand's track id
    label: str  # an enabled gesture or "none"
    probability: float
    t: float  # frame time (monotonic s) up to which the answer is known to hold
    latency: float  # seconds from crop to label


def gesture_descriptions(cfg: Config) -> list[tuple[str, str]]:
    """(name, description) of every enabled gesture the VLM can see in one crop (a swipe or a
    wave is motion, which one picture does not show), for the prompt."""
    custom = {g.name: g.description for g in cfg.gestures.custom}
    out = []
    for name in cfg.gestures.enabled:
        if name in MOTION_GESTURES:
            continue
        desc = custom.get(name) or DEFAULT_DESCRIPTIONS.get(name)
        if desc is None:  # config validation makes this unreachable; fail loudly if not
            raise ValueError(f"gestures.enabled: {name!r} has no description")
        out.append((name, desc))
    return out


def backend_options(cfg: Config) -> BackendOptions:
    v = cfg.vlm
    return BackendOptions(
        vision_device=v.vision_device or v.device,
        language_device=v.language_device or v.device,
        cache_dir=cfg.service.cache_path() / "openvino",
        num_threads=v.num_threads,
        fallback_device=v.fallback_device,
        onnx_provider=v.onnx_provider,
        precision=v.precision,
    )


def load_runtime(cfg: Config):
    """Load the configured bundle and warm it up (imports OpenVINO/ONNX Runtime only here)."""
    from edge_gesture.vlm.runtime import VlmRuntime

    remote = cfg.vlm.remote
    if remote.url and remote.split == "all":
        from edge_gesture.vlm.remote_runtime import RemoteDecisionRuntime

        # Its probe, at construction, makes one decision: a gesture list the server does not
        # answer for is refused here.
        return RemoteDecisionRuntime(remote, gesture_descriptions(cfg))
    opts = backend_options(cfg)
    if opts.cache_dir is not None:
        opts.cache_dir.mkdir(parents=True, exist_ok=True)
    rt = VlmRuntime(
        Path(cfg.vlm.bundle), gesture_descriptions(cfg), opts,
        verify_checksums=cfg.vlm.verify_checksums, allow_unverified=cfg.vlm.allow_unverified,
        remote_vision=_remote_vision(remote) if remote.url else None,
    )
    v = rt.manifest.verification
    if v is not None and not v.passed:  # only vlm.allow_unverified lets such a bundle load
        log.warning("vlm bundle failed its export verification; loaded because "
                    "vlm.allow_unverified = true: its answers may be wrong",
                    bundle=str(rt.root), max_abs_logit_diff=v.max_abs_logit_diff,
                    top1_agree=v.top1_agree)
    rt.warm_up()
    return rt


def _remote_vision(remote):
    """The factory VlmRuntime calls once it has read the bundle: the connection is checked
    against that bundle before its language model loads."""
    from edge_gesture.vlm.remote_runtime import RemoteVision, make_client
    from edge_gesture.vlm.serving import manifest_sha256

    def build(root, manifest, image_tokens):
        client = make_client(remote)
        try:
            return RemoteVision(client, remote, manifest_sha256(root), manifest, image_tokens)
        except Exception:
            client.close()
            raise

    return build


def landmark_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Mean landmark displacement in normalised image units."""
    return float(np.mean(np.linalg.norm(a[:, :2] - b[:, :2], axis=1)))


@dataclass
class _Job:
    frame: object  # capture.Frame
    hand: object  # hands.Hand


class VlmWorker:
    def __init__(self, cfg: Config, *, loader: Callable[[Config], object] = load_runtime,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self._loader = loader
        self._clock = clock
        self._cond = threading.Condition()
        self._job: _Job | None = None
        # All by track id.
        self._answers: dict[int, VlmAnswer] = {}
        self._decided_landmarks: dict[int, np.ndarray] = {}  # at each hand's last decision
        self._last_decided_at: dict[int, float] = {}
        self._offered_at: dict[int, float] = {}  # frame time each track was last offered
        self._runtime = None
        self._state = "stopped"  # loading, ok, slow, failed, stopped
        self._error: str | None = None
        self._failure_kind = ""
        self._busy_since: float | None = None
        self._last_start: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._in_load = False  # the thread is inside the loader, which no stop interrupts
        self.devices: dict[str, str] = {}
        self.counts = {"decisions": 0, "skipped_unchanged": 0, "failures": 0, "slow": 0}
        self.last_latency_s: float | None = None
        #: The latest decisions' crop-to-label seconds, for `bench pipeline --vlm`.
        self.recent_latencies_s: deque[float] = deque(maxlen=1000)
        self.load_s: float | None = None

    # ---- frame-loop side ----
    def start(self, wait_s: float | None = 60.0) -> bool:
        """Start the thread; wait until the first load (with warm-up) succeeded or failed.
        Returns whether the VLM is available."""
        self._state = "loading"
        self._thread = threading.Thread(target=self._run, name="vlm", daemon=True)
        self._thread.start()
        if wait_s:
            self._ready.wait(wait_s)
        return self.available

    def wait_ready(self, timeout: float, cancel: threading.Event | None = None) -> bool:
        """Wait for the first load to succeed or fail, or for `cancel` to be set; returns
        whether the VLM is available.

        `cancel` is only polled, never waited on: a signal handler may set it while this runs
        on the main thread, and Event.set takes a lock that Event.wait holds.
        """
        end = time.monotonic() + timeout
        while not self._ready.is_set():
            left = end - time.monotonic()
            if left <= 0 or (cancel is not None and cancel.is_set()):
                break
            self._ready.wait(min(left, 0.1))
        return self.available

    @property
    def running(self) -> bool:
        """The worker thread is alive: after stop(), a load it was left in (see stop)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def available(self) -> bool:
        with self._cond:
            if self._state != "ok":
                return False
            busy = self._busy_since
            return busy is None or self._clock() - busy <= self.cfg.vlm.timeout_s

    @property
    def state(self) -> str:
        if self._state == "ok" and not self.available:
            return "slow"
        return self._state

    def submit(self, frame, hands: Sequence) -> None:
        """Offer the current frame's hands; cheap, never blocks on inference."""
        if not hands or self._state not in ("ok", "slow"):
            return
        still = self.cfg.vlm.still_threshold
        candidates = []
        with self._cond:
            for hand in hands:
                self._offered_at[hand.track_id] = frame.t
            self._forget_gone(frame.t)
            for hand in hands:
                key = hand.track_id
                before = self._decided_landmarks.get(key)
                if before is not None and landmark_shift(before, hand.landmarks) < still:
                    ans = self._answers.get(key)
                    if ans is not None and ans.t < frame.t:
                        # Same hand pose as when the answer was made: it still holds now.
                        self._answers[key] = _with_t(ans, frame.t)
                    self.counts["skipped_unchanged"] += 1
                    continue
                candidates.append(hand)
            if not candidates:
                return
            # The hand asked least recently goes first, so two hands take turns.
            hand = min(candidates, key=lambda h: self._last_decided_at.get(h.track_id, -1.0))
            self._job = _Job(frame, hand)
            self._cond.notify()

    def _forget_gone(self, t: float) -> None:
        """Drop what is kept for tracks out of view for lost_after_s: they never come back, and
        a long run sees hands come and go under ever new ids. Called holding the lock."""
        gone = [k for k, at in self._offered_at.items() if t - at >= self.cfg.decide.lost_after_s]
        for k in gone:
            del self._offered_at[k]
            self._answers.pop(k, None)
            self._decided_landmarks.pop(k, None)
            self._last_decided_at.pop(k, None)

    def forget(self) -> None:
        """Drop every hand's answer and memory and the offer not yet taken: a new scene (eval's
        next clip, a benchmark's next run) numbers its tracks afresh, and an answer kept under
        a reused track id would be another hand's."""
        with self._cond:
            self._job = None
            self._answers.clear()
            self._decided_landmarks.clear()
            self._last_decided_at.clear()
            self._offered_at.clear()

    def latest(self, track: int) -> VlmAnswer | None:
        """The newest usable answer for the hand with this track id; None when there is none
        or the VLM is down."""
        if not self.available:
            return None
        with self._cond:
            return self._answers.get(track)

    def status(self) -> dict:
        return {
            "state": self.state,
            "error": self._error,
            "devices": dict(self.devices),
            "remote": ({"url": r.url, "split": r.split, "protocol": r.protocol}
                       if (r := self.cfg.vlm.remote).url else None),
            "last_latency_s": self.last_latency_s,
            "load_s": self.load_s,
            **self.counts,
        }

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the worker, waiting at most `timeout` s; True if its thread has ended.

        A load cannot be interrupted (a first GPU/NPU compile can take a minute), so a stop
        during one does not wait for it: the thread is a daemon thread, left behind and ended
        with the process; what it loads is closed, never used.
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # No wait for a load (see above). The thread clears _in_load before it checks _stop,
        # so a load ending meanwhile is either joined here or closes what it loaded itself.
        if self._thread is not None and not self._in_load:
            self._thread.join(timeout)
        ended = not (self._thread is not None and self._thread.is_alive())
        rt, self._runtime = self._runtime, None
        # A decision still running keeps its runtime: closing it underneath would fail the
        # decision with a spurious error. The runtime goes when that thread lets go of it.
        if rt is not None and ended:
            rt.close()
        self._state = "stopped"
        return ended

    def time_decision(self, image: np.ndarray) -> float:
        """Seconds for one decision on a BGR hand crop, made on the caller's thread: the
        benchmark's standalone figure, taken while no frames are offered (the worker idle)."""
        if self._runtime is None or self._job is not None:
            raise RuntimeError("time_decision needs a loaded, idle VLM")
        _, timings = self._runtime.classify(image)
        return timings.total_s

    # ---- worker thread ----
    def _run(self) -> None:
        backoff = self.cfg.vlm.backoff_initial_s
        while not self._stop.is_set():
            if self._runtime is None:
                if not self._load():
                    self._ready.set()
                    if self._stop.wait(backoff):
                        return
                    backoff = min(backoff * 2, self.cfg.vlm.backoff_max_s)
                    continue
                backoff = self.cfg.vlm.backoff_initial_s
                self._ready.set()
            job = self._next_job()
            if job is None:
                continue
            self._decide(job)

    def _load(self) -> bool:
        with self._cond:
            self._state = "loading" if self._state != "failed" else "failed"
        t0 = time.perf_counter()
        self._in_load = True
        try:
            rt = self._loader(self.cfg)
        except Exception as e:  # any load failure leaves the daemon on landmarks
            if not self._stop.is_set():
                self._fail(f"cannot load the VLM: {_reason(e)}")
            return False
        finally:
            self._in_load = False
        if self._stop.is_set():  # stopped while loading: the daemon has gone on without it
            rt.close()
            return False
        self.load_s = time.perf_counter() - t0
        self.devices = dict(getattr(getattr(rt, "backend", None), "devices", {}) or {})
        recovered = self._state == "failed"
        with self._cond:
            self._runtime = rt
            self._state = "ok"
            self._error = None
        if recovered:
            log.info("vlm recovered", devices=self.devices)
        else:
            log.info("vlm ready", load_s=round(self.load_s, 2), devices=self.devices)
        return True

    def _next_job(self) -> _Job | None:
        min_gap = 1.0 / self.cfg.vlm.max_rate_hz
        with self._cond:
            while self._job is None and not self._stop.is_set():
                self._cond.wait(0.5)
            if self._stop.is_set():
                return None
        last = self._last_start
        if last is not None:
            wait = last + min_gap - self._clock()
            if wait > 0 and self._stop.wait(wait):
                return None
        with self._cond:
            job, self._job = self._job, None  # the newest offer, taken after the rate wait
            if job is not None:
                self._busy_since = self._clock()
                self._last_start = self._busy_since
                key = job.hand.track_id
                if key in self._offered_at:  # else its track went while the job waited
                    self._decided_landmarks[key] = np.array(job.hand.landmarks, copy=True)
                    self._last_decided_at[key] = self._busy_since
        return job

    def _decide(self, job: _Job) -> None:
        hand, rt = job.hand, self._runtime
        if rt is None:  # stopped between taking the job and starting it
            return
        try:
            crop = hand_crop(job.frame.image, hand.bbox, self.cfg.vlm.crop_margin)
            result, timings = rt.classify(crop)
        except RemoteError as e:  # the server, not the runtime: keep it and wait for the server
            with self._cond:
                self._busy_since = None
                self._answers.clear()
                self._decided_landmarks.clear()
            if not self._stop.is_set():
                self._fail(f"VLM server: {e}", type(e).__name__)
                self._await_server(rt)
            return
        except Exception as e:  # a runtime fault: reload after backoff, landmarks meanwhile
            with self._cond:
                self._busy_since = None
                self._answers.clear()
                self._decided_landmarks.clear()
            self._runtime = None
            try:
                rt.close()
            except Exception:  # noqa: BLE001 - the runtime is being discarded anyway
                pass
            if self._stop.is_set():  # shutting down: not a fault worth reporting
                return
            self._fail(f"VLM inference failed: {_reason(e)}")
            self._stop.wait(self.cfg.vlm.backoff_initial_s)
            return
        latency = timings.total_s
        self.last_latency_s = latency
        self.recent_latencies_s.append(latency)
        with self._cond:
            self._busy_since = None
            self.counts["decisions"] += 1
            if latency > self.cfg.vlm.timeout_s:
                self.counts["slow"] += 1
                self._decided_landmarks.pop(hand.track_id, None)
                if self._state == "ok":
                    self._state = "slow"
                    log.warning("vlm too slow: landmarks only until it is fast again",
                                latency_s=round(latency, 3), timeout_s=self.cfg.vlm.timeout_s)
                return
            if self._state == "slow":
                self._state = "ok"
                log.info("vlm fast again", latency_s=round(latency, 3))
            if hand.track_id in self._offered_at:  # else gone while it was being decided
                self._answers[hand.track_id] = VlmAnswer(
                    hand.track_id, result.label, result.probability, job.frame.t, latency
                )

    def _await_server(self, rt) -> None:
        """Ask the server again after a doubling wait until it answers as before (or we stop);
        the local part of the runtime stays loaded meanwhile."""
        backoff = self.cfg.vlm.backoff_initial_s
        while not self._stop.wait(backoff):
            try:
                rt.probe()
            except Exception as e:  # noqa: BLE001 - whatever the server answers, keep waiting
                self._fail(f"VLM server: {_reason(e)}", type(e).__name__)
                backoff = min(backoff * 2, self.cfg.vlm.backoff_max_s)
                continue
            with self._cond:
                self._state = "ok"
                self._error = None
            log.info("vlm server back", server=self.cfg.vlm.remote.url)
            return

    def _fail(self, message: str, kind: str = "") -> None:
        """Enter (or stay in) the failed state; logged when the failure is new. `kind` groups
        messages that are one failure in different words (a server going away is "reset by
        peer", then "refused" while it is down): a new wording of the same kind is not logged."""
        with self._cond:
            same = self._state == "failed" and (
                self._error == message or (kind and kind == self._failure_kind))
            first = not same
            self._failure_kind = kind
            self._state = "failed"
            self._error = message
            self.counts["failures"] += 1
        if first:
            log.error("vlm unavailable: landmarks only; retrying with backoff", error=message)


def _reason(e: BaseException) -> str:
    # OpenVINO prefixes its messages with source locations over several lines; the reason is last.
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Exception from src/"):
        return lines[-1]
    return " ".join(lines) or type(e).__name__


def _with_t(a: VlmAnswer, t: float) -> VlmAnswer:
    return VlmAnswer(a.track, a.label, a.probability, t, a.latency)


#: Gestures that only the VLM can recognise, from the enabled list.
def vlm_only_gestures(cfg: Config) -> frozenset[str]:
    return frozenset(g for g in cfg.gestures.enabled
                     if g not in LANDMARK_GESTURES and g not in MOTION_GESTURES)
