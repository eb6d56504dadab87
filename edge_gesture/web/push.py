"""`/ws`: events, state, stats and per-second figures pushed to each page as JSON messages as
they happen.

Messages (each a JSON object with a `type`):
  hello    on connect: `state` (as /api/state), `events` (the last ones, oldest first, each the
           MQTT event JSON), `stats` (as /api/stats, with the figures of the last minutes)
  event    `event`: one published event, the MQTT event JSON
  state    `state`: as /api/state
  stats    `stats`, `mqtt`: the daemon's latest stats snapshot and MQTT counters
  figures  `figures`: the seconds that ended since the last message (see web/figures.py)

One pusher task on the server's loop turns the feed's changes into messages and puts them on
each client's queue; a client whose queue fills (it stopped reading) is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from edge_gesture.web.access import same_origin
from edge_gesture.web.feed import LiveFeed, dumps
from edge_gesture.web.limits import ViewerSlots, busy

log = structlog.get_logger("web")

HELLO_EVENTS = 50
QUEUE_SIZE = 256
FIGURES_EVERY_S = 1.0
CLOSE_WAIT_S = 0.5


class Pusher:
    def __init__(self, feed: LiveFeed, viewers: ViewerSlots, write_timeout_s: float):
        self.feed = feed
        self.viewers = viewers
        self.write_timeout_s = write_timeout_s
        self._clients: dict[web.WebSocketResponse, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._event_seq = 0
        self._figures_after: int | None = None
        self._closing: set[asyncio.Task] = set()
        self._failing = False  # logged once until an update goes out again

    # ------------------------------------------------------------ lifecycle (server's loop)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._event_seq = self.feed.event_seq
        _, self._figures_after = self.feed.figures_since(None)
        self.feed.subscribe(self._changed)
        self._task = self._loop.create_task(self._run(), name="web-push")

    async def close(self, _app: web.Application | None = None) -> None:
        self.feed.unsubscribe(self._changed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
                               for ws in list(self._clients)), return_exceptions=True)

    def _changed(self, kind: str) -> None:
        # On the daemon's thread: hand the news to our loop and return at once.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._mark, kind)
        except RuntimeError:  # the loop closed meanwhile: the server is gone
            pass

    def _mark(self, kind: str) -> None:
        self._dirty.add(kind)
        self._wake.set()

    # ------------------------------------------------------------ pushing

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_figures = loop.time() + FIGURES_EVERY_S
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_figures - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            figures_due = loop.time() >= next_figures
            if figures_due:
                next_figures = loop.time() + FIGURES_EVERY_S
            try:
                messages = self._messages(dirty, figures_due)
            except Exception as e:  # one bad value must not stop the pages' updates for good
                if not self._failing:
                    log.error("live page update not sent", error=f"{type(e).__name__}: {e}")
                self._failing = True
                continue
            self._failing = False
            for msg in messages:
                self._broadcast(msg)

    def _messages(self, dirty: set[str], figures_due: bool) -> list[str]:
        messages = []
        if "event" in dirty:
            bodies, self._event_seq = self.feed.events_after(self._event_seq)
            messages += ['{"type":"event","event":' + b.decode() + "}" for b in bodies]
        if "state" in dirty:
            messages.append(dumps({"type": "state", "state": self.feed.state()}))
        if "stats" in dirty:
            s = self.feed.stats()
            messages.append(dumps({"type": "stats", "stats": s["stats"], "mqtt": s["mqtt"]}))
        if figures_due:
            rows, self._figures_after = self.feed.figures_since(self._figures_after)
            if rows:
                messages.append(dumps({"type": "figures", "figures": rows}))
        return messages

    def _broadcast(self, msg: str) -> None:
        for ws, queue in list(self._clients.items()):
            try:
                queue.put_nowait(msg)
            except asyncio.QueueFull:
                log.info("live page client too slow, disconnected", queued=queue.qsize())
                self._clients.pop(ws, None)
                closing = asyncio.get_running_loop().create_task(
                    ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow"))
                self._closing.add(closing)  # the loop holds tasks weakly
                closing.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------ one client

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        if not same_origin(request):
            raise web.HTTPForbidden(text="forbidden: WebSocket from another origin\n")
        if not self.viewers.take():
            raise busy(f"{self.viewers.limit} viewers already (web.max_viewers)")
        try:
            # timeout: how long a close waits for the page's reply (stop() is bounded).
            ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096, timeout=CLOSE_WAIT_S)
            await ws.prepare(request)
            queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
            events = b",".join(self.feed.events(HELLO_EVENTS)).decode()
            queue.put_nowait('{"type":"hello","state":' + dumps(self.feed.state())
                             + ',"stats":' + dumps(self.feed.stats()) + ',"events":[' + events + "]}")
            self._clients[ws] = queue
            sender = asyncio.get_running_loop().create_task(self._send(ws, queue))
            try:
                async for msg in ws:  # the page sends nothing; this notices it leaving
                    if msg.type == WSMsgType.ERROR:
                        break
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
                self._clients.pop(ws, None)
            return ws
        finally:
            self.viewers.give_back()

    async def _send(self, ws: web.WebSocketResponse, queue: asyncio.Queue) -> None:
        try:
            while not ws.closed:
                msg = await queue.get()
                async with asyncio.timeout(self.write_timeout_s):
                    await ws.send_str(msg)
        except (TimeoutError, ConnectionError):
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
