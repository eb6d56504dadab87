"""The endpoints: the page, the JSON API, the snapshot, the MJPEG stream, /healthz and /metrics.
The WebSocket is in web/push.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import Executor

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from edge_gesture.web.feed import EVENTS_KEPT, LiveFeed, dumps
from edge_gesture.web.limits import ViewerSlots, busy
from edge_gesture.web.page import page_html
from edge_gesture.web.pictures import LivePicture, render_jpeg

BOUNDARY = "edge-gesture-frame"
DEFAULT_EVENTS = 50


def _json(body: str | bytes, status: int = 200) -> web.Response:
    return web.Response(body=body.encode() if isinstance(body, str) else body, status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message + "\n")


def _int_param(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name}: {raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise _bad(f"{name}: {value} is outside {lo}..{hi}")
    return value


class Routes:
    def __init__(self, feed: LiveFeed, picture: LivePicture, viewers: ViewerSlots,
                 check: Callable[[], list[str]], metrics: Callable[[], bytes], executor: Executor,
                 write_timeout_s: float):
        self.feed = feed
        self.picture = picture
        self.viewers = viewers
        self.check = check
        self.metrics = metrics
        self.executor = executor
        self.write_timeout_s = write_timeout_s

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/stats", self.stats)
        app.router.add_get("/api/config", self.config)
        app.router.add_get("/api/snapshot.jpg", self.snapshot)
        app.router.add_get("/stream.mjpg", self.stream)

    async def _off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # ------------------------------------------------------------ health and metrics

    async def healthz(self, request: web.Request) -> web.Response:
        # The same answers as health.HealthServer's, so probes and scrapers need no change.
        try:
            reasons = await self._off_loop(self.check)
        except Exception as e:  # the check itself failing is a health problem
            reasons = [f"health check failed: {type(e).__name__}: {e}"]
        status = 200 if not reasons else 503
        if request.headers.get("Accept", "").startswith("application/json"):
            return _json(json.dumps({"ok": not reasons, "problems": reasons}), status)
        body = "ok\n" if not reasons else "".join(r + "\n" for r in reasons)
        return web.Response(text=body, status=status, content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def prometheus(self, request: web.Request) -> web.Response:
        body = await self._off_loop(self.metrics)
        resp = web.Response(body=body, headers={"Cache-Control": "no-store"})
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    # ------------------------------------------------------------ the API

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=page_html(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store",
                                     # Only our own inline script and style, nothing fetched.
                                     "Content-Security-Policy":
                                     "default-src 'self'; script-src 'unsafe-inline'; "
                                     "style-src 'unsafe-inline'; img-src 'self' blob:; "
                                     "connect-src 'self'",
                                     "Referrer-Policy": "no-referrer"})

    async def state(self, request: web.Request) -> web.Response:
        return _json(dumps(self.feed.state()))

    async def events(self, request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", DEFAULT_EVENTS, 0, EVENTS_KEPT)
        # The publisher's JSON as it went to MQTT, unparsed and unchanged.
        return _json(b"[" + b",".join(self.feed.events(limit)) + b"]")

    async def stats(self, request: web.Request) -> web.Response:
        return _json(dumps(self.feed.stats()))

    async def config(self, request: web.Request) -> web.Response:
        return _json(dumps(self.feed.config()))

    async def snapshot(self, request: web.Request) -> web.Response:
        with_overlay = request.query.get("overlay", "0") not in ("0", "", "false", "no")
        width = _int_param(request, "width", None, 16, 7680)
        view = self.feed.latest_frame()
        if view is None:
            raise busy("no frame processed yet")
        jpeg = await self._off_loop(lambda: render_jpeg(view, self.feed.active_gestures(),
                                                        width=width, with_overlay=with_overlay))
        name = f"edge-gesture-{view.frame.index}{'-overlay' if with_overlay else ''}.jpg"
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store",
                                     "Content-Disposition": f'inline; filename="{name}"'})

    # ------------------------------------------------------------ the live picture

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self.viewers.take():
            raise busy(f"{self.viewers.limit} viewers already (web.max_viewers)")
        try:
            resp = web.StreamResponse(headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Cache-Control": "no-store"})
            await resp.prepare(request)
            async with self.picture.watching():
                version = 0
                while True:
                    got = await self.picture.next_after(version)
                    if got is None:  # the server is stopping
                        break
                    version, jpeg = got
                    part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"
                    try:
                        # A viewer that stops reading fills its socket buffer; it is let go
                        # rather than held open for ever.
                        async with asyncio.timeout(self.write_timeout_s):
                            await resp.write(part)
                    except (TimeoutError, ConnectionError):
                        break
            return resp
        finally:
            self.viewers.give_back()
