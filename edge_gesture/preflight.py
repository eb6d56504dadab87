"""What `edge-gesture check-config` checks beyond the schema, without starting anything.

The files and folders the config names must be there and usable; each is read by the function
the daemon reads it with, so a problem reads as the daemon would report it at start-up (or,
for the VLM bundle, at every reload attempt while it runs on landmarks alone). Settings valid
alone but useless together (a gesture described in words with the VLM off) count as problems too.
A relative path is checked from the current directory, as the daemon takes it from its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edge_gesture.config import Config
from edge_gesture.errors import StartupError


@dataclass
class Findings:
    #: "field: reason", each a setting the daemon would refuse or that can never take effect.
    problems: list[str] = field(default_factory=list)
    #: What could not be checked here, and why; not problems.
    notes: list[str] = field(default_factory=list)


def check(cfg: Config, *, deep: bool = False, unusable: frozenset[str] = frozenset()) -> Findings:
    """Every problem found at once. `deep` also hashes the VLM bundle's files against the
    sha256 in its manifest (sizes are always compared). `unusable`: dotted paths of fields that
    failed validation (ConfigError.unusable); checks that read them are skipped."""

    def usable(*fields: str) -> bool:
        return not any(f == u or f.startswith(u + ".") or u.startswith(f + ".")
                       for f in fields for u in unusable)

    found = Findings()
    if usable("capture.source", "capture.width", "capture.height", "capture.fps"):
        _capture_source(cfg, found)
    if usable("hands.backend", "hands.int8_models", "hands.model_complexity"):
        _int8_models(cfg, found)
    if usable("mqtt.username", "mqtt.password", "mqtt.password_file", "mqtt.password_env"):
        _password_file(cfg, found)
    if usable("mqtt.tls"):
        _tls_files(cfg, found)
    if usable("vlm.enabled", "vlm.bundle", "vlm.allow_unverified"):
        _vlm_bundle(cfg, found, deep)
    if usable("vlm.enabled", "vlm.remote"):
        _vlm_remote_files(cfg, found)
    if usable("vlm.enabled", "gestures.custom"):
        _custom_gestures(cfg, found)
    folders = {"service.state_dir": cfg.service.state_dir, "service.cache_dir": cfg.service.cache_dir}
    if cfg.dataset.enabled:
        folders["dataset.dir"] = cfg.dataset.dir
    for setting, value in folders.items():
        if value and usable(setting) and os.path.exists(value) and not os.path.isdir(value):
            found.problems.append(f"{setting}: {value} is a file, not a folder{_from_cwd(value)}")
    return found


def _from_cwd(value: str) -> str:
    return "" if os.path.isabs(value) else f" (relative to the working directory {Path.cwd()})"


def _capture_source(cfg: Config, found: Findings) -> None:
    from edge_gesture.capture import CaptureThread, LatestFrameSlot, SourceKind, source_kind

    source = cfg.capture.source
    kind = source_kind(source)
    if kind is SourceKind.FILE:
        try:  # opens and closes the file, as the daemon does before it starts the thread
            CaptureThread(cfg.capture, LatestFrameSlot())
        except StartupError as e:
            found.problems.append(f"{e}{_from_cwd(source)}")
    elif kind is SourceKind.CAMERA and source.startswith("/dev/") and not os.path.exists(source):
        found.notes.append(f"capture.source: {source} is not there now; the daemon starts anyway "
                           "and waits for it (`edge-gesture devices` lists the cameras)")


def _int8_models(cfg: Config, found: Findings) -> None:
    folder = cfg.hands.int8_models
    if not folder:
        return
    if cfg.hands.backend != "openvino":
        found.notes.append(f"hands.int8_models: not used with hands.backend = "
                           f"{cfg.hands.backend!r} (openvino only)")
        return
    from edge_gesture.hands.int8 import int8_landmark_model

    try:
        int8_landmark_model(folder, cfg.hands.model_complexity)
    except StartupError as e:
        found.problems.append(f"hands.int8_models: {e}{_from_cwd(folder)}")


def _credential_unchecked(value: str, setting: str, found: Findings) -> bool:
    """A bare name is looked up in $CREDENTIALS_DIRECTORY, which systemd sets for the service
    only: from a shell it cannot be found, and that is no fault of the config."""
    from edge_gesture.publish.security import CREDENTIALS_DIRECTORY

    if "/" in value or os.environ.get(CREDENTIALS_DIRECTORY):
        return False
    found.notes.append(f"{setting}: {value!r} is a bare name, looked up in ${CREDENTIALS_DIRECTORY} "
                       "when the service runs (LoadCredential=); not checked here")
    return True


def _password_file(cfg: Config, found: Findings) -> None:
    from edge_gesture.publish.security import resolve_password

    value = cfg.mqtt.password_file
    if not value or _credential_unchecked(value, "mqtt.password_file", found):
        return
    try:
        resolve_password(cfg.mqtt)
    except StartupError as e:
        # A bare name was looked for in $CREDENTIALS_DIRECTORY, not the working directory.
        found.problems.append(f"{e}{_from_cwd(value) if '/' in value else ''}")


def _readable_file(value: str, setting: str) -> str | None:
    p = Path(value)
    if not p.exists():
        return f"{setting}: no such file {p}{_from_cwd(value)}"
    if not p.is_file():
        return f"{setting}: {p} is not a file"
    if not os.access(p, os.R_OK):
        return f"{setting}: cannot read {p} (permissions)"
    return None


def _tls_files(cfg: Config, found: Findings) -> None:
    from edge_gesture.publish.security import credential_path, tls_context

    t = cfg.mqtt.tls
    if not t.enabled:
        named = [f"mqtt.tls.{k}" for k in ("ca_file", "cert_file", "key_file") if getattr(t, k)]
        if named:
            found.notes.append(f"{', '.join(named)}: not used while mqtt.tls.enabled is false")
        return
    files = {"mqtt.tls.ca_file": t.ca_file, "mqtt.tls.cert_file": t.cert_file}
    key_unchecked = bool(t.key_file) and _credential_unchecked(t.key_file, "mqtt.tls.key_file", found)
    if t.key_file and not key_unchecked:
        files["mqtt.tls.key_file"] = str(credential_path(t.key_file, "mqtt.tls.key_file"))
    bad = [p for setting, value in files.items() if value and (p := _readable_file(value, setting))]
    found.problems += bad
    if bad or key_unchecked:
        return  # tls_context would repeat the first of these, or fail on the bare name
    try:  # every file readable: the certificates must also parse and the key match
        tls_context(cfg.mqtt)
    except StartupError as e:
        found.problems.append(str(e))


def _vlm_bundle(cfg: Config, found: Findings, deep: bool) -> None:
    r = cfg.vlm.remote
    if not cfg.vlm.enabled or (r.url and r.split == "all"):  # a whole-remote VLM has no bundle
        return
    from edge_gesture.bundle import BundleError, load_bundle_manifest

    try:
        load_bundle_manifest(cfg.vlm.bundle, checksums=deep,
                             allow_unverified=cfg.vlm.allow_unverified)
    except BundleError as e:
        found.problems.append(f"vlm.bundle: {e}{_from_cwd(cfg.vlm.bundle)}")
        return
    if not deep:
        found.notes.append("vlm.bundle: file sizes match the manifest; --deep also checks "
                           "their sha256")


def _vlm_remote_files(cfg: Config, found: Findings) -> None:
    """The server's files are read when the VLM loads, after start-up: a typo would only show
    as a VLM that never comes up, so it is named here."""
    r = cfg.vlm.remote
    if not cfg.vlm.enabled or not r.url:
        return
    for setting in ("token_file", "ca_file", "cert_file", "key_file"):
        value = getattr(r, setting)
        name = f"vlm.remote.{setting}"
        if not value:
            continue
        if setting in ("token_file", "key_file"):
            if _credential_unchecked(value, name, found):
                continue
        if problem := _readable_file(value, name):
            found.problems.append(problem)


def _custom_gestures(cfg: Config, found: Findings) -> None:
    if cfg.vlm.enabled:
        return
    for i, g in enumerate(cfg.gestures.custom):
        found.problems.append(
            f"gestures.custom.{i}: {g.name!r} can never fire: only the VLM recognises gestures "
            "described in words, and vlm.enabled is false; enable [vlm] with a bundle, or "
            "remove the entry"
        )
