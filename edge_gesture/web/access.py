"""Who may look: the access token from web.token_file, asked of every request and WebSocket, and
the Host and Origin checks that keep other web sites out of a token-less local page."""

from __future__ import annotations

import hmac

from aiohttp import web

from edge_gesture.config import WebConfig, is_loopback
from edge_gesture.errors import StartupError
from edge_gesture.publish.security import read_token as read_token_file

#: Shorter tokens are guessable; `openssl rand -hex 16` makes a good one.
MIN_TOKEN_LENGTH = 16


def read_token(cfg: WebConfig) -> str | None:
    """The token's first line, or None when web.token_file is empty."""
    if not cfg.token_file:
        return None
    path, token = read_token_file(cfg.token_file, "web.token_file")
    if len(token) < MIN_TOKEN_LENGTH:
        raise StartupError(f"web.token_file: the token in {path} is shorter than {MIN_TOKEN_LENGTH} "
                           "characters; make one with `openssl rand -hex 16`")
    return token


def presented_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token")


def token_matches(expected: str, given: str | None) -> bool:
    # compare_digest takes as long whatever the first differing byte, so timing tells nothing.
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:9820
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def host_is_local(host_header: str | None) -> bool:
    """A Host header naming this machine. Without a token, a page on another site could make the
    browser resolve its own name to 127.0.0.1 (DNS rebinding) and read the API as same-origin;
    such requests carry that other name."""
    if not host_header:
        return False
    return is_loopback(_host_name(host_header))


def same_origin(request: web.Request) -> bool:
    """Browsers let any site open a WebSocket anywhere, sending its Origin; only the page's own
    origin (or a client that is not a browser and sends none) may."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = request.headers.get("Host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def access_middleware(token: str | None):
    @web.middleware
    async def check_access(request: web.Request, handler):
        if token is not None:
            if not token_matches(token, presented_token(request)):
                # Nothing about why: a wrong token and a missing one look the same.
                raise web.HTTPUnauthorized(text="unauthorized\n",
                                           headers={"WWW-Authenticate": "Bearer"})
        elif not host_is_local(request.headers.get("Host")):
            raise web.HTTPForbidden(text="forbidden: without web.token_file only a loopback "
                                    "address (127.0.0.1, localhost, [::1]) may be used\n")
        return await handler(request)

    return check_access
