"""What running as a service adds to the frame loop: systemd readiness, status and watchdog,
the health/metrics endpoint, dataset saving, and SIGHUP config reload.

The daemon owns the pipeline; this object watches it through a handful of calls from the frame
loop (`started`, `frame_done`, `tick`, `stopping`, `close`), all on the frame-loop thread, so
nothing here needs a lock. Signal handlers only set flags (`request_reload`).

Watchdog policy: WATCHDOG=1 goes out from the frame loop while frames are processed, and while
the capture thread is knowingly reopening a lost camera (a reported, recoverable wait that a
restart would not shorten). A loop stuck in inference, a capture thread stuck inside a driver
call, or a file source that ended all stop the pings, and systemd restarts the service.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from edge_gesture.config import ConfigError, load_config
from edge_gesture.errors import StartupError
from edge_gesture.health import HealthServer, PipelineView, problems
from edge_gesture.metrics import Metrics
from edge_gesture.reload import ReloadPlan, plan_reload
from edge_gesture.sdnotify import FrameWatchdog, Notifier

if TYPE_CHECKING:
    from edge_gesture.daemon import Daemon

log = structlog.get_logger("service")

STATUS_EVERY_S = 5.0


def _readiness_told(under_systemd: bool, sent: bool) -> str:
    if not under_systemd:
        return "not started by systemd (NOTIFY_SOCKET unset): no readiness to report"
    return "READY=1 sent" if sent else "READY=1 not delivered (see the sd_notify warning)"


class ServiceHooks:
    def __init__(self, daemon: Daemon, config_path: Path | None = None,
                 source_override: str | None = None, notifier: Notifier | None = None):
        self.daemon = daemon
        self.config_path = config_path
        self.source_override = source_override
        self.notifier = notifier or Notifier()
        self.watchdog = FrameWatchdog(self.notifier)
        self.metrics = Metrics()
        self.health: HealthServer | None = None
        self.dataset = None
        self.started_at = time.monotonic()
        self.last_frame_at: float | None = None
        self.ready = False
        self.events = 0
        # A plain flag, not a threading.Event: the handler runs on the main thread between two
        # bytecodes, possibly inside Event.clear() holding the Event's lock, and set() would then
        # wait for that lock forever.
        self._reload_requested = False
        self._next_status = 0.0
        self._last_status = ""
        self._bind_metrics()
        if getattr(daemon, "vlm", None) is not None:
            self.notifier.status("hand models loaded; loading the VLM (a first GPU/NPU compile "
                                 "can take a minute)")
        else:
            self.notifier.status("hand models loaded; starting capture and MQTT")

    # ------------------------------------------------------------ signal side

    def request_reload(self) -> None:
        self._reload_requested = True

    # ------------------------------------------------------------ frame-loop side

    def started(self) -> None:
        """Capture and publisher are started: serve health, open the dataset folder."""
        cfg = self.daemon.cfg
        if cfg.health.enabled:
            try:
                self.health = HealthServer(cfg.health.host, cfg.health.port, self.check,
                                           self.metrics.exposition).start()
            except OSError as e:
                # The daemon's job is gestures; a taken port costs the endpoint, not the service.
                log.error("health endpoint not started", setting="health.port",
                          address=f"{cfg.health.host}:{cfg.health.port}", error=e.strerror or str(e))
        if cfg.dataset.enabled:
            from edge_gesture.dataset import DatasetWriter, dataset_dir

            folder = dataset_dir(cfg)
            try:
                self.dataset = DatasetWriter(cfg.dataset, folder)
                log.info("saving dataset samples", folder=str(folder))
            except OSError as e:
                log.error("dataset saving off", setting="dataset.dir", folder=str(folder),
                          error=e.strerror or str(e))
        self._set_status(f"waiting for the first frame from {self.daemon.capture.source}")

    def frame_done(self, frame, result, timings: dict[str, float], end_to_end: float) -> None:
        self.last_frame_at = time.monotonic()
        self.metrics.observe_frame(timings, end_to_end)
        for ev in result.events:
            self.events += 1
            self.metrics.count_event(ev.gesture, ev.hand, ev.source)
        if self.dataset is not None:
            active = any(self.daemon.pipeline.decider.state().values())
            self.dataset.offer(frame, result.hands, result.events, active=active)

    def tick(self, processed: bool) -> None:
        """Once per frame-loop turn, whether or not a frame came."""
        now = time.monotonic()
        if processed and not self.ready:
            self.ready = True
            sent = self.notifier.ready(self._summary())
            self._next_status = now + STATUS_EVERY_S
            log.info("ready", systemd=_readiness_told(self.notifier.enabled, sent))
        if processed or self._capture_reopening():
            self.watchdog.progress()
        if self._reload_requested:
            self._reload_requested = False
            self.reload()
        if now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            self._set_status(self._summary())

    def stopping(self, reason: str = "") -> None:
        self.notifier.stopping(f"stopping{': ' + reason if reason else ''}; publishing offline")

    def close(self, timeout: float = 1.0) -> None:
        """Stop the health server and the dataset writer; the writer gets what is left of
        `timeout` (samples still queued then are dropped: shutdown has a deadline)."""
        end = time.monotonic() + timeout
        if self.health is not None:
            self.health.stop()
        if self.dataset is not None:
            self.dataset.close(timeout=max(0.0, end - time.monotonic()))
        self.notifier.close()

    # ------------------------------------------------------------ health and status

    def view(self) -> PipelineView:
        d = self.daemon
        worker = getattr(d, "vlm", None)  # absent or None while [vlm] is off
        vlm = worker.status() if worker is not None else {}
        return PipelineView(
            now=time.monotonic(), last_frame_at=self.last_frame_at, started_at=self.started_at,
            source_connected=d.capture.connected, source_ended=d.capture.ended,
            source_error=d.capture.error, publisher_connected=d.publisher.connected,
            stale_after_s=d.cfg.health.stale_after_s, vlm_state=vlm.get("state"),
            vlm_error=vlm.get("error"))

    def check(self) -> list[str]:
        return problems(self.view())

    def _capture_reopening(self) -> bool:
        c = self.daemon.capture
        return c.is_alive() and not c.connected and not c.ended and c.error is None

    def _summary(self) -> str:
        found = self.check()
        if found:
            return "; ".join(found)
        frames = self.daemon.stats.frames_processed
        return (f"processing {self.daemon.capture.source}; MQTT connected; "
                f"{frames} frames, {self.events} events")

    def _set_status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.notifier.status(text)

    def _bind_metrics(self) -> None:
        d = self.daemon

        def outbox() -> int:
            return d.publisher.counters()["outbox"]

        def dropped() -> int:
            c = d.publisher.counters()
            return c["dropped_stale"] + c["dropped_full"]

        def vlm():
            worker = getattr(d, "vlm", None)  # absent or None while [vlm] is off
            return worker.status() if worker is not None else None

        # Lambdas over `d`, not bound methods: a reload may replace the publisher.
        self.metrics.bind(
            frames_read=lambda: d.capture.frames_read, frames_dropped=lambda: d.slot.dropped,
            source_connected=lambda: d.capture.connected,
            mqtt_connected=lambda: d.publisher.connected, mqtt_outbox=outbox,
            mqtt_dropped=dropped, vlm=vlm)

    # ------------------------------------------------------------ SIGHUP

    def reload(self) -> ReloadPlan | None:
        """Re-read the config file and apply what can change live; a reload that cannot be
        applied whole (a bad file, a missing password file or certificate) changes nothing."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: the daemon was not started from a config file")
            return None
        self.notifier.reloading()
        self.notifier.status(f"reloading {self.config_path}")
        running = self.daemon.cfg
        try:
            new = load_config(self.config_path)
            if self.source_override is not None:
                new = new.model_copy(update={"capture": new.capture.model_copy(
                    update={"source": running.capture.source})})
            plan = plan_reload(running, new)
        except ConfigError as e:
            return self._refuse("bad config", str(e))
        try:
            # Everything that can fail is built before anything running is touched.
            publisher = self._new_publisher(plan.config) if plan.touches("mqtt", "device_id") \
                else None
        except StartupError as e:  # its message names the setting and the file
            return self._refuse("cannot use the new settings", str(e))
        except Exception as e:  # noqa: BLE001 - a reload must never end the daemon
            return self._refuse("cannot use the new [mqtt] settings",
                                f"mqtt: {type(e).__name__}: {e}")
        self._apply(plan, publisher)
        self.metrics.reloads.labels("applied").inc()
        log.info("config reloaded", applied=list(plan.applied),
                 needs_restart=list(plan.needs_restart))
        if plan.needs_restart or plan.notes:
            log.warning("some changes need a restart: systemctl restart edge-gesture",
                        fields=list(plan.needs_restart), notes=list(plan.notes))
        self._after_reload(self._summary())
        return plan

    def _refuse(self, why: str, error: str) -> None:
        log.error("config reload refused; the running settings stay", error=error)
        self.metrics.reloads.labels("refused").inc()
        self._after_reload(f"reload refused ({why}, see the log); {self._summary()}")
        return None

    def _after_reload(self, status: str) -> None:
        # READY=1 ends the reload for systemd; before the first frame it would claim readiness.
        if self.ready:
            self.notifier.ready(status)
        else:
            self.notifier.status(status)
        self._last_status = status

    def _new_publisher(self, cfg):
        # Same class as the running one; its constructor reads the password file and the TLS
        # files, and raises StartupError naming the one it cannot use.
        return type(self.daemon.publisher)(cfg)

    def _apply(self, plan: ReloadPlan, publisher) -> None:
        d, cfg = self.daemon, plan.config
        if plan.touches("logging"):
            from edge_gesture.logsetup import configure_logging

            configure_logging(cfg.logging.level, cfg.logging.format)
        state_changed = False
        if plan.touches("gestures", "decide"):
            state_changed = d.pipeline.reconfigure(cfg)
        d.cfg = cfg
        if publisher is not None:
            self._replace_publisher(publisher)  # announces the current state itself
        elif state_changed:
            # A gesture the new list no longer has ended now: subscribers must hear it now,
            # not whenever a later frame happens to change the state again.
            d.publisher.publish_state(d.pipeline.decider.state())

    def _replace_publisher(self, new) -> None:
        # The last will and the topics are fixed at connect time, so new topics or a new broker
        # mean a new connection: the old one says `offline` on its topics, the new one `online`.
        old = self.daemon.publisher
        old.stop(timeout=2.0)
        new.start()
        self.daemon.publisher = new
        new.publish_state(self.daemon.pipeline.decider.state())
        log.info("publisher restarted for new MQTT settings", topic_root=new.cfg.topic_root)
