"""edge-gesture: hand gestures from a camera, published on MQTT for home automation."""

__version__ = "0.1.0"
