"""MQTT: the product's public API (topics and payloads are documented in the README)."""

from edge_gesture.publish.publisher import Publisher, Topics

__all__ = ["Publisher", "Topics"]
