"""Which inference device a configured name means, checked before anything is compiled.

OpenVINO names: a plain device (`CPU`, `GPU`, `GPU.1`, `NPU`), or a virtual one that takes a list:
`AUTO[:A,B,...]` picks the first present (so one present is enough), `HETERO:A,B` and `MULTI:A,B`
use all of them (so all must be present).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_ANY_OF = ("AUTO",)
_ALL_OF = ("HETERO", "MULTI", "BATCH")


class DeviceError(Exception):
    """The configured device is not on this machine; the message lists those that are."""


def _present(name: str, available: list[str]) -> bool:
    # `GPU` means any GPU: OpenVINO lists them as GPU.0, GPU.1 when there are several.
    return any(a == name or a.split(".")[0] == name for a in available)


def missing(device: str, available: list[str]) -> list[str]:
    """The devices named in `device` that are absent (for AUTO: all of them, or none)."""
    kind, _, rest = device.partition(":")
    kind = kind.strip().upper()
    if kind in _ANY_OF or kind in _ALL_OF:
        names = [n.strip() for n in rest.split(",") if n.strip()]
        if kind in _ANY_OF:
            if not names or any(_present(n, available) for n in names):
                return []
            return names
        if not names:
            return [device]
        return [n for n in names if not _present(n, available)]
    return [] if _present(device.strip(), available) else [device.strip()]


def resolve(device: str, available: list[str], *, field: str, fallback: str = "",
            fallback_field: str = "vlm.fallback_device") -> str:
    """The device to compile for: `device` when present, else `fallback` (logged), else an error
    that names the config field and lists the devices this machine has."""
    absent = missing(device, available)
    if not absent:
        return device
    have = ", ".join(available) or "none"
    if fallback and not missing(fallback, available):
        log.warning(
            "%s: %s not present (this machine has %s); using %s %s",
            field, ", ".join(absent), have, fallback_field, fallback,
        )
        return fallback
    hint = f"; {fallback_field} {fallback!r} is not present either" if fallback else ""
    raise DeviceError(
        f"{field}: device {device!r} is not present on this machine ({', '.join(absent)} missing)"
        f"; available: {have}{hint}. Set {field} to one of them, AUTO, or set {fallback_field}."
    )
