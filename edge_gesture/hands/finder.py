"""The OpenVINO hand stage: find new hands over the full frame, follow found ones from their landmarks.

Per frame:
1. every hand found before is read again by the landmark model in the square around its last
   landmarks (MediaPipe's tracking), at the frame's full resolution: one small inference per
   hand, whatever the camera's size; a hand whose presence score falls below
   `hands.min_tracking_confidence` is let go;
2. while fewer than `hands.max_num_hands` hands are followed, the palm detector looks at the next
   few squares of the search cycle (`search.py`); while some are followed, only every
   `hands.search_interval_frames`-th frame and at most `hands.sweep_squares_per_frame` squares:
   where the picture changed outside the followed hands (a second hand being raised), then one
   square of the sweep (a second hand already still), so a followed hand does not pay for a
   full search every frame;
3. each new palm becomes a hand region, which the landmark model confirms (presence) and reads.

Stills (`static_images=True`, photos) search the whole plan at once and do not follow.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from edge_gesture.config import HandsConfig
from edge_gesture.errors import StartupError
from edge_gesture.hands import Hand, box_in_frame, check_frame
from edge_gesture.hands.geometry import Region, overlap_of_smaller
from edge_gesture.hands.int8 import int8_landmark_model
from edge_gesture.hands.landmarks import HandReading, read_hands
from edge_gesture.hands.models import compile_hand_model
from edge_gesture.hands.palm import palms_in_square, weighted_nms
from edge_gesture.hands.search import SearchPlan

log = logging.getLogger(__name__)

# Two readings are one hand read twice (two squares converged, or a second palm found on the
# folded fingers of a fist) when most of the smaller one's box lies inside the other's.
SAME_HAND_OVERLAP = 0.5
# A new hand must be mostly in the picture. At the frame's edge the landmark model completes
# half-seen shapes into confident hands (a beige box cut by the edge read as an open palm), and
# a hand that really enters from the edge is found a few frames later, once it is in view. A
# followed hand may leave the picture gradually.
MIN_NEW_HAND_INSIDE = 0.8
# Frames after a followed hand is lost during which the search runs at its full budget, sweeping
# rather than waiting for motion: a hand is most often lost mid-swipe, blurred, and is found
# again a few frames on; the motion map misses it when it moves over something of its own
# colour, or when a camera repeats frames.
RECOVER_FRAMES = 8
# ...and a hand found then near where one was lost (within RECOVER_REACH of the lost hand's
# region sides) needs only this presence, not `min_new_hand_presence`: blurred, it scores
# 0.8-0.9, and a hand where a hand just was is that hand far more often than a face or a fist's
# knuckles (what the stricter threshold keeps out).
RECOVER_PRESENCE = 0.8
RECOVER_REACH = 2.0
# Reads of a new hand from its own landmarks of which one must reach `min_new_hand_presence`.
RE_READS = 2
# Palms read by the landmark model per hand still wanted, best palm score first, while none of
# them is a hand. A room has palm-like things the palm detector scores above a small real hand
# (a poster's corner 0.94, a chair's arm 0.83, the hand 0.80), and so do hands mostly out of the
# picture; the landmark model turns those down or they are not new hands. Reading only as many
# palms as hands wanted let them take a small hand's place until it moved or came closer.
PALMS_READ_PER_HAND = 3


def _share_inside(points: np.ndarray, width: int, height: int) -> float:
    xy = points[:, :2]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    return float(inside.mean())


def _box(points: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _inside(point: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


class OpenVinoHandFinder:
    """Hands in BGR frames with MediaPipe's models on OpenVINO. One per thread."""

    def __init__(self, cfg: HandsConfig, *, static_images: bool = False, cache_dir: str | None = None,
                 core=None):
        import openvino as ov

        from edge_gesture.vlm.devices import DeviceError, resolve

        self.cfg = cfg
        self.static_images = static_images
        core = core or ov.Core()
        try:
            device = resolve(cfg.device, list(core.available_devices), field="hands.device",
                             fallback=cfg.fallback_device, fallback_field="hands.fallback_device")
        except DeviceError as e:  # the message names hands.device and lists the devices present
            raise StartupError(str(e)) from None
        self.device = device
        # A CPU compile of these small models takes milliseconds; a GPU/NPU one is worth caching.
        cache = None if device.upper().startswith("CPU") else cache_dir
        self._palm = compile_hand_model(core, "palm_detection", cfg.model_complexity, device, cache,
                                        cfg.threads)
        int8 = int8_landmark_model(cfg.int8_models, cfg.model_complexity) if cfg.int8_models else None
        self._landmarks = compile_hand_model(core, "hand_landmark", cfg.model_complexity, device,
                                             cache, cfg.threads, path=int8)
        #: The squares searched in the last frame, for the live view and tests.
        self.last_search: list[Region] = []
        self.forget()

    def find(self, frame: np.ndarray) -> list[HandReading]:
        """The hands in one frame (8-bit BGR), at most `max_num_hands`, as landmark readings."""
        height, width = frame.shape[:2]
        if self._plan is None or self._plan.size != (width, height):
            # Stills and the first frame of a scene have no size before them to change from.
            if self._plan is not None and not self.static_images:
                log.warning("frame size changed from %dx%d to %dx%d; searching anew",
                            *self._plan.size, width, height)
            self._plan = SearchPlan(width, height, self.cfg.min_hand_width,
                                    self.cfg.search_squares_per_frame, self.cfg.sweep_squares_per_frame)
            self._followed = []
        cfg = self.cfg
        self._frame_no += 1

        readings = [] if self.static_images else [
            r for r in read_hands(self._landmarks, frame, self._followed)
            if r.presence >= cfg.min_tracking_confidence]
        readings = self._distinct(readings)
        if len(readings) < len(self._followed):
            self._recover_until = self._frame_no + RECOVER_FRAMES
            self._recover_hands = len(self._followed)
            kept = [r.region for r in readings]
            self._lost = [g for g in self._followed if g not in kept]

        self.last_search = []
        if not self.static_images:
            self._plan.look(frame, [r.region for r in readings])
        # Until the hands lost are back (or another took their place): a cut to a new picture
        # loses the old hand and finds the new one in the same frame, and needs no more.
        recovering = self._frame_no <= self._recover_until and len(readings) < self._recover_hands
        following = bool(readings) and self._plan.first_pass_done and not recovering
        if len(readings) < cfg.max_num_hands and self._search_due(following):
            wanted = 0  # search every square given
            if self.static_images:
                squares = self._plan.cycle
            elif recovering:
                # Where the hands were lost first, at their scale, then the sweep; and no
                # further than the hands lost: the rest of the budget is for a later frame.
                budget = cfg.search_squares_per_frame
                squares = self._plan.next_squares(budget, sweep=budget, near=self._lost)
                wanted = self._recover_hands - len(readings)
            elif following:
                # A second hand arrives moving: where the picture changed outside the hands
                # followed first, and one square of the sweep for a hand that is already still.
                squares = self._plan.next_squares(cfg.sweep_squares_per_frame, sweep=1)
            else:
                squares = self._plan.next_squares(cfg.search_squares_per_frame)
            readings += self._new_hands(frame, squares, readings, self._lost if recovering else [],
                                        wanted)

        readings = readings[:cfg.max_num_hands]
        self._followed = [] if self.static_images else [r.next_region() for r in readings]
        return readings

    @property
    def landmark_input_side(self) -> int:
        """The side of the square the landmark model reads a hand from (224)."""
        return self._landmarks.side

    @property
    def frames_to_settle(self) -> int:
        """Frames of unchanged hands after which a still picture shows nothing new: once every
        square has been searched, searching the same picture again finds the same palms."""
        if self._plan is None or not self._plan.first_pass_done:
            return (self._plan.frames_per_pass if self._plan else 1) + 2
        return 2

    def _search_due(self, following: bool) -> bool:
        return not following or self._frame_no % max(1, self.cfg.search_interval_frames) == 0

    def _new_hands(self, frame: np.ndarray, squares: list[Region], known: list[HandReading],
                   lost: list[Region] = (), wanted: int = 0) -> list[HandReading]:
        """New hands in `squares`, searched in order. With `wanted`, the search stops at the
        square after which that many new hands are confirmed, and gives the rest back to the
        plan; without, every square is searched."""
        cfg = self.cfg
        boxes = [_box(r.points) for r in known]
        strict = max(cfg.min_new_hand_presence, cfg.min_tracking_confidence)
        near_lost = max(min(RECOVER_PRESENCE, strict), cfg.min_tracking_confidence)
        height, width = frame.shape[:2]
        read: dict[Region, HandReading] = {}  # a palm's reading, kept while later squares add more

        def threshold(r: HandReading) -> float:
            close = any(math.hypot(r.region.cx - g.cx, r.region.cy - g.cy) <= RECOVER_REACH * g.size
                        for g in lost)
            return near_lost if close else strict

        def confirmed(palms: list, room: int) -> list[HandReading]:
            """Up to `room` new hands from the palms, best first. The first `room` palms are read
            together and of two readings of one hand the surer kept; only if none of them is a
            hand are further palms read, one by one, at full strictness, until one is, skipping
            a palm inside a hand already read (a big hand's fingers give a second palm). Further
            down the list are the faces of the people whose hands were found (a face reads 0.94
            from its palm, and again): a second hand is left to the next search, where it is
            among the best palms once it moves."""
            def read_palms(some: list) -> list[HandReading]:
                regions = [p.hand_region() for p in some]
                for r in read_hands(self._landmarks, frame, [g for g in regions if g not in read]):
                    read[r.region] = r
                return [read[g] for g in regions]

            def new_hand(r: HandReading) -> bool:
                return _share_inside(r.points, width, height) >= MIN_NEW_HAND_INSIDE

            first = read_palms(palms[:room])
            sure = [_box(r.points) for r in first if r.presence >= threshold(r)]
            hands = self._distinct(self._read_again(
                frame, [r for r in first if r.presence >= threshold(r) and new_hand(r)], strict,
                threshold), known)
            reads = len(first)
            for palm in palms[room:]:
                if hands or reads >= PALMS_READ_PER_HAND * room:
                    break
                if any(_inside(palm.keypoints[2], b) for b in sure):
                    continue
                r, = read_palms([palm])
                reads += 1
                if r.presence < strict:
                    continue
                sure.append(_box(r.points))
                if new_hand(r) and self._read_again(frame, [r], strict, lambda _r: strict):
                    hands += self._distinct([r], [*known, *hands])
            return hands

        found: list = []
        hands: list[HandReading] = []
        searched = 0
        for square in squares:
            found += palms_in_square(self._palm, frame, square, cfg.min_detection_confidence)
            searched += 1
            last = searched == len(squares)
            if not (wanted or last):
                continue
            palms = [p for p in weighted_nms(found) if not any(_inside(p.keypoints[2], b) for b in boxes)]
            if last or len(palms) >= wanted:
                hands = confirmed(palms, cfg.max_num_hands - len(known))
                if last or len(hands) >= wanted:
                    break
        self.last_search = squares[:searched]
        if searched < len(squares):
            self._plan.give_back(squares[searched:])
        return hands

    def _read_again(self, frame: np.ndarray, hands: list[HandReading], strict: float,
                    threshold) -> list[HandReading]:
        """The new hands that read as surely again from their own landmarks as from their palm.

        A palm's square is cut from the detector's box alone; following the hand, every later
        frame is cut from its landmarks. A hand reads about as surely from those (on development
        clips 405 of 408 hands found at full strictness read 0.93 or more again), or does within
        a second read, as a tracked hand settles (a 24-pixel call: 0.97, then 0.89, then 0.99),
        while a palm-like thing read as a hand from the one square its palm gave falls away
        (a shelf of jars: 0.94 from its palm, 0.85 and 0.86 from its landmarks; followed, it is a
        hand for a second). Only hands held to the full threshold are read again: one found where
        a hand was just lost is let in at a lower one, blurred mid-swipe."""
        unsure = [(r, r) for r in hands if threshold(r) >= strict]  # (as found, as last read)
        for _ in range(RE_READS):
            if not unsure:
                break
            again = read_hands(self._landmarks, frame, [last.next_region() for _, last in unsure])
            unsure = [(r, a) for (r, _), a in zip(unsure, again, strict=True) if a.presence < strict]
        dropped = {id(r) for r, _ in unsure}
        return [r for r in hands if id(r) not in dropped]

    @staticmethod
    def _distinct(readings: list[HandReading], known: list[HandReading] = ()) -> list[HandReading]:
        kept: list[HandReading] = []
        boxes = [_box(r.points) for r in known]
        for r in sorted(readings, key=lambda r: r.presence, reverse=True):
            box = _box(r.points)
            if all(overlap_of_smaller(box, b) < SAME_HAND_OVERLAP for b in boxes):
                kept.append(r)
                boxes.append(box)
        return kept

    def forget(self) -> None:
        """Drop the followed hands (a new scene, e.g. the next photo, which may be another size)."""
        self._followed: list[Region] = []
        self._plan: SearchPlan | None = None
        # The search's timetable counts frames: a scene starts it afresh, so a clip gives the same
        # events whatever was read before it.
        self._frame_no = 0
        self._recover_until = 0
        self._recover_hands = 0  # hands followed before the loss
        self._lost: list[Region] = []  # where hands were lost, while recovering

    def close(self) -> None:
        self._palm = self._landmarks = None


class OpenVinoHands:
    """`hands.backend = "openvino"`: the finder's readings as `Hand`s, like `HandTracker` gives."""

    def __init__(self, cfg: HandsConfig, *, static_images: bool = False, cache_dir: str | None = None):
        self.finder = OpenVinoHandFinder(cfg, static_images=static_images, cache_dir=cache_dir)
        # The model's handedness names hands as in a mirrored selfie view (see hands/__init__.py).
        self._left_label_is = "left" if cfg.mirrored else "right"
        self._other = "right" if self._left_label_is == "left" else "left"

    def detect(self, frame_bgr: np.ndarray) -> list[Hand]:
        check_frame(frame_bgr)
        height, width = frame_bgr.shape[:2]
        scale = np.array([width, height, width], np.float32)
        hands = []
        for r in self.finder.find(frame_bgr):
            points = r.points / scale
            selfie_left = r.left_label >= 0.5
            hands.append(Hand(
                landmarks=points.astype(np.float32),
                handedness=self._left_label_is if selfie_left else self._other,
                score=max(r.left_label, 1.0 - r.left_label),
                bbox=box_in_frame(points, width, height),
                frame_size=(width, height),
            ))
        return hands

    @property
    def frames_to_settle(self) -> int:
        return self.finder.frames_to_settle

    @property
    def search_squares(self) -> list[Region]:
        return self.finder.last_search

    def forget(self) -> None:
        self.finder.forget()

    def close(self) -> None:
        self.finder.close()

    def __enter__(self) -> OpenVinoHands:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
