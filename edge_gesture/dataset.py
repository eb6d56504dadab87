"""Saving the frames behind events (and a sample of frames without one) for a dataset.

Layout, so `edge-gesture eval DIR/frames` runs on it as it is (labels are the daemon's own
decisions, to be reviewed before training on them):

    DIR/frames/<label>/<stem>.jpg    the whole frame
    DIR/frames/<label>/<stem>.json   event, hands (landmarks, bbox), frame index and time
    DIR/crops/<label>/<stem>-<track>-<hand>.jpg   each hand's padded crop (what the VLM would see)

`<track>` is the hand's track id, so two hands with one left/right label (two people's right
hands) get a crop each.

`<label>` is the gesture for events and `none` for sampled frames without one (as in `eval`,
where `none` means "no event expected"; the sidecar's `hands` tells whether a hand was in
view). Writing happens on a thread of its own so a slow disk never stalls the frame loop; when
it falls behind, samples are dropped and counted. Only files named like ours are ever deleted:
pointing `dir` at a folder with other files is safe.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import structlog

from edge_gesture.config import Config, DatasetConfig

log = structlog.get_logger("dataset")

_OURS = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-\d{6}(-(\d+-)?(left|right))?\.(jpg|json)$")
_CROP_PAD = 0.2  # share of the box size added on each side: fingertips near the edge stay in


def dataset_dir(cfg: Config) -> Path:
    return Path(cfg.dataset.dir) if cfg.dataset.dir else cfg.service.state_path() / "dataset"


def padded_crop(image: np.ndarray, bbox: Sequence[int], pad: float = _CROP_PAD) -> np.ndarray:
    x0, y0, x1, y1 = bbox
    h, w = image.shape[:2]
    px, py = int((x1 - x0) * pad), int((y1 - y0) * pad)
    return image[max(0, y0 - py):min(h, y1 + py), max(0, x0 - px):min(w, x1 + px)]


@dataclass(frozen=True)
class _Sample:
    label: str
    reason: str  # "event" or "sample"
    image: np.ndarray
    hands: tuple
    events: tuple
    frame_index: int
    wall: float


class DatasetWriter:
    """Decides per frame what to keep, writes on its own thread, keeps the folder in bounds."""

    def __init__(self, cfg: DatasetConfig, folder: Path, *, rng: random.Random | None = None,
                 clock=time.time, queue_size: int = 16):
        self.cfg = cfg
        self.folder = Path(folder)
        self._rng = rng or random.Random()
        self._clock = clock
        self._queue: queue.Queue[_Sample | None] = queue.Queue(queue_size)
        self._seq = 0
        self._files: dict[Path, tuple[float, int]] = {}  # path -> (mtime, size)
        self._bytes = 0
        self.saved = 0
        self.dropped = 0
        self.deleted = 0
        self._warned = False
        self.folder.mkdir(parents=True, exist_ok=True)  # fails early on a read-only path
        self._scan()
        self.enforce_limits()
        self._thread = threading.Thread(target=self._run, name="dataset", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ frame-loop side

    def offer(self, frame, hands: Sequence, events: Sequence, active: bool = False) -> str | None:
        """Consider one processed frame; returns the label it was queued under, or None.

        `active` says a gesture is currently held: such frames are neither events nor negatives.
        """
        if events:
            label, reason = events[0].gesture, "event"
        elif active or not self._rng.random() < self.cfg.no_gesture_sample_rate:
            return None
        else:
            label, reason = "none", "sample"
        sample = _Sample(label, reason, frame.image, tuple(hands), tuple(events), frame.index,
                         frame.wall)
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            self.dropped += 1
            if not self._warned:
                log.warning("dataset writer behind; dropping samples", folder=str(self.folder))
                self._warned = True
            return None
        return label

    def frame_done(self, report) -> None:
        """As a frame observer (edge_gesture/observers.py): offer each processed frame."""
        self.offer(report.frame, report.hands, report.events, active=any(report.state.values()))

    def tick(self, processed: bool) -> None:
        pass

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything offered so far is on disk; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued and end the writer, within `timeout` s in all (the daemon's
        shutdown has a deadline); what is not written by then is dropped."""
        end = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(max(0.0, end - time.monotonic()))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            sample = self._queue.get()
            try:
                if sample is None:
                    return
                self._write(sample)
                self.enforce_limits()
            except OSError as e:  # disk full, folder removed: say so once, keep the daemon going
                if not self._warned:
                    log.error("cannot save dataset sample", folder=str(self.folder), error=str(e))
                    self._warned = True
            finally:
                self._queue.task_done()

    def _write(self, s: _Sample) -> None:
        now = self._clock()
        self._seq = (self._seq + 1) % 1_000_000
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        stem = f"{stamp}-{self._seq:06d}"
        params = [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality]
        frames = self.folder / "frames" / s.label
        frames.mkdir(parents=True, exist_ok=True)
        self._put(frames / f"{stem}.jpg", _jpeg(s.image, params))
        meta = {
            "label": s.label,
            "reason": s.reason,
            "frame_index": s.frame_index,
            "captured_at": s.wall,
            "events": [{"gesture": e.gesture, "hand": e.hand, "confidence": round(e.confidence, 4),
                        "source": e.source} for e in s.events],
            "hands": [{"handedness": h.handedness, "track": h.track_id,
                       "score": round(float(h.score), 4),
                       "bbox": [int(v) for v in h.bbox],
                       "landmarks": np.round(h.landmarks, 5).tolist()} for h in s.hands],
        }
        self._put(frames / f"{stem}.json", json.dumps(meta).encode())
        if s.hands:
            crops = self.folder / "crops" / s.label
            crops.mkdir(parents=True, exist_ok=True)
            for h in s.hands:
                crop = padded_crop(s.image, h.bbox)
                if crop.size:
                    self._put(crops / f"{stem}-{h.track_id}-{h.handedness}.jpg", _jpeg(crop, params))
        self.saved += 1

    def _put(self, path: Path, data: bytes) -> None:
        tmp = path.with_name("." + path.name + ".tmp")  # a crash never leaves a half image
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._track(path, self._clock(), len(data))

    def _track(self, path: Path, mtime: float, size: int) -> None:
        old = self._files.get(path)
        if old:
            self._bytes -= old[1]
        self._files[path] = (mtime, size)
        self._bytes += size

    def _scan(self) -> None:
        for root, _dirs, names in os.walk(self.folder):
            for name in names:
                if _OURS.match(name):
                    p = Path(root) / name
                    try:
                        st = p.stat()
                    except OSError:
                        continue
                    self._track(p, st.st_mtime, st.st_size)

    def enforce_limits(self) -> int:
        """Delete our files past the age limit, then the oldest until under the quota."""
        quota = int(self.cfg.quota_mb * 1024 * 1024)
        max_age = self.cfg.max_age_days * 86400
        now = self._clock()
        victims = []
        over = self._bytes - quota
        for path, (mtime, size) in sorted(self._files.items(), key=lambda kv: (kv[1][0], kv[0])):
            if max_age and now - mtime > max_age:
                victims.append(path)
                over -= size
            elif over > 0:
                victims.append(path)
                over -= size
            else:
                break
        for path in victims:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            self._bytes -= self._files.pop(path)[1]
            self.deleted += 1
        return len(victims)


def _jpeg(image: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, params)
    if not ok:
        raise OSError("JPEG encoding failed")
    return buf.tobytes()
