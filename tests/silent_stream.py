"""An RTSP server that accepts connections and never sends a byte, as a camera whose firmware
hung does; it counts the connections (each reopen of the stream is one) and keeps them open."""

from __future__ import annotations

import socket
import threading


class SilentStream:
    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"rtsp://127.0.0.1:{self.sock.getsockname()[1]}/stream"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()
