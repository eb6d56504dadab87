"""Swipes and waves from each hand track's path over frame time.

Per track, the palm's centre (wrist and four knuckles, as in `hands.tracks`) is followed in units
of the hand's own size (the median of its recent palm sizes: a blurred frame shrinks the palm, the
median does not move), so the same rules hold near the camera and across the room. Along each
axis the path is cut into strokes: a stroke runs while the hand keeps moving one way, and ends
when the hand comes back `motion.reversal` sizes from the furthest point it reached (a reversal)
or stops for `motion.swipe_max_s` (then the next movement starts afresh).

- **Swipe** (`swipe_left/right/up/down`): within the last `swipe_max_s` of one stroke the hand
  travelled at least `swipe_min_distance` sizes along the axis, and at most `swipe_max_slant`
  times that across it (straight enough). It fires as the distance is reached, once per stroke.
- **Turning back**: a stroke that turns back a swipe within `return_s` of its end is the hand
  coming back, not a swipe. One that turns back at once (within `SWING_RETURN_S`) from any stroke
  of at least `TURN_BACK_MIN` hand sizes is the second half of a swing (a big wave's strokes are
  as long as a short swipe). A small wind-up before a swipe is shorter than that.
- **Wave**: at least `wave_min_strokes` side-to-side strokes in a row, each at least
  `wave_min_stroke` sizes and, once finished, `MIN_STROKE_S` long (a turn and a turn back within a
  frame or two is a misread blurred frame), within `wave_window_s`, with an open hand (the pose classifier's
  `open_palm` on at least half of those frames). While a track is waving (two strokes of that
  size before the current one), its side-to-side strokes are not swipes: a wave is not also
  two swipes.
- **Still**: a held pose counts only while the hand moves slower than `still_max_speed` sizes a
  second (measured over the last `SPEED_SPAN_S`): a swipe with an open hand is not an open_palm.
  After a swipe or a wave the hand must first be still for `settle_s` (the hand resting where a
  swipe ended is not showing a pose), and the shape it moved with (the pose most of its labelled
  frames showed over the gesture) is spent: held on after the gesture it is no pose, until the
  hand has rested `settle_s` showing something else (or nothing), or has left view (a hand lost
  in a blurred return stroke and found again within `max_gap_s` has not). Another pose shown
  after the swipe fires as usual.

Directions are the person's own, like `hand`: an unmirrored camera sees a hand moving to the
person's left go to the picture's right (`hands.mirrored` says which it is). A fast hand is often
lost for a few blurred frames; a track that reappears as a new one within `max_gap_s` continues
the path of the one lost hand of that size that could have become it: where the lost hand was
heading, or along a swipe's axis the way it was going, if it was moving; along a swipe's axis
from a steady hand showing the same pose (or an unreadable one, or any after a swipe: its return)
if it was still (the hand tracks keep their own ids).

Times are the frames' own (the source's clock), compared with a tolerance far below a frame, so
a file gives the same events at the same frames on every run.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from edge_gesture.config import MotionConfig
from edge_gesture.hands import Hand
from edge_gesture.hands.tracks import palm

#: Frame times are compared with this slack: a file's clock is start + n / fps in floats.
EPS = 1e-6
#: The span over which a hand's speed is measured for the still-pose rule.
SPEED_SPAN_S = 0.2
#: A stroke at least this long (hand sizes) is a swing that a stroke back at once returns from...
TURN_BACK_MIN = 1.0
#: ...within this many seconds of its end (a wave turns without stopping; the reversal is seen
#: `reversal` hand sizes later, about 0.1 s).
SWING_RETURN_S = 0.35
#: The shortest stroke a hand makes (s): a quick wave swings 2.5 times a second, 0.2 s a stroke. A
#: shorter one, there and back within a frame or two, is a misread blurred frame, not a swing.
MIN_STROKE_S = 0.1
#: How much path a track keeps: the longest rule's window.
_KEEP_S = 3.0
_SIZE_SPAN_S = 1.0
_COS_45 = math.cos(math.radians(45))
#: Hand sizes a hand has moved over its last SPEED_SPAN_S when it is setting off (landmark jitter
#: is a few hundredths of that).
_SETTING_OFF = 0.15
#: Frame times kept beyond max_gap_s, to know the frame before a lost hand's last (_steady).
_FRAMES_KEPT_S = 0.5
#: Hand sizes a second no hand moves faster than (about 2.7 m/s).
_FASTEST_HAND = 30.0


@dataclass(frozen=True, slots=True)
class MotionEvent:
    track: int
    gesture: str
    confidence: float


@dataclass(slots=True)
class _Sample:
    t: float
    x: float  # palm centre, frame heights (x scaled by the aspect)
    y: float
    size: float
    pose: str | None  # the classifier's label on this frame


@dataclass
class _Stroke:
    direction: int = 0  # +1 / -1 along the axis, 0 while the hand has not moved far enough
    anchor_t: float = 0.0  # where and when the stroke started
    anchor: float = 0.0
    extreme_t: float = 0.0  # the furthest point along `direction` so far
    extreme: float = 0.0
    progress: float = 0.0  # where the hand was at extreme_t (see _follow)
    number: int = 0  # counts strokes on this axis; a swipe fires once per number
    began_t: float = 0.0  # when the hand was last seen before it was seen going this way (past the
    #                       reversal): across frames the hand was lost in, the turn was made then
    done: list = field(default_factory=list)  # finished strokes: (number, direction, amplitude, start, end)


@dataclass
class _Path:
    samples: deque = field(default_factory=deque)
    axes: tuple = field(default_factory=lambda: (_Stroke(), _Stroke()))
    swiped: dict = field(default_factory=dict)  # axis -> the stroke number a swipe fired on
    waved_stroke: int = -1  # the x stroke number a wave last fired on
    settling: bool = False  # a motion gesture fired; poses wait until the hand has been still
    still_since: float | None = None
    spent: str | None = None  # the shape a motion gesture was made with (see the module's Still)
    other_since: float | None = None  # since when the hand has rested showing another shape
    last_seen: float = 0.0
    size: float = 0.0


class MotionTracker:
    """Paths per hand track and the motion gestures they make. The frame loop owns it."""

    def __init__(self, cfg: MotionConfig, mirrored: bool):
        self.cfg = cfg
        self.mirrored = mirrored
        self._paths: dict[int, _Path] = {}
        self._frames: deque = deque()  # recent frame times (see _steady)

    def reconfigure(self, cfg: MotionConfig, mirrored: bool) -> None:
        self.cfg, self.mirrored = cfg, mirrored

    def update(self, t: float, hands: list[Hand], poses: dict[int, str | None]
               ) -> tuple[list[MotionEvent], set[int]]:
        """One frame: the hands with their track ids and each track's pose label. Returns the
        motion events and the tracks whose pose does not count in this frame (moving, settling
        after a motion gesture, or still showing the shape it was made with)."""
        cfg = self.cfg
        self._frames.append(t)
        while self._frames[0] < t - cfg.max_gap_s - _FRAMES_KEPT_S - EPS:
            self._frames.popleft()
        seen = {h.track_id for h in hands}
        gone = [k for k, p in self._paths.items() if k not in seen and t - p.last_seen > cfg.max_gap_s + EPS]
        for tid in gone:
            del self._paths[tid]
        events, moving = [], set()
        for hand in hands:
            path = self._paths.get(hand.track_id)
            pose = poses.get(hand.track_id)
            if path is None:
                path = self._paths[hand.track_id] = self._continued(hand, pose, t, seen)
            centre, size = palm(hand)
            path.samples.append(_Sample(t, float(centre[0]), float(centre[1]), size, pose))
            path.last_seen = t
            while path.samples and path.samples[0].t < t - _KEEP_S - EPS:
                path.samples.popleft()
            recent = [s.size for s in path.samples if s.t >= t - _SIZE_SPAN_S - EPS]
            path.size = float(np.median(recent))
            for axis in (0, 1):
                self._follow(path, axis, t)
            still = self._speed(path, t) <= cfg.still_max_speed
            if not still:
                path.still_since = None
                moving.add(hand.track_id)
            elif path.still_since is None:
                path.still_since = t
            found = [MotionEvent(hand.track_id, g, c) for g, c in self._decide(path, t)]
            if found:
                path.settling, path.still_since = True, None
                path.spent, path.other_since = self._shape_moved(path, t), None
            if path.settling:
                if path.still_since is not None and t - path.still_since >= cfg.settle_s - EPS:
                    path.settling = False
                else:
                    moving.add(hand.track_id)
            if path.spent is not None and self._still_spent(path, pose, still, t):
                moving.add(hand.track_id)
            events += found
        return events, moving

    def _shape_moved(self, path: _Path, t: float) -> str | None:
        """The pose most of the path's labelled frames showed over the gesture just made (a
        blurred frame's label is often none or a misread, so the majority, not the last)."""
        counts = Counter(s.pose for s in path.samples
                         if s.pose is not None and s.t >= t - self.cfg.swipe_max_s - EPS)
        return counts.most_common(1)[0][0] if counts else None

    def _still_spent(self, path: _Path, pose: str | None, still: bool, t: float) -> bool:
        """Whether the hand still shows the shape it made its motion gesture with: held on
        after a swipe, that shape is the swipe's, not a pose. The shape counts again once the
        hand has rested settle_s showing something else (a hand lowered, relaxed or reshaped)."""
        if pose == path.spent:
            path.other_since = None
            return True
        if not still:
            path.other_since = None
        elif path.other_since is None:
            path.other_since = t
        elif t - path.other_since >= self.cfg.settle_s - EPS:
            path.spent = path.other_since = None
        return False

    def _continued(self, hand: Hand, pose: str | None, t: float, seen: set[int]) -> _Path:
        """A new track's path: the path of a track lost moments ago when it is the only one of
        this hand's size that could have become this one (a fast hand missed for a few blurred
        frames), else a fresh one. A hand lowered out of view and another raised elsewhere is not
        one path, and a false hand that comes and goes in the room (an object the landmark model
        reads as a hand now and then) does not make two lost candidates of one. A hand lost while
        still and one showing another pose found along a swipe's axis are two hands (a clip
        cutting from one photo to the next), not one swiped there."""
        centre, size = palm(hand)
        fits = [k for k, p in self._paths.items() if k not in seen and p.size > 0
                and max(p.size, size) / min(p.size, size) <= 1.8 and self._could_become(p, centre, pose, t)]
        if len(fits) != 1:
            return _Path()
        return self._paths.pop(fits[0])

    def _could_become(self, path: _Path, centre: np.ndarray, pose: str | None, t: float) -> bool:
        """Whether the hand lost on `path` could be the new one seen at `centre` at `t`."""
        span = [s for s in path.samples if s.t >= path.last_seen - SPEED_SPAN_S - EPS]
        heading = np.array([span[-1].x - span[0].x, span[-1].y - span[0].y])
        jump = np.array([centre[0] - span[-1].x, centre[1] - span[-1].y])
        distance = float(np.linalg.norm(jump))
        # It could have got there: a hand moves at most about 3 m/s (30 hand sizes a second); a
        # hand that is gone and another at once far away (a cut, another person) is two hands.
        # A hand lost on the move was often not where its track last put it: blurred, its
        # landmarks lag and stall for a few frames before the track lets go, so it may have gone
        # on for up to SPEED_SPAN_S more.
        moved = float(np.linalg.norm(heading)) >= _SETTING_OFF * path.size
        # Ahead of where it was heading, or along a swipe's axis in the direction it was moving
        # on that axis: a hand blurred mid-swipe is often last read off its line (half a hand
        # below it, at two thirds of its size), which turns the heading but not the way it was
        # going.
        axis = int(abs(jump[1]) > abs(jump[0]))
        along_axis = (abs(jump[1 - axis]) <= self.cfg.swipe_max_slant * abs(jump[axis])
                      and heading[axis] * jump[axis] > 0
                      and abs(heading[axis]) >= _SETTING_OFF * path.size)
        towards = along_axis or heading @ jump >= _COS_45 * np.linalg.norm(heading) * distance
        flight = t - path.last_seen + (SPEED_SPAN_S if moved and towards else 0.0)
        if distance > _FASTEST_HAND * path.size * flight:
            return False
        # A hand that was setting off must have gone towards the new one (one lowered out of view
        # is not another raised beside it).
        if moved:
            return bool(towards)
        # A hand lost while it looked still is often lost as it sets off (at 15 frames/s a swipe
        # is gone within two frames of starting); what bridging its gap is for is a swipe, so
        # further than a hand size away the new one must lie along a swipe's axis, and the lost
        # one must have been a steady hand, not something read as a hand a frame at a time.
        if distance <= path.size:
            return True
        along, across = sorted(np.abs(jump), reverse=True)
        # A hand keeps its shape across a swipe: the pose it held before it was lost and the one
        # it is found with are the same, unless one of them is unreadable, or the lost hand had
        # just swiped (its shape spent): found at the end of its return stroke, still blurred, a
        # two-finger swiper's first read is often one finger.
        held = path.samples[-1].pose
        same_shape = held is None or pose is None or held == pose or path.spent is not None
        return across <= self.cfg.swipe_max_slant * along and self._steady(path) and same_shape

    def _steady(self, path: _Path) -> bool:
        """Whether the path's hand was seen on the frame before it was last seen: a hand in view
        is followed from its landmarks frame after frame, while an object the landmark model
        takes for a hand is found by the search now and then, a frame at a time."""
        before = [f for f in self._frames if f < path.last_seen - EPS]
        return len(path.samples) >= 2 and bool(before) and abs(path.samples[-2].t - before[-1]) < EPS

    def _follow(self, path: _Path, axis: int, t: float) -> None:
        cfg, s, st = self.cfg, path.samples[-1], path.axes[axis]
        p = s.x if axis == 0 else s.y
        unit = path.size
        if len(path.samples) == 1:
            st.anchor = st.extreme = st.progress = p
            st.anchor_t = st.extreme_t = t
            return
        if st.direction == 0:
            if t - st.anchor_t > cfg.swipe_max_s + EPS:
                # The hand has not gone anywhere for a while: a movement from here starts afresh.
                st.anchor, st.anchor_t = p, t
            elif abs(p - st.anchor) >= cfg.reversal * unit:
                st.direction = 1 if p > st.anchor else -1
                st.extreme, st.extreme_t, st.progress = p, t, p
                st.number += 1
                st.began_t = path.samples[-2].t
            return
        if (p - st.extreme) * st.direction > 0:
            st.extreme = p
            # The stroke goes on while the hand moves on at a moving hand's speed; a hand resting
            # where a stroke ended creeps on by landmark jitter, and that is not the stroke going
            # on (its end would move up to whenever the hand sets off again).
            if (p - st.progress) * st.direction >= cfg.still_max_speed * unit * (t - st.extreme_t):
                st.extreme_t, st.progress = t, p
        elif (st.extreme - p) * st.direction >= cfg.reversal * unit:
            st.done.append((st.number, st.direction, abs(st.extreme - st.anchor) / unit,
                            st.anchor_t, st.extreme_t))
            st.done = [d for d in st.done if d[4] >= t - _KEEP_S - EPS]
            st.anchor, st.anchor_t = st.extreme, st.extreme_t
            st.direction = -st.direction
            st.extreme, st.extreme_t, st.progress = p, t, p
            st.number += 1
            st.began_t = path.samples[-2].t
        elif t - st.extreme_t > cfg.swipe_max_s + EPS:
            st.done.append((st.number, st.direction, abs(st.extreme - st.anchor) / unit,
                            st.anchor_t, st.extreme_t))
            st.direction, st.anchor, st.anchor_t = 0, p, t

    def _speed(self, path: _Path, t: float) -> float:
        """Palm sizes a second over the last SPEED_SPAN_S."""
        span = [s for s in path.samples if s.t >= t - SPEED_SPAN_S - EPS]
        if len(span) < 2 or span[-1].t - span[0].t < EPS:
            return 0.0
        a, b = span[0], span[-1]
        return float(np.hypot(b.x - a.x, b.y - a.y)) / path.size / (b.t - a.t)

    def _decide(self, path: _Path, t: float):
        cfg = self.cfg
        side = self._side_strokes(path, t)
        wave = self._wave(path, side)
        if wave is not None:
            yield wave
        for axis in (0, 1):
            st = path.axes[axis]
            if st.direction == 0 or path.swiped.get(axis) == st.number:
                continue
            # Waving (two wave-sized strokes before the current one): not a swipe.
            if axis == 0 and len(side) >= 3:
                continue
            if self._turns_back(st, path.swiped.get(axis)):
                continue
            start = next(s for s in path.samples if s.t >= max(st.anchor_t, t - cfg.swipe_max_s) - EPS)
            now = path.samples[-1]
            along = ((now.x - start.x) if axis == 0 else (now.y - start.y)) * st.direction / path.size
            across = abs((now.y - start.y) if axis == 0 else (now.x - start.x)) / path.size
            if along < cfg.swipe_min_distance or across > cfg.swipe_max_slant * along:
                continue
            path.swiped[axis] = st.number
            yield self._swipe_name(axis, st.direction), round(along / float(np.hypot(along, across)), 3)

    def _turns_back(self, st: _Stroke, swiped: int | None) -> bool:
        """Whether the current stroke comes back from the stroke just before it: a swipe's
        return, or a swing's second half."""
        if not st.done:
            return False
        number, direction, amplitude, _, end = st.done[-1]
        if number != st.number - 1 or direction != -st.direction:
            return False
        window = self.cfg.return_s if swiped == number else SWING_RETURN_S
        return amplitude >= TURN_BACK_MIN and st.began_t - end <= window + EPS

    def _side_strokes(self, path: _Path, t: float) -> list[tuple]:
        """The side-to-side strokes in a row, up to the current one, that are big enough for a
        wave and inside its window (newest last)."""
        cfg, st = self.cfg, path.axes[0]
        strokes = list(st.done)
        if st.direction != 0:
            strokes.append((st.number, st.direction, abs(st.extreme - st.anchor) / path.size,
                            st.anchor_t, st.extreme_t))
        run = []
        for i, s in enumerate(reversed(strokes)):
            if s[3] < t - cfg.wave_window_s - EPS or s[2] < cfg.wave_min_stroke:
                break
            if i > 0 and s[4] - s[3] < MIN_STROKE_S - EPS:  # a finished stroke; see MIN_STROKE_S
                break
            if run and s[0] != run[-1][0] - 1:
                break
            run.append(s)
        return run[::-1]

    def _wave(self, path: _Path, run: list[tuple]):
        cfg = self.cfg
        if len(run) < cfg.wave_min_strokes or path.waved_stroke >= run[0][0]:
            return None
        frames = [s.pose == "open_palm" for s in path.samples if s.t >= run[0][3] - EPS]
        open_share = sum(frames) / len(frames)
        if open_share < 0.5:
            return None
        path.waved_stroke = run[-1][0]
        return "wave", round(open_share, 3)

    def _swipe_name(self, axis: int, direction: int) -> str:
        if axis == 1:
            return "swipe_down" if direction > 0 else "swipe_up"
        # Unmirrored: the picture's right is the person's left.
        towards_picture_right = direction > 0
        return "swipe_right" if towards_picture_right == self.mirrored else "swipe_left"
