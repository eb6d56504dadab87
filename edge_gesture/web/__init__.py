"""The live page and local API (issue 11): `LiveFeed` keeps what the daemon hands it, and
`WebServer` serves it with /healthz and /metrics, on its own thread."""

from edge_gesture.web.feed import LiveFeed
from edge_gesture.web.server import WebServer

__all__ = ["LiveFeed", "WebServer"]
