"""Are the classifier's thresholds (`edge_gesture.gestures.Thresholds`) fitted to the development
photos or to the gestures? Cross-validation says.

The photos are split into five folds, each gesture spread over all of them, and every version of a
photo in one fold (the photo changed as another camera changes it, and its hand changed as another
person's differs: tests/robustness.py's perturbations and tests/hand_poses.py's variations). For
each fold the threshold midpoints are tuned on the other four (coordinate descent on a grid around
today's values: right answers at the confidence that fires an event, then the margin over the
runner-up gesture) and both today's and the tuned thresholds are scored on the fold left out. A
threshold that helps only the photos it was tuned on scores worse on the fold it did not see; one
that captures the gesture scores better. The tuned thresholds printed last are fitted on every
photo, for when the held-out figures say they generalise better.

    python -m tests.threshold_cv [DIR] [--cache FILE] [--folds 5] [--seed 0] [--json]

`--cache FILE` keeps the hand stage's answers per changed photo (tests/robustness.py's cache: it
holds landmarks derived from the photos and belongs in a temporary folder, never in the
repository).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_gesture.config import LANDMARK_GESTURES, Config
from edge_gesture.evaluate import NONE, find_images
from edge_gesture.gestures import (
    FINGERS,
    THRESHOLDS,
    Measurements,
    Thresholds,
    gesture_scores,
    measurements,
    shape_of,
)
from tests.gesture_video import DEFAULT_SHARED
from tests.robustness import PERTURBATIONS, CachedTracker, _main_hand

# What another camera does to the picture that changes the landmarks the classifier reads: the
# other hand, a tilt, a smaller hand, blur, a dark room, heavy compression.
CHANGES = ("original", "flip", "rotate-20", "rotate+20", "pad2x", "camera640x480", "blur1.5",
           "darker0.5", "jpeg30")
# The midpoints are what the photos could have fitted; the scales (how soft each change is) only
# turn the confidence's slope, and the thumb's knuckle weight is a direction, not a cut.
TUNED = ("bend_mid", "reach_mid", "thumb_far_mid", "thumb_clear_mid", "thumb_side_mid",
         "thumb_bend_mid", "pinch_mid", "thumb_cone", "index_cone")
STEPS = np.linspace(-0.3, 0.3, 13)  # relative steps for palm-length midpoints
CONE_STEPS = np.arange(-20.0, 20.1, 5.0)  # degrees for the cones
MARGIN_WEIGHT = 0.25  # per unit of margin, against 1 for every hand read right


@dataclasses.dataclass
class Hands:
    """Every hand version, one entry per version; measurements stacked into arrays."""

    photo: np.ndarray  # index of the development photo it came from
    truth: np.ndarray  # gesture index into LANDMARK_GESTURES
    kind: np.ndarray  # "photo" (the photo itself), "changed" (a perturbation) or "pose"
    m: Measurements  # every field an array


# The per-hand numbers of Measurements; bend and reach are per finger.
_NUMBERS = tuple(f.name for f in dataclasses.fields(Measurements) if f.name not in ("bend", "reach"))


def _stack(items: list[Measurements]) -> Measurements:
    return Measurements(
        bend={f: np.array([m.bend[f] for m in items]) for f in FINGERS},
        reach={f: np.array([m.reach[f] for m in items]) for f in FINGERS},
        **{name: np.array([getattr(m, name) for m in items]) for name in _NUMBERS})


def collect(folder: Path, cfg: Config, cache: dict) -> tuple[Hands, list[str]]:
    """The hand in every development photo and its versions (see the module docstring)."""
    from edge_gesture.hands import open_hands
    from tests.hand_poses import variations

    tracker = CachedTracker(open_hands(cfg.hands, static_images=True,
                                       cache_dir=str(cfg.service.cache_path())),
                            repr(cfg.hands) + " still", cache)
    photos, rows = [], []
    try:
        for label, path in find_images(folder):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if label == NONE or label not in LANDMARK_GESTURES or image is None:
                continue
            photos.append(str(path.relative_to(folder)))
            for change in CHANGES:
                tracker.forget()
                hand = _main_hand(tracker.detect(PERTURBATIONS[change](image)))
                if hand is None:
                    continue
                points = hand.landmarks.astype(np.float64) * (hand.aspect, 1.0, hand.aspect)
                kind = "photo" if change == "original" else "changed"
                rows.append((len(photos) - 1, label, kind, measurements(points)))
                if change == "original":
                    rows += [(len(photos) - 1, label, "pose", measurements(p))
                             for p in variations(label, points, hand.handedness).values()]
    finally:
        tracker.close()
    return Hands(photo=np.array([r[0] for r in rows]),
                 truth=np.array([LANDMARK_GESTURES.index(r[1]) for r in rows]),
                 kind=np.array([r[2] for r in rows]),
                 m=_stack([r[3] for r in rows])), photos


def _take(m: Measurements, keep: np.ndarray) -> Measurements:
    return Measurements(bend={f: v[keep] for f, v in m.bend.items()},
                        reach={f: v[keep] for f, v in m.reach.items()},
                        **{name: getattr(m, name)[keep] for name in _NUMBERS})


def judge(m: Measurements, truth: np.ndarray, t: Thresholds, fires: float):
    """Per hand: read right at the confidence that fires an event, and the true gesture's margin
    over the best other one."""
    scores = gesture_scores(shape_of(m, t))
    table = np.stack([scores[g] for g in LANDMARK_GESTURES], axis=1)
    rows = np.arange(len(truth))
    true = table[rows, truth]
    others = table.copy()
    others[rows, truth] = -1.0
    right = (table.argmax(axis=1) == truth) & (true >= fires)
    return right, true - others.max(axis=1)


def _objective(m, truth, t, fires, weight) -> float:
    right, margin = judge(m, truth, t, fires)
    return float(right.mean() + weight * np.clip(margin, -1.0, 1.0).mean())


def tune(m: Measurements, truth: np.ndarray, fires: float, start: Thresholds = THRESHOLDS,
         passes: int = 2, weight: float = MARGIN_WEIGHT) -> Thresholds:
    """Coordinate descent over each midpoint's grid around `start`; a move must beat the current
    value, so a flat objective keeps today's threshold."""
    t = start
    best = _objective(m, truth, t, fires, weight)
    for _ in range(passes):
        for name in TUNED:
            base = getattr(start, name)
            grid = base + CONE_STEPS if name.endswith("cone") else base * (1.0 + STEPS)
            for value in grid:
                candidate = dataclasses.replace(t, **{name: float(round(value, 4))})
                score = _objective(m, truth, candidate, fires, weight)
                if score > best + 1e-9:
                    t, best = candidate, score
    return t


def folds_of(hands: Hands, n_photos: int, folds: int, seed: int) -> np.ndarray:
    """A fold per photo, each gesture's photos dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(n_photos, int)
    truth_of = {int(p): int(t) for p, t in zip(hands.photo, hands.truth, strict=True)}
    for g in range(len(LANDMARK_GESTURES)):
        mine = [p for p in range(n_photos) if truth_of.get(p) == g]
        rng.shuffle(mine)
        for i, p in enumerate(mine):
            fold[p] = i % folds
    return fold


def _recalls(right: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {g: round(float(right[truth == i].mean()), 4)
            for i, g in enumerate(LANDMARK_GESTURES) if (truth == i).any()}


def cross_validate(hands: Hands, n_photos: int, fires: float, folds: int, seed: int,
                   weight: float = MARGIN_WEIGHT, today: Thresholds = THRESHOLDS) -> dict:
    """Held-out figures of `today`'s thresholds and of thresholds tuned from them per fold."""
    fold_of_photo = folds_of(hands, n_photos, folds, seed)
    fold = fold_of_photo[hands.photo]
    right = {"today": np.zeros(len(fold), bool), "tuned": np.zeros(len(fold), bool)}
    per_fold = []
    for k in range(folds):
        train, test = fold != k, fold == k
        tuned = tune(_take(hands.m, train), hands.truth[train], fires, start=today,
                     weight=weight)
        per_fold.append({n: getattr(tuned, n) for n in TUNED})
        for name, t in (("today", today), ("tuned", tuned)):
            right[name][test] = judge(_take(hands.m, test), hands.truth[test], t, fires)[0]
    report = {}
    for name, r in right.items():
        report[name] = {
            kind: round(float(r[hands.kind == kind].mean()), 4) for kind in ("photo", "changed", "pose")}
        seen = hands.kind != "pose"
        report[name]["recall_photos_and_changed"] = _recalls(r[seen], hands.truth[seen])
    report["tuned_per_fold"] = per_fold
    return report


def _fmt(report: dict, fitted: Thresholds) -> str:
    lines = [f"{'held-out folds':<16}{'photos':>9}{'changed':>9}{'poses':>9}   worst classes "
             "(photos and changed)"]
    for name in ("today", "tuned"):
        r = report[name]
        worst = sorted(r["recall_photos_and_changed"].items(), key=lambda kv: kv[1])[:3]
        lines.append(f"{name:<16}{r['photo']:>9.1%}{r['changed']:>9.1%}{r['pose']:>9.1%}   "
                     + ", ".join(f"{g} {v:.1%}" for g, v in worst))
    lines.append("")
    lines.append(f"{'threshold':<18}{'today':>8}{'fitted':>8}   per fold (tuned on the other folds)")
    for n in TUNED:
        lines.append(f"{n:<18}{getattr(THRESHOLDS, n):>8.3f}{getattr(fitted, n):>8.3f}   "
                     + " ".join(f"{f[n]:.3f}" for f in report["tuned_per_fold"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--config", help="config file, found as `edge-gesture eval` finds it by default")
    ap.add_argument("--cache", type=Path, help="pickle of the hand stage's answers (a temp path)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin-weight", type=float, default=MARGIN_WEIGHT,
                    help="what a unit of margin over the runner-up is worth against a right answer")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    from edge_gesture.evaluate import _config

    started = time.perf_counter()
    cfg = _config(a.config)
    cache = pickle.loads(a.cache.read_bytes()) if a.cache and a.cache.exists() else {}
    hands, photos = collect(a.dir, cfg, cache)
    if a.cache:
        a.cache.write_bytes(pickle.dumps(cache))
    fires = cfg.decide.enter_threshold
    report = cross_validate(hands, len(photos), fires, a.folds, a.seed, a.margin_weight)
    fitted = tune(hands.m, hands.truth, fires, weight=a.margin_weight)
    report["fitted_on_all"] = {n: getattr(fitted, n) for n in TUNED}
    report["hands"] = {kind: int((hands.kind == kind).sum()) for kind in ("photo", "changed", "pose")}
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(photos)} gesture photos; hand versions: " + ", ".join(
        f"{v} {k}" for k, v in report["hands"].items())
        + f"; {a.folds} folds, seed {a.seed}, margin weight {a.margin_weight}")
    print(_fmt(report, fitted))
    print(f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
