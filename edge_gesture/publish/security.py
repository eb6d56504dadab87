"""Credentials and TLS for the broker connection, each failure naming the setting to fix."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from edge_gesture.config import MqttConfig
from edge_gesture.errors import StartupError

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


def credential_path(value: str, setting: str) -> Path:
    """A path as given, or a bare name inside systemd's $CREDENTIALS_DIRECTORY."""
    if "/" in value:
        return Path(value)
    cred_dir = os.environ.get(CREDENTIALS_DIRECTORY)
    if not cred_dir:
        raise StartupError(
            f"{setting} {value!r} is a bare name, looked up in ${CREDENTIALS_DIRECTORY}, which is "
            "not set: run under systemd with LoadCredential=, or give a path"
        )
    return Path(cred_dir) / value


def read_credential(value: str, setting: str) -> tuple[Path, str]:
    """A secret file's path and text (a bare name is looked up as credential_path says); a file
    that cannot be read is a StartupError naming `setting`."""
    path = credential_path(value, setting)
    try:
        return path, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StartupError(f"{setting}: no such file {path}") from None
    except OSError as e:
        raise StartupError(f"{setting}: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise StartupError(f"{setting}: {path} is not UTF-8 text") from None


def read_token(value: str, setting: str) -> tuple[Path, str]:
    """A token file's path and its first line, stripped ("" when the file is blank); a bare
    name is looked up as credential_path says. Callers judge its length."""
    path, text = read_credential(value, setting)
    return path, text.splitlines()[0].strip() if text.strip() else ""


def resolve_password(m: MqttConfig) -> str | None:
    """The password from the config, a file, or the environment, in that order; None if none."""
    if m.password is not None:
        return m.password.get_secret_value()
    if m.password_file:
        path, text = read_credential(m.password_file, "mqtt.password_file")
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise StartupError(f"mqtt.password_file: {path} is empty")
        return lines[0]
    if m.password_env and m.username:
        return os.environ.get(m.password_env) or None
    return None


def _readable(path: str, setting: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise StartupError(f"{setting}: no such file {p}")
    if not os.access(p, os.R_OK):
        raise StartupError(f"{setting}: cannot read {p} (permissions)")
    return str(p)


def tls_context(m: MqttConfig) -> ssl.SSLContext | None:
    t = m.tls
    if not t.enabled:
        return None
    ca = _readable(t.ca_file, "mqtt.tls.ca_file") if t.ca_file else None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except ssl.SSLError as e:
        raise StartupError(f"mqtt.tls.ca_file: {ca} holds no usable PEM certificate ({e.reason})"
                           ) from None
    if t.cert_file:
        cert = _readable(t.cert_file, "mqtt.tls.cert_file")
        key = _readable(str(credential_path(t.key_file, "mqtt.tls.key_file")), "mqtt.tls.key_file")
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            raise StartupError(
                f"mqtt.tls.cert_file / key_file: {cert} and {key} are not a matching PEM "
                f"certificate and key ({e.reason})"
            ) from None
    if t.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
