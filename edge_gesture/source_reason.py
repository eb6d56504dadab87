"""Why a camera or stream did not open, in words the user can act on.

OpenCV only says that opening failed. The reason is found out afterwards, the way a user would:
is the device node there and may we open it; does anything accept connections at the stream's
host and port; did the stream answer at all within `capture.read_timeout_s`.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}


def camera_path(source: str) -> str:
    """The device node of a camera source: `2` is /dev/video2."""
    return f"/dev/video{source}" if source.isdigit() else source


def camera_reason(source: str) -> str:
    path = camera_path(source)
    try:
        # Opening and closing a V4L2 node starts nothing; it is what OpenCV's open does first.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"no such device: {path} (`edge-gesture devices` lists the cameras present)"
    except PermissionError:
        return (f"permission denied: {path} (the daemon's user needs the video group; under "
                "systemd the unit's DeviceAllow= must allow it)")
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    os.close(fd)
    return (f"{path} opens, but OpenCV cannot capture from it (not a video capture node, or "
            "another program is using the camera)")


def stream_reason(source: str, read_timeout_s: float, open_s: float) -> str:
    """`open_s`: how long the failed open took; an open that used up the whole timeout waited
    for a server that never answered."""
    url = urlsplit(source)
    waited = f"no frames within capture.read_timeout_s ({read_timeout_s:g} s)"
    try:
        host, port = url.hostname, url.port or _DEFAULT_PORTS.get(url.scheme.lower())
    except ValueError:  # a port that is not a number
        return f"the stream did not open: bad port in {url.netloc}"
    if not host or port is None:  # udp:// and the like: nothing to connect to
        return waited if open_s >= read_timeout_s else "the stream did not open"
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=read_timeout_s):
            pass
    except socket.gaierror as e:
        return f"cannot resolve the stream's host {host!r}: {e.strerror}"
    except ConnectionRefusedError:
        return f"connection refused by {where}"
    except TimeoutError:
        return f"no answer from {where} within capture.read_timeout_s ({read_timeout_s:g} s)"
    except OSError as e:
        return f"cannot reach {where}: {e.strerror or e}"
    if open_s >= read_timeout_s:
        return f"{waited}: {where} accepts connections but sent no stream"
    return (f"{where} accepts connections but gave no stream (wrong path or credentials in the "
            "URL? logging.level = \"debug\" shows FFmpeg's own messages after a restart)")
