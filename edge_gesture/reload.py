"""What a SIGHUP may change in a running daemon, decided field by field.

Thresholds, the gesture list, MQTT settings (topics included: the publisher is replaced) and
logging apply at once. Anything that needs devices reopened or models recompiled (capture,
hands, the VLM, the web server, folders) keeps its running value until a restart, and the
log names each such field. Sections added later default to "needs a restart", the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_gesture.config import Config, ConfigError, parse_config

#: Dotted paths (or section prefixes) a running daemon applies without a restart.
LIVE = (
    "device_id",  # topics: applied by replacing the publisher
    "gestures.enabled",
    "gestures.min_confidence",
    "decide",
    "motion",
    "mqtt",
    "logging",
    "web.stale_after_s",
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def changed_paths(old: Config, new: Config) -> list[str]:
    """Dotted paths whose values differ (lists compare whole)."""
    a, b = _flatten(old.model_dump()), _flatten(new.model_dump())
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def is_live(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in LIVE)


def _set(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


@dataclass(frozen=True)
class ReloadPlan:
    config: Config  # what to run with now: live fields from the new file, the rest as running
    applied: tuple[str, ...]  # changed and applied now
    needs_restart: tuple[str, ...]  # changed in the file, kept at the running value
    notes: tuple[str, ...] = ()  # applied, but a part keeps the old value until a restart

    def touches(self, *prefixes: str) -> bool:
        """True if an applied change is at or under one of these paths."""
        return any(p == q or p.startswith(q + ".") for p in self.applied for q in prefixes)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Split the differences between the running and the re-read config.

    Raises ConfigError when the live part cannot be applied alone (for example a newly enabled
    gesture described in a `gestures.custom` entry that only a restart would load).
    """
    paths = changed_paths(old, new)
    applied = tuple(p for p in paths if is_live(p))
    needs_restart = tuple(p for p in paths if not is_live(p))
    merged = old.model_dump()
    new_flat = _flatten(new.model_dump())
    for p in applied:
        _set(merged, p, new_flat.get(p))
    try:
        effective = parse_config(merged, "reloaded config")
    except ConfigError as e:
        raise ConfigError(
            f"{e}\n  (these settings change together with ones that need a restart: "
            f"{', '.join(needs_restart)}; restart the service to apply them)"
        ) from None
    notes = ()
    if effective.vlm.enabled and any(p.startswith("gestures.") for p in applied):
        # The VLM's prompt and answer vocabulary are built when its model loads.
        notes = ("events follow the new gesture list now; the VLM keeps asking about the old "
                 "one until a restart",)
    return ReloadPlan(effective, applied, needs_restart, notes)
