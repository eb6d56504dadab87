"""What running as a service adds to the frame loop: systemd readiness, status and watchdog,
dataset saving, and SIGHUP config reload (the web server with /healthz and /metrics is
web/, wired in daemon.py).

`ServiceHooks` is a frame observer (edge_gesture/observers.py): every call comes from the frame
loop's thread, so nothing here needs a lock. Signal handlers only set flags (`request_reload`).
It knows the daemon only through a `DaemonLink`: read-only views and the reload's two steps,
built by daemon.py, which owns the pipeline and all the wiring.

Watchdog policy: WATCHDOG=1 goes out from the frame loop while frames are processed, and while
the capture thread is knowingly reopening a lost camera (a reported, recoverable wait that a
restart would not shorten). A loop stuck in inference, a capture thread stuck inside a driver
call, or a file source that ended all stop the pings, and systemd restarts the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from edge_gesture.config import Config, ConfigError, load_config
from edge_gesture.errors import StartupError
from edge_gesture.health import PipelineView, problems
from edge_gesture.metrics import Metrics
from edge_gesture.observers import FrameObserver
from edge_gesture.reload import ReloadPlan, plan_reload
from edge_gesture.sdnotify import FrameWatchdog, Notifier
from edge_gesture.stats import PipelineStats

log = structlog.get_logger("service")

STATUS_EVERY_S = 5.0


def _readiness_told(under_systemd: bool, sent: bool) -> str:
    if not under_systemd:
        return "not started by systemd (NOTIFY_SOCKET unset): no readiness to report"
    return "READY=1 sent" if sent else "READY=1 not delivered (see the sd_notify warning)"


@dataclass(frozen=True)
class DaemonLink:
    """All the service side may know of the running daemon. Callables, read when needed: a
    reload replaces the config and the publisher."""

    config: Callable[[], Config]  # the running config
    view: Callable[[], PipelineView]  # what /healthz judges, now (any thread)
    source: Callable[[], str]  # the video source, as the user named it
    capture_reopening: Callable[[], bool]  # a lost camera or stream is being reopened
    #: Reload, step 1: a publisher for the new settings, built, not started. Raises
    #: errors.StartupError naming a password file or certificate it cannot use.
    new_publisher: Callable[[Config], Any]
    #: Reload, step 2: apply a plan (and swap in step 1's publisher, or None to keep the
    #: running one); it cannot be refused any more.
    apply_config: Callable[[ReloadPlan, Any], None]


class ServiceHooks(FrameObserver):
    def __init__(self, link: DaemonLink, stats: PipelineStats, metrics: Metrics,
                 config_path: Path | None = None, source_override: str | None = None,
                 notifier: Notifier | None = None, vlm_loading: bool = False):
        """`stats`: the daemon's figures (frames and events for the status line); `metrics`
        served at /metrics and counting reloads; `vlm_loading`: the VLM loads meanwhile."""
        self.link = link
        self.stats = stats
        self.metrics = metrics
        self.config_path = config_path
        self.source_override = source_override
        self.notifier = notifier or Notifier()
        self.watchdog = FrameWatchdog(self.notifier)
        self.ready = False
        # A plain flag, not a threading.Event: the handler runs on the main thread between two
        # bytecodes, possibly inside Event.clear() holding the Event's lock, and set() would then
        # wait for that lock forever.
        self._reload_requested = False
        self._next_status = 0.0
        self._last_status = ""
        if vlm_loading:
            self.notifier.status("hand models loaded; loading the VLM (a first GPU/NPU compile "
                                 "can take a minute)")
        else:
            self.notifier.status("hand models loaded; starting capture and MQTT")

    # ------------------------------------------------------------ signal side

    def request_reload(self) -> None:
        self._reload_requested = True

    # ------------------------------------------------------------ frame-loop side

    def started(self):
        """Capture and publisher are started: open the dataset folder. Returns the dataset
        writer (a frame observer) when [dataset] is on and its folder usable."""
        cfg = self.link.config()
        dataset = None
        if cfg.dataset.enabled:
            from edge_gesture.dataset import DatasetWriter, dataset_dir

            folder = dataset_dir(cfg)
            try:
                dataset = DatasetWriter(cfg.dataset, folder)
                log.info("saving dataset samples", folder=str(folder))
            except OSError as e:
                log.error("dataset saving off", setting="dataset.dir", folder=str(folder),
                          error=e.strerror or str(e))
        self._set_status(f"waiting for the first frame from {self.link.source()}")
        return dataset

    def tick(self, processed: bool) -> None:
        """Once per frame-loop turn, whether or not a frame came."""
        now = time.monotonic()
        if processed and not self.ready:
            self.ready = True
            sent = self.notifier.ready(self._summary())
            self._next_status = now + STATUS_EVERY_S
            log.info("ready", systemd=_readiness_told(self.notifier.enabled, sent))
        if processed or self.link.capture_reopening():
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
        """No more notifications after this."""
        self.notifier.close()

    # ------------------------------------------------------------ health and status

    def check(self) -> list[str]:
        return problems(self.link.view())

    def _summary(self) -> str:
        found = self.check()
        if found:
            return "; ".join(found)
        return (f"processing {self.link.source()}; MQTT connected; "
                f"{self.stats.frames_processed} frames, {self.stats.events} events")

    def _set_status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.notifier.status(text)

    # ------------------------------------------------------------ SIGHUP

    def reload(self) -> ReloadPlan | None:
        """Re-read the config file and apply what can change live; a reload that cannot be
        applied whole (a bad file, a missing password file or certificate) changes nothing."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: the daemon was not started from a config file")
            return None
        self.notifier.reloading()
        self.notifier.status(f"reloading {self.config_path}")
        running = self.link.config()
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
            publisher = self.link.new_publisher(plan.config) \
                if plan.touches("mqtt", "device_id") else None
        except StartupError as e:  # its message names the setting and the file
            return self._refuse("cannot use the new settings", str(e))
        except Exception as e:  # noqa: BLE001 - a reload must never end the daemon
            return self._refuse("cannot use the new [mqtt] settings",
                                f"mqtt: {type(e).__name__}: {e}")
        self.link.apply_config(plan, publisher)
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
