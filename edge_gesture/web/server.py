"""The daemon's one HTTP server: aiohttp on its own thread and event loop, so the frame loop never
waits for a client. aiohttp because it is a well-kept asyncio server (Home Assistant's) that
brings WebSockets and streaming responses in one small package, with no ASGI server beside it.

    server = WebServer(cfg.web, feed, check, metrics).start()   # StartupError if it cannot
    ...
    server.stop(timeout=0.5)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiohttp import web

from edge_gesture.config import WebConfig
from edge_gesture.errors import StartupError
from edge_gesture.web.access import access_middleware, read_token
from edge_gesture.web.feed import LiveFeed
from edge_gesture.web.limits import LimitedSite, ViewerSlots, time_limit_middleware
from edge_gesture.web.pictures import LivePicture
from edge_gesture.web.push import Pusher
from edge_gesture.web.routes import Routes

log = structlog.get_logger("web")

#: Threads that encode pictures and run check()/metrics(): what the page may take of the CPU.
WORKERS = 2
#: Requests carry no body; a bigger one is refused before it is read.
MAX_BODY = 4096
START_WAIT_S = 10.0
SHUTDOWN_GRACE_S = 0.5


def _listen(cfg: WebConfig) -> socket.socket:
    """Bound here, in the caller's thread, so a taken port stops the start with its name."""
    try:
        infos = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"web.host: {cfg.host!r} is not an address of this machine: "
                           f"{e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restart bind while the last run's connections are in TIME_WAIT; on Linux it
        # does not let two servers listen on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(cfg.max_connections)
    except OSError as e:
        sock.close()
        where = f"{cfg.host}:{cfg.port}"
        if e.errno == errno.EADDRINUSE:
            raise StartupError(f"web.port: {where} is already in use by another program (another "
                               "edge-gesture, or [health] on the same port?): pick another "
                               "web.port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"web.host: {cfg.host!r} is not an address of this machine") from None
        if e.errno == errno.EACCES:
            raise StartupError(f"web.port: {where}: permission denied (ports below 1024 need "
                               "privileges)") from None
        raise StartupError(f"web.port: cannot listen on {where}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


class WebServer:
    """The live page, the API, /healthz and /metrics. `check()` returns what /healthz reports
    (health.problems), `metrics()` the Prometheus exposition, both as HealthServer took them;
    they run on a worker thread. Reads web.token_file here: StartupError naming it."""

    def __init__(self, cfg: WebConfig, feed: LiveFeed, check: Callable[[], list[str]],
                 metrics: Callable[[], bytes]):
        self.cfg = cfg
        self.feed = feed
        self.check = check
        self.metrics = metrics
        self.token = read_token(cfg)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stop_timeout = 1.0
        self.site: LimitedSite | None = None
        self.viewers = ViewerSlots(cfg.max_viewers)
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="web-worker")
        self.picture = LivePicture(feed, cfg.stream_fps, cfg.stream_width, self.executor)
        self.pusher = Pusher(feed, self.viewers, write_timeout_s=cfg.request_timeout_s)

    @property
    def host(self) -> str:
        return self._sock.getsockname()[0] if self._sock is not None else self.cfg.host

    @property
    def port(self) -> int:
        """The bound port (useful with web.port = 0)."""
        return self._sock.getsockname()[1] if self._sock is not None else self.cfg.port

    @property
    def url(self) -> str:
        host = self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self) -> WebServer:
        """Listens and serves from its own thread; returns once requests are answered."""
        self._sock = _listen(self.cfg)
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_WAIT_S) or self._failed is not None:
            self.stop()
            raise StartupError(f"web: the server did not start: {self._failed or 'timed out'}")
        log.info("live page listening", url=self.url, token=self.token is not None)
        return self

    def stop(self, timeout: float = 1.0) -> bool:
        """Closes every connection (streams and WebSockets too) within about `timeout` s; True
        if the server's thread has ended."""
        self._stop_timeout = timeout
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout + 0.5)
        elif self._sock is not None and thread is None:
            self._sock.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        return thread is None or not thread.is_alive()

    # ------------------------------------------------------------ the server's thread

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = None
        try:
            runner = loop.run_until_complete(self._setup())
        except BaseException as e:
            self._failed = e
        self._ready.set()
        try:
            if self._failed is None:
                loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._teardown(runner))
            except Exception as e:
                log.warning("live page server did not stop cleanly", error=f"{type(e).__name__}: {e}")
            finally:
                loop.close()

    async def _setup(self) -> web.AppRunner:
        long_lived = frozenset({"/stream.mjpg", "/ws"})
        app = web.Application(
            middlewares=[access_middleware(self.token),
                         time_limit_middleware(self.cfg.request_timeout_s, long_lived)],
            client_max_size=MAX_BODY)
        Routes(self.feed, self.picture, self.viewers, self.check, self.metrics, self.executor,
               write_timeout_s=self.cfg.request_timeout_s).add_to(app)
        app.router.add_get("/ws", self.pusher.handle)
        app.on_shutdown.append(self.pusher.close)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False,
            # A client dropping its connection ends its handler (and frees its viewer slot).
            handler_cancellation=True,
            # From the connection's start: a client that sends no request, or half of one, or
            # lingers between requests, is cut off after this (aiohttp's keep-alive timer).
            keepalive_timeout=self.cfg.request_timeout_s,
            # What an answer in progress gets to finish when the server stops.
            shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        await self.pusher.start()
        self.site = LimitedSite(runner, self._sock, max_connections=self.cfg.max_connections,
                                backlog=self.cfg.max_connections)
        await self.site.start()
        return runner

    async def _teardown(self, runner: web.AppRunner | None) -> None:
        await self.picture.close()  # streams waiting for a picture end now
        if runner is None:
            await self.pusher.close()
            if self._sock is not None:
                self._sock.close()
            return
        async with asyncio.timeout(self._stop_timeout):
            await runner.cleanup()
