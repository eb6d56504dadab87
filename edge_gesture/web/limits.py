"""Bounds, so a slow or hostile client cannot pile up resources: a cap on open connections (one
more is answered 503 and closed at once), a cap on viewers (streams and WebSockets, which stay
open), and a time limit on every other answer."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

_BUSY = b"busy: too many connections, try again shortly\n"
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BUSY)).encode() + b"\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n\r\n" + _BUSY
)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_BUSY_RESPONSE)  # type: ignore[attr-defined]
        transport.close()


class LimitedSite(web.BaseSite):
    """aiohttp's SockSite with a cap on connections open at once.

    aiohttp's Server lists a connection once its `connection_made` ran, which the event loop
    schedules after it asked us for the protocol; a burst of accepts in one turn would pass the
    cap if only that list were counted. So the ones handed out but not yet made are counted too,
    until two loop turns later (after their `connection_made`)."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, *, max_connections: int,
                 backlog: int = 128):
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self.max_connections = max_connections
        self.refused = 0  # connections turned away since start
        self._pending = 0
        host, port = sock.getsockname()[:2]
        self._name = f"http://{host}:{port}"

    @property
    def name(self) -> str:
        return self._name

    def open_connections(self) -> int:
        server = self._runner.server
        return self._pending + (len(server.connections) if server is not None else 0)

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def settled() -> None:
            self._pending -= 1

        def protocol():
            if self.open_connections() >= self.max_connections:
                self.refused += 1
                return _Refused()
            self._pending += 1
            loop.call_soon(loop.call_soon, settled)
            return server()

        self._server = await loop.create_server(protocol, sock=self._sock, backlog=self._backlog)


class ViewerSlots:
    """Counts the open streams and WebSockets; `take` says no once `limit` are open."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0
        self.refused = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


def busy(what: str) -> web.HTTPServiceUnavailable:
    refused = web.HTTPServiceUnavailable(text=f"busy: {what}, try again shortly\n",
                                         headers={"Retry-After": "5"})
    # Closed after the answer: a client's idle kept-alive connection would hold a slot.
    refused.force_close()
    return refused


def time_limit_middleware(seconds: float, long_lived: frozenset[str]):
    """Every answer but the streams' (`long_lived` paths) must be ready within `seconds`."""

    @web.middleware
    async def within_time(request: web.Request, handler):
        if request.path in long_lived:
            return await handler(request)
        try:
            async with asyncio.timeout(seconds):
                return await handler(request)
        except TimeoutError:
            raise busy(f"no answer within web.request_timeout_s ({seconds:g} s)") from None

    return within_time
