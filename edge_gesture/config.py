"""The daemon's settings: one TOML file parsed into frozen pydantic models.

The models are the documentation: every field has a description, unknown keys are refused, and a
bad file is reported with the dotted path of the field and the reason, before any device opens.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

#: Gestures the landmark classifier knows. Others can be added in words for the VLM.
LANDMARK_GESTURES = (
    "open_palm",
    "fist",
    "thumbs_up",
    "thumbs_down",
    "pointing_up",
    "victory",
    "ok",
    "call",
)

#: Gestures made by moving a hand, decided from its track's path (edge_gesture/motion.py).
MOTION_GESTURES = ("swipe_left", "swipe_right", "swipe_up", "swipe_down", "wave")

DEFAULT_CONFIG_PATHS = (Path("/etc/edge-gesture/config.toml"), Path("config.toml"))
ENV_CONFIG = "EDGE_GESTURE_CONFIG"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_TOPIC_FORBIDDEN = ("+", "#")


Loc = tuple[str | int, ...]

#: Validation context under which sections skip their checks across fields: parse_config runs
#: them itself, on the fields that are valid (see there).
_FIELDS_ONLY = {"fields_only": True}


def _loc(dotted: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


def checks_across(*reads: str):
    """Marks a section's method as a check across its fields. It yields (field, reason) for each
    problem, `field` the dotted path to blame; `reads` are the dotted paths it looks at, so that
    parse_config can run it whenever those are valid, whatever else is wrong."""

    def mark(fn):
        fn.reads = tuple(_loc(r) for r in reads)
        return fn

    return mark


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def checks_across_fields(self) -> list:
        # Along the class's bases too: a shared part (TlsFiles) brings its checks with it.
        names = dict.fromkeys(name for klass in reversed(type(self).__mro__)
                              for name, fn in vars(klass).items() if hasattr(fn, "reads"))
        return [getattr(self, name) for name in names]

    @model_validator(mode="wrap")
    @classmethod
    def _fields_agree(cls, data, handler, info: ValidationInfo):
        # A section built in code (Config(), VlmConfig(...)) must hold together as a parsed one.
        section = handler(data)
        if info.context and info.context.get("fields_only"):
            return section
        problems = [(field, why) for check in section.checks_across_fields() for field, why in check()]
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, [
                {"type": "value_error", "loc": _loc(field), "input": data,
                 "ctx": {"error": ValueError(why)}} for field, why in problems])
        return section


class CaptureConfig(Section):
    source: str = Field(
        "0",
        description=(
            "What to watch: a camera index (`0`), a V4L2 device (`/dev/video0`), a video file, "
            "an `rtsp://`, `http://` or `https://` URL, or `testcard` (a built-in moving pattern)."
        ),
    )
    width: Annotated[int, Field(ge=64, le=7680)] = Field(
        1280,
        description=(
            "Camera width in pixels to ask for; also the test pattern's. A camera that gives "
            "another size is used at that size (logged once). Files and streams keep their own."
        ),
    )
    height: Annotated[int, Field(ge=48, le=4320)] = Field(
        720, description="Camera height in pixels to ask for; also the test pattern's."
    )
    fps: Annotated[float, Field(gt=0, le=240)] = Field(
        30.0, description="Requested camera frame rate; also the test pattern's rate."
    )
    realtime: bool = Field(
        True,
        description=(
            "Video files only: pace reading at the file's frame rate, dropping frames when "
            "processing lags, as a live camera would. `false` reads every frame, none dropped."
        ),
    )
    at_end: Literal["stop", "loop", "wait"] = Field(
        "stop",
        description=(
            "Video files only, when the file ends: `stop` the daemon cleanly, `loop` from the "
            "start, or `wait` (keep running with no frames; health reports the source ended)."
        ),
    )
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.5, description="First wait before reopening a camera or stream that stopped delivering."
    )
    reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = Field(
        10.0, description="Ceiling of the doubling reopen wait."
    )
    read_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        3.0, description="A live source that delivers no frame for this long counts as lost."
    )

    @field_validator("source")
    @classmethod
    def _source_given(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty: give a camera index (0), a /dev/video* device, a video file, "
                             "a URL or testcard")
        return v

    @checks_across("reconnect_initial_s", "reconnect_max_s")
    def _backoff_order(self) -> Iterator[tuple[str, str]]:
        if self.reconnect_max_s < self.reconnect_initial_s:
            yield "reconnect_max_s", (f"must be at least reconnect_initial_s "
                                      f"({self.reconnect_initial_s})")


class HandsConfig(Section):
    backend: Literal["openvino", "mediapipe"] = Field(
        "openvino",
        description=(
            "`openvino`: MediaPipe's palm and landmark models run by OpenVINO on `device`, with a "
            "search over the full frame that finds hands across a room. `mediapipe`: MediaPipe's "
            "own graph on the CPU (the whole frame shrunk to 192x192: hands within arm's length)."
        ),
    )
    device: str = Field(
        "CPU", description="OpenVINO device for the hand models (openvino backend): CPU, GPU, NPU, AUTO."
    )
    fallback_device: str = Field(
        "",
        description="Used (with a warning) when `device` is not present; empty: an absent device is "
        "an error that lists the devices present.",
    )
    threads: Annotated[int, Field(ge=0, le=64)] = Field(
        0, description="CPU threads for the hand models; 0: OpenVINO's choice (all cores)."
    )
    max_num_hands: Annotated[int, Field(ge=1, le=4)] = Field(
        2, description="How many hands are followed at once."
    )
    model_complexity: Literal[0, 1] = Field(
        1, description="MediaPipe hand models: 0 (lite, fastest) or 1 (full, more accurate)."
    )
    int8_models: str = Field(
        "",
        description=(
            "Folder written by `edge-gesture-export --hand-models` (openvino backend): its INT8 "
            "landmark model, checked against the FP32 one at export, replaces MediaPipe's FP32 "
            "model. Empty: FP32. A relative path is taken from the daemon's working directory."
        ),
    )
    min_detection_confidence: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="Palm detector score needed to start following a hand."
    )
    min_tracking_confidence: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="Landmark presence score below which a hand is let go and searched for again."
    )
    min_new_hand_presence: Annotated[float, Field(ge=0, le=1)] = Field(
        0.9,
        description=(
            "Landmark presence score a newly found hand needs (openvino backend). Higher than "
            "`min_tracking_confidence` because the search over small squares proposes many "
            "palm-like things (lips, noses, knuckles of a fist); real hands score above 0.9."
        ),
    )
    min_hand_width: Annotated[float, Field(gt=0.005, le=0.5)] = Field(
        0.035,
        description=(
            "Smallest hand to search for, as its box's share of the frame's width (openvino "
            "backend). With a 78-degree webcam an 18 cm hand is about 0.11 at 1 m, 0.055 at 2 m, "
            "0.037 at 3 m. Smaller means more search squares per pass."
        ),
    )
    search_squares_per_frame: Annotated[int, Field(ge=1, le=64)] = Field(
        8,
        description=(
            "Most palm-detector squares run in a frame while no hand is followed (openvino "
            "backend): a new scene's first whole search takes ceil(squares / this) frames."
        ),
    )
    sweep_squares_per_frame: Annotated[int, Field(ge=1, le=64)] = Field(
        2,
        description=(
            "After a scene's first whole search, squares where the picture changed are searched "
            "first (up to `search_squares_per_frame`) and this many more a frame sweep the rest in "
            "turn, so a still hand is found too (openvino backend). Also the most squares a "
            "search step takes while hands are followed: where the picture changed outside them "
            "first, then one square of the sweep."
        ),
    )
    search_interval_frames: Annotated[int, Field(ge=1, le=300)] = Field(
        3,
        description=(
            "While some hands are followed and fewer than `max_num_hands`, search for more (a "
            "sweep step) only every this many frames (openvino backend)."
        ),
    )
    mirrored: bool = Field(
        False,
        description=(
            "True when frames arrive mirrored (a selfie view flipped left-right by the camera or "
            "driver). Decides how MediaPipe's handedness maps to the person's own left or right."
        ),
    )

    @field_validator("device", "fallback_device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        return _openvino_device(v)


class GestureDescription(Section):
    name: str = Field(description="Gesture name as published (lower case, digits, underscores).")
    description: str = Field(
        description="One line telling the VLM what the gesture looks like.", min_length=3,
        max_length=200,
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be lower case letters, digits and underscores, starting with a letter")
        if v in ("none", "unknown"):
            raise ValueError(f"'{v}' is reserved")
        return v


class GesturesConfig(Section):
    enabled: list[str] = Field(
        default_factory=lambda: list(LANDMARK_GESTURES + MOTION_GESTURES),
        description=(
            "Gestures that may fire events. Landmark gestures: "
            + ", ".join(LANDMARK_GESTURES)
            + "; motion gestures: "
            + ", ".join(MOTION_GESTURES)
            + "; any name from `custom` too."
        ),
        min_length=1,
    )
    min_confidence: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5,
        description="Landmark classifier confidence below which a frame's label counts as unknown.",
    )
    custom: list[GestureDescription] = Field(
        default_factory=list,
        description="Gestures described in words, which only the VLM can recognise.",
    )

    @checks_across("enabled", "custom")
    def _known(self) -> Iterator[tuple[str, str]]:
        known = set(LANDMARK_GESTURES) | set(MOTION_GESTURES) | {g.name for g in self.custom}
        unknown = [g for g in self.enabled if g not in known]
        if unknown:
            yield "enabled", (f"unknown gesture(s) {unknown}: use one of {sorted(known)} or "
                              "describe it in [[gestures.custom]]")
        if len(set(self.enabled)) != len(self.enabled):
            yield "enabled", "a gesture is listed twice"


class MotionConfig(Section):
    """Swipes and waves (edge_gesture/motion.py). Distances are in hand sizes (the palm's longest
    side, about 9 cm on an adult hand), so the rules hold at any distance from the camera."""

    swipe_min_distance: Annotated[float, Field(gt=0, le=50)] = Field(
        2.5, description="A swipe travels at least this many hand sizes along its direction."
    )
    swipe_max_s: Annotated[float, Field(gt=0, le=5)] = Field(
        1.0,
        description="...within this many seconds of one stroke; a hand that has not moved on for "
        "this long starts its next movement afresh.",
    )
    swipe_max_slant: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="Sideways drift allowed, as a share of the distance along (0.5: 27 degrees)."
    )
    return_s: Annotated[float, Field(ge=0, le=5)] = Field(
        0.8,
        description="A stroke the other way that starts within this many seconds of a swipe's "
        "end is the hand coming back: no swipe.",
    )
    reversal: Annotated[float, Field(gt=0, le=5)] = Field(
        0.3, description="Hand sizes back from its furthest point at which a stroke has turned."
    )
    wave_min_strokes: Annotated[int, Field(ge=2, le=20)] = Field(
        4, description="Side-to-side strokes in a row that make a wave (4: there, back, there, back)."
    )
    wave_min_stroke: Annotated[float, Field(gt=0, le=20)] = Field(
        0.5, description="Hand sizes each stroke of a wave covers at least."
    )
    wave_window_s: Annotated[float, Field(gt=0, le=10)] = Field(
        2.5, description="The strokes of a wave fall within this many seconds."
    )
    still_max_speed: Annotated[float, Field(gt=0, le=100)] = Field(
        2.0,
        description="A held pose counts only while the hand moves slower than this many hand "
        "sizes a second (a swipe with an open hand is a swipe, not an open_palm).",
    )
    settle_s: Annotated[float, Field(ge=0, le=10)] = Field(
        0.5,
        description="After a swipe or wave, a pose counts only once the hand has been still this "
        "long (a hand resting where a swipe ended is not showing a pose); the shape it moved with "
        "counts again once the hand has rested this long showing something else, or left view.",
    )
    max_gap_s: Annotated[float, Field(ge=0, le=5)] = Field(
        0.8,
        description="A fast hand is often missed for a few blurred frames: a new hand within this "
        "many seconds continues the path of the one lost hand of its size that could have become it.",
    )


class DecideConfig(Section):
    window_s: Annotated[float, Field(gt=0, le=10)] = Field(
        0.4, description="Smoothing window: a gesture's score is its mean confidence over this span."
    )
    enter_threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.6, description="Smoothed score at which a gesture becomes active."
    )
    exit_threshold: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.3, description="Smoothed score below which the active gesture ends (hysteresis)."
    )
    min_hold_s: Annotated[float, Field(ge=0, le=10)] = Field(
        0.3, description="How long the score must stay above enter_threshold before the event."
    )
    cooldown_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        1.5, description="Least time between two events of the same gesture from the same hand."
    )
    lost_after_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.5, description="A hand unseen for this long is gone: its active gesture ends."
    )

    @checks_across("enter_threshold", "exit_threshold")
    def _hysteresis(self) -> Iterator[tuple[str, str]]:
        if self.exit_threshold >= self.enter_threshold:
            yield "exit_threshold", (f"{self.exit_threshold} must be below enter_threshold "
                                     f"({self.enter_threshold})")


def _topic_filter_free(v: str) -> str:
    """A topic we publish to: no wildcards, no empty first or last level."""
    if any(c in v for c in _TOPIC_FORBIDDEN):
        raise ValueError("may not contain the MQTT wildcards '+' or '#'")
    if v.startswith("/") or v.endswith("/"):
        raise ValueError("may not start or end with '/'")
    return v


class TlsFiles(Section):
    """The certificate files of a TLS client: the server's CA, and our own certificate."""

    ca_file: str = Field(
        "",
        description="PEM file of the CA(s) that signed the server's certificate; empty: the "
        "system's trusted CAs.",
    )
    cert_file: str = Field(
        "", description="Client certificate (PEM), for servers that require one; needs key_file."
    )
    key_file: str = Field(
        "",
        description="Private key (PEM) of cert_file. A bare file name is looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential=).",
    )

    @checks_across("cert_file", "key_file")
    def _pair(self) -> Iterator[tuple[str, str]]:
        if bool(self.cert_file) != bool(self.key_file):
            yield ("key_file" if self.cert_file else "cert_file",
                   "cert_file and key_file go together: set both or neither")


class MqttTlsConfig(TlsFiles):
    enabled: bool = Field(
        False, description="Connect with TLS (brokers usually listen for it on port 8883)."
    )
    insecure_skip_verify: bool = Field(
        False,
        description="Accept any broker certificate and host name. For testing only: anyone on "
        "the network could then pose as the broker. Logged as a warning at every start.",
    )


class MqttDiscoveryConfig(Section):
    enabled: bool = Field(
        True, description="Announce the device to Home Assistant (MQTT device discovery)."
    )
    prefix: str = Field(
        "homeassistant",
        description="Home Assistant's discovery prefix; the announcement goes to "
        "`<prefix>/device/<device_id>/config`.",
        min_length=1,
    )
    status_topic: str = Field(
        "homeassistant/status",
        description="Where Home Assistant says `online` when it starts; the device re-announces "
        "itself then.",
        min_length=1,
    )
    device_name: str = Field(
        "", description="Device name shown in Home Assistant; empty: the device_id."
    )

    @field_validator("prefix", "status_topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        return _topic_filter_free(v)


class MqttAction(Section):
    gesture: str = Field(description="Gesture that triggers the action (one of gestures.enabled).")
    hand: Literal["any", "left", "right"] = Field(
        "any", description="Only when made with this hand (the person's own left or right)."
    )
    topic: str = Field(description="Topic to publish to, e.g. `home/livingroom/light/set`.",
                       min_length=1)
    payload: str = Field(description="Payload to publish, e.g. `ON`.")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of the action message.")
    retain: bool = Field(False, description="Publish the action retained.")

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        return _topic_filter_free(v)


class MqttConfig(Section):
    host: str = Field("localhost", description="Broker host name or address.", min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = Field(1883, description="Broker port.")
    base_topic: str = Field(
        "edge_gesture",
        description="Topic prefix; topics are `<base_topic>/<device_id>/...`.",
        min_length=1,
    )
    client_id: str = Field(
        "", description="MQTT client id; empty means `edge-gesture-<device_id>`."
    )
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = Field(
        30, description="Keepalive interval; the broker declares the daemon gone after 1.5x this."
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of event messages.")
    stats_interval_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        10.0, description="How often `.../stats` is published; 0 turns it off."
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT protocol version: `5` (default) or `3.1.1` for older brokers."
    )
    max_age_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        5.0,
        description=(
            "An event (or action) not delivered within this many seconds of the decision is "
            "dropped and counted, never sent late: a gesture from a minute ago must not switch "
            "a light now. Also the MQTT 5 message expiry interval of events."
        ),
    )
    outbox_size: Annotated[int, Field(ge=1, le=100000)] = Field(
        1000,
        description="Events held while the broker is away; when full, the oldest is dropped.",
    )
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.5, description="First wait before reconnecting to a lost broker (doubles, with jitter)."
    )
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Ceiling of the reconnect wait."
    )
    username: str = Field("", description="User name; empty: connect without one.")
    password: SecretStr | None = Field(
        None,
        description="Password. Better kept out of this file: see password_file and password_env.",
    )
    password_file: str = Field(
        "",
        description="File holding the password (first line). A bare file name is looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential=).",
    )
    password_env: str = Field(
        "EDGE_GESTURE_MQTT_PASSWORD",
        description="Environment variable holding the password, used when neither password "
        "nor password_file is set.",
    )
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig, description="Encrypted connection.")
    discovery: MqttDiscoveryConfig = Field(
        default_factory=MqttDiscoveryConfig, description="Home Assistant MQTT discovery."
    )
    actions: list[MqttAction] = Field(
        default_factory=list,
        description="Messages published alongside an event, for setups without a hub: a gesture "
        "(and hand) mapped to a topic and payload.",
    )

    @field_validator("base_topic")
    @classmethod
    def _topic_ok(cls, v: str) -> str:
        return _topic_filter_free(v)

    @checks_across("password", "password_file")
    def _one_password(self) -> Iterator[tuple[str, str]]:
        if self.password is not None and self.password_file:
            yield "password_file", "set password or password_file, not both"

    @checks_across("username", "password", "password_file")
    def _password_needs_user(self) -> Iterator[tuple[str, str]]:
        if (self.password is not None or self.password_file) and not self.username:
            yield "username", "a password needs a username"

    @checks_across("reconnect_min_s", "reconnect_max_s")
    def _reconnect_order(self) -> Iterator[tuple[str, str]]:
        if self.reconnect_max_s < self.reconnect_min_s:
            yield "reconnect_max_s", f"must be at least reconnect_min_s ({self.reconnect_min_s})"


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="`json` lines (journald, log shippers), `console` for people, or `auto`: "
        "console on a terminal, JSON otherwise.",
    )


def is_loopback(host: str) -> bool:
    """True if only this machine can reach `host`; a name other than localhost is not trusted
    to be, since it may resolve to anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(Section):
    enabled: bool = Field(
        False,
        description=(
            "Serve the live page (`/`, the picture with hands and gestures drawn on it), the "
            "local API (`/api/...`, the stream, a WebSocket) and `/healthz` and `/metrics`. "
            "Off by default: the picture shows people."
        ),
    )
    host: str = Field(
        "127.0.0.1",
        description=(
            "Address to listen on. `127.0.0.1` keeps it on this machine; any other address "
            "(`0.0.0.0` opens it to the network) needs token_file."
        ),
        min_length=1,
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9820, description="TCP port; 0 picks a free one (tests)."
    )
    token_file: str = Field(
        "",
        description=(
            "File holding the access token (first line, at least 16 characters), asked of every "
            "request as `Authorization: Bearer <token>` or `?token=<token>`. A bare file name is "
            "looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=). Empty: no token, "
            "allowed only on a loopback host."
        ),
    )
    stream_fps: Annotated[float, Field(gt=0, le=30)] = Field(
        5.0,
        description="Frames per second of the live picture; pictures are encoded only while "
        "someone watches.",
    )
    stream_width: Annotated[int, Field(ge=160, le=3840)] = Field(
        640, description="Width in pixels of the live picture (a smaller frame is not enlarged)."
    )
    max_connections: Annotated[int, Field(ge=2, le=1000)] = Field(
        20,
        description="Most connections open at once; one more is answered 503 and closed.",
    )
    max_viewers: Annotated[int, Field(ge=1, le=1000)] = Field(
        10,
        description=(
            "Most live streams and WebSockets open at once (a page holds one of each); one more "
            "is answered 503. Below max_connections, so the API still answers."
        ),
    )
    stale_after_s: Annotated[float, Field(gt=0, le=300)] = Field(
        5.0, description="No processed frame for this long makes `/healthz` answer 503."
    )
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0,
        description=(
            "A client that takes longer to send its request, or stays idle longer between "
            "requests, is disconnected; an answer other than a stream or WebSocket that takes "
            "longer is 503."
        ),
    )

    @checks_across("host", "token_file")
    def _token_off_loopback(self) -> Iterator[tuple[str, str]]:
        if not self.token_file and not is_loopback(self.host):
            yield ("token_file", f"host {self.host!r} is reachable from other machines, and the "
                   "page shows the camera's picture: set token_file, or host = \"127.0.0.1\"")

    @checks_across("max_connections", "max_viewers")
    def _room_for_the_api(self) -> Iterator[tuple[str, str]]:
        if self.max_viewers >= self.max_connections:
            yield ("max_viewers", f"must be below max_connections ({self.max_connections}), or "
                   "viewers can take every connection and the API stops answering")


class DatasetConfig(Section):
    enabled: bool = Field(
        False,
        description=(
            "Save the frames and hand crops behind each event, and a sample of frames without "
            "one, for later evaluation or fine-tuning."
        ),
    )
    dir: str = Field(
        "",
        description="Folder for saved frames; empty means `dataset/` in the state directory.",
    )
    quota_mb: Annotated[float, Field(gt=0, le=1_000_000)] = Field(
        500.0, description="Most disk space the folder may take; the oldest files go first."
    )
    max_age_days: Annotated[float, Field(ge=0, le=3650)] = Field(
        30.0, description="Files older than this are deleted; 0 keeps them until the quota."
    )
    no_gesture_sample_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.002,
        description=(
            "Share of processed frames without an event that are saved as negatives "
            "(0.002 is about one every 17 s at 30 fps)."
        ),
    )
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = Field(
        90, description="JPEG quality of saved images."
    )


def _env_dir(var: str) -> str:
    # systemd joins several StateDirectory= entries with ':'; ours is the first.
    return os.environ.get(var, "").split(":")[0]


class ServiceConfig(Section):
    state_dir: str = Field(
        "",
        description=(
            "Where the daemon keeps data (models, saved frames). Empty: $STATE_DIRECTORY "
            "(systemd's StateDirectory=, /var/lib/edge-gesture), else "
            "~/.local/state/edge-gesture."
        ),
    )
    cache_dir: str = Field(
        "",
        description=(
            "OpenVINO compiled-model cache, so restarts skip the GPU/NPU compile. Empty: "
            "$CACHE_DIRECTORY (systemd's CacheDirectory=, /var/cache/edge-gesture), else "
            "~/.cache/edge-gesture."
        ),
    )

    def state_path(self) -> Path:
        return Path(
            self.state_dir or _env_dir("STATE_DIRECTORY")
            or Path.home() / ".local/state/edge-gesture"
        )

    def cache_path(self) -> Path:
        return Path(self.cache_dir or _env_dir("CACHE_DIRECTORY") or Path.home() / ".cache/edge-gesture")


def _openvino_device(v: str) -> str:
    v = v.strip().upper()
    if v and not _DEVICE.match(v):
        raise ValueError(
            "not an OpenVINO device name (e.g. CPU, GPU, GPU.1, NPU, AUTO, AUTO:GPU,CPU, "
            "HETERO:GPU,CPU)"
        )
    return v


_ONE_DEVICE = r"[A-Z]+(?:\.\d+)?"
_DEVICE = re.compile(
    rf"^(?:{_ONE_DEVICE}|(?:AUTO|HETERO|MULTI)(?::{_ONE_DEVICE}(?:,{_ONE_DEVICE})*)?)$"
)


class VlmRemoteConfig(TlsFiles):
    url: str = Field(
        "",
        description="An Open Inference Protocol (KServe v2) server to run part of each decision: "
        "http://host:port or https://host:port (OpenVINO Model Server, `edge-gesture serve`). "
        "Empty: everything runs on this machine.",
    )
    split: Literal["vision", "all"] = Field(
        "vision",
        description="vision: the server runs the vision encoder on the hand crop, this machine "
        "the language model (needs the bundle here too); all: the server makes the whole "
        "decision (no bundle here, for boxes too small for the language model).",
    )
    protocol: Literal["rest", "grpc"] = Field(
        "rest",
        description="rest: the protocol's REST API with its binary-data extension; grpc: its "
        "gRPC API (needs `pip install 'edge-gesture[grpc]'`; url then names the gRPC port).",
    )
    model: str = Field(
        "",
        description="The model's name on the server; empty: edge-gesture-vision (split vision) "
        "or edge-gesture-decision (split all).",
    )
    model_version: str = Field(
        "", description="The model version to ask for; empty: the server's default."
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        2.0,
        description="A request with no answer in this long fails (the decision is dropped; "
        "landmarks carry on; the server is tried again after the backoff).",
    )
    token_file: str = Field(
        "",
        description="File whose first line is sent as `Authorization: Bearer <token>`. A bare "
        "file name is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=).",
    )
    @field_validator("url")
    @classmethod
    def _url_ok(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^/\s:]+(:\d+)?(/\S*)?$", v):
            raise ValueError("give http://host:port or https://host:port")
        return v.rstrip("/")

    @checks_across("url", "ca_file", "cert_file")
    def _tls_needs_https(self) -> Iterator[tuple[str, str]]:
        if self.url.startswith("http://") and (self.ca_file or self.cert_file):
            yield ("url", "ca_file / cert_file are for TLS: use an https:// url")

    def model_name(self) -> str:
        return self.model or ("edge-gesture-decision" if self.split == "all"
                              else "edge-gesture-vision")


class VlmConfig(Section):
    enabled: bool = Field(
        False,
        description="Run SmolVLM on hand crops (needs a bundle from edge-gesture-export).",
    )
    bundle: str = Field(
        "",
        description="The model bundle folder (with edge-gesture-model.json); a relative path is "
        "taken from the daemon's working directory.",
    )
    device: str = Field(
        "CPU",
        description="OpenVINO device for both parts: CPU, GPU, GPU.1, NPU, AUTO, "
        "AUTO:NPU,GPU,CPU or HETERO:GPU,CPU.",
    )
    vision_device: str = Field(
        "", description="Device for the vision encoder; empty: `device` (an iGPU is a good choice)."
    )
    language_device: str = Field(
        "", description="Device for the language model; empty: `device`."
    )
    fallback_device: str = Field(
        "",
        description="Used (with a warning) when a configured device is not present; empty: "
        "an absent device is an error that lists the devices present.",
    )
    num_threads: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="CPU inference threads; 0 lets the runtime choose (all cores)."
    )
    precision: Literal["auto", "f32", "bf16", "f16"] = Field(
        "auto",
        description="CPU inference precision; auto lets OpenVINO choose (bf16 on CPUs with AMX).",
    )
    onnx_provider: Literal["auto", "cpu", "openvino"] = Field(
        "auto",
        description="ONNX bundles: ONNX Runtime's execution provider; auto takes OpenVINO's "
        "when onnxruntime-openvino is installed, else the CPU's.",
    )
    verify_checksums: bool = Field(
        True,
        description="Check every bundle file's sha256 at start-up (about 0.3 s per 250 MB); a "
        "file version that passed is remembered in the cache directory and not hashed again.",
    )
    allow_unverified: bool = Field(
        False,
        description="Load a bundle whose export check against PyTorch failed (its manifest says "
        "verification.passed = false), with a warning at each start; its answers may be wrong. "
        "Off: such a bundle is refused.",
    )
    max_rate_hz: Annotated[float, Field(gt=0, le=30)] = Field(
        2.0, description="Most VLM decisions per second (one runs at a time whatever this says)."
    )
    crop_margin: Annotated[float, Field(ge=0, le=2)] = Field(
        0.25, description="Space around the hand box in the crop, as a share of the box's longer side."
    )
    still_threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        0.015,
        description="A hand whose landmarks moved less than this (mean, in image widths) since "
        "the last decision is unchanged: no new decision, the last answer stays valid.",
    )
    fusion: Literal["assist", "confirm"] = Field(
        "assist",
        description="How VLM answers combine with landmark labels. assist: landmark gestures fire "
        "on landmarks, the VLM's agreement raises confidence; confirm: a landmark gesture fires "
        "only when the VLM agrees. Either way, gestures only the VLM knows ([[gestures.custom]]) "
        "fire on the VLM alone, and with the VLM down landmarks fire alone.",
    )
    min_probability: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="A VLM answer below this probability counts as no answer."
    )
    max_age_s: Annotated[float, Field(gt=0, le=60)] = Field(
        1.5, description="A VLM answer older than this (for a hand that moved) is ignored."
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        3.0,
        description="A decision slower than this is dropped and the VLM counts as too slow "
        "(landmarks only) until one is fast again.",
    )
    backoff_initial_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        5.0, description="First wait before reloading the VLM after a failure."
    )
    backoff_max_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        300.0, description="Ceiling of the doubling reload wait."
    )

    remote: VlmRemoteConfig = Field(
        default_factory=VlmRemoteConfig,
        description="Part or all of each decision on a shared inference server.",
    )

    @field_validator("device", "vision_device", "language_device", "fallback_device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        return _openvino_device(v)

    @checks_across("enabled", "bundle", "remote")
    def _bundle_when_enabled(self) -> Iterator[tuple[str, str]]:
        whole_remote = bool(self.remote.url) and self.remote.split == "all"
        if self.enabled and not self.bundle and not whole_remote:
            yield "bundle", "required when enabled is true (unless remote.split = \"all\")"

    @checks_across("backoff_initial_s", "backoff_max_s")
    def _backoff_order(self) -> Iterator[tuple[str, str]]:
        if self.backoff_max_s < self.backoff_initial_s:
            yield "backoff_max_s", f"must be at least backoff_initial_s ({self.backoff_initial_s})"


class Config(Section):
    #: What parse_config tells the user without refusing the file (an old section name).
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return list(self._notes)

    device_id: str = Field(
        "edge-gesture",
        description="This device's name in topics and Home Assistant; no '+', '#' or '/'.",
        min_length=1,
        max_length=64,
    )
    capture: CaptureConfig = Field(default_factory=CaptureConfig, description="The video source.")
    hands: HandsConfig = Field(default_factory=HandsConfig, description="MediaPipe hand tracking.")
    gestures: GesturesConfig = Field(
        default_factory=GesturesConfig, description="Which gestures fire events."
    )
    decide: DecideConfig = Field(
        default_factory=DecideConfig, description="Smoothing and debouncing of gestures."
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Swipes and waves.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Where events are published.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log output.")
    web: WebConfig = Field(
        default_factory=WebConfig,
        description="The live page, the local HTTP API, `/healthz` and `/metrics`.",
    )
    dataset: DatasetConfig = Field(
        default_factory=DatasetConfig, description="Saving frames behind events for a dataset."
    )
    service: ServiceConfig = Field(
        default_factory=ServiceConfig, description="Folders used when running as a service."
    )
    vlm: VlmConfig = Field(
        default_factory=VlmConfig, description="SmolVLM on hand crops (optional second opinion)."
    )

    @field_validator("device_id")
    @classmethod
    def _device_id_ok(cls, v: str) -> str:
        bad = [c for c in ("+", "#", "/") if c in v]
        if bad:
            raise ValueError(f"may not contain {' '.join(repr(c) for c in bad)} (MQTT topic level)")
        if v.strip() != v:
            raise ValueError("may not start or end with white space")
        return v

    @checks_across("gestures.enabled", "mqtt.actions")
    def _actions_known(self) -> Iterator[tuple[str, str]]:
        for i, action in enumerate(self.mqtt.actions):
            if action.gesture not in self.gestures.enabled:
                yield (f"mqtt.actions.{i}.gesture",
                       f"{action.gesture!r} is not in gestures.enabled {self.gestures.enabled}")

    @property
    def topic_root(self) -> str:
        return f"{self.mqtt.base_topic}/{self.device_id}"


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, the field and the reason.

    From parse_config also: `problems`, one "field: reason" each; `partial`, the config with
    the failed fields at their defaults (None if it could not be built); `unusable`, the dotted
    paths of those fields, so that checks of the rest (check-config's) can still run."""

    def __init__(self, message: str, *, problems: list[str] | None = None,
                 partial: Config | None = None, unusable: frozenset[str] = frozenset()):
        super().__init__(message)
        self.problems = problems if problems is not None else [message]
        self.partial = partial
        self.unusable = unusable


def _describe(e) -> str:
    """One pydantic error as "field: reason (got value)"."""
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    secret = any("password" in str(part) for part in e["loc"])
    if (e["type"] not in ("extra_forbidden", "missing") and not secret
            and not isinstance(e.get("input"), dict)):
        msg += f" (got {e['input']!r})"
    return f"{_dotted(e['loc']) or '(top level)'}: {msg}"


def _set_aside(data: dict, loc: Loc) -> Loc:
    """Removes the value at `loc` (a list whole: its items may lack required keys, which no
    default replaces) so that its default takes its place; returns the path removed."""
    node, at = data, ()
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            break
        at += (part,)
        if at == loc or not isinstance(node[part], dict):
            del node[part]
            return at
        node = node[part]
    if at:  # a required key missing from a table: the table goes
        parent = data
        for part in at[:-1]:
            parent = parent[part]
        del parent[at[-1]]
    return at


def _fields_valid_part(data: dict, err: ValidationError) -> tuple[Config | None, set[Loc]]:
    """The config with every field that failed set aside (at its default), and their paths."""
    if not isinstance(data, dict):
        return None, set()
    data = copy.deepcopy(data)
    set_aside: set[Loc] = set()
    for _ in range(8):  # a removed table can uncover another failure below; each round removes more
        for e in err.errors():
            set_aside.add(_set_aside(data, e["loc"]))
        try:
            return Config.model_validate(data, context=_FIELDS_ONLY), set_aside
        except ValidationError as again:
            err = again
    return None, set_aside


def _disagreements(section: Section, unusable: set[Loc], at: Loc = ()) -> Iterator[str]:
    """The checks across fields of `section` and the sections in it, each run only when no field
    it reads was set aside."""
    def touches(read: Loc, bad: Loc) -> bool:
        n = min(len(read), len(bad))
        return read[:n] == bad[:n]

    for check in section.checks_across_fields():
        if not any(touches(at + read, bad) for read in check.reads for bad in unusable):
            for field, why in check():
                yield f"{_dotted(at + _loc(field))}: {why}"
    for name in type(section).model_fields:
        value = getattr(section, name)
        for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(item, Section):
                yield from _disagreements(item, unusable, at + (name,) + (() if i is None else (i,)))


def parse_config(data: dict, origin: Path | str = "<config>") -> Config:
    """The validated config, or ConfigError listing every problem at once.

    Pydantic runs a model's checks across fields only once all its fields are valid, so an
    unknown gesture name showed up only after a typo beside it was fixed. Here the fields are
    validated first; the failed ones are set aside at their defaults, and each check across
    fields runs on the rest when every field it reads is valid."""
    problems: list[str] = []
    notes: list[str] = []
    data = _renamed_sections(data, problems, notes)
    unusable: set[Loc] = set()
    try:
        cfg = Config.model_validate(data, context=_FIELDS_ONLY)
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
        cfg, unusable = _fields_valid_part(data, err)
    if cfg is not None:
        problems += _disagreements(cfg, unusable)
    if cfg is not None:
        cfg._notes = notes
    if problems:
        raise ConfigError(
            "\n".join([f"{origin}: {len(problems)} problem(s)", *(f"  {p}" for p in problems),
                       *(f"  (note: {n})" for n in notes)]),
            problems=problems, partial=cfg, unusable=frozenset(_dotted(u) for u in unusable),
        )
    return cfg


def _renamed_sections(data: dict, problems: list[str], notes: list[str]) -> dict:
    """Configs written before [web] replaced [health] keep working: the section moves over
    (its keys are all [web]'s), with a note asking for the rename. Both at once is ambiguous."""
    if "health" not in data:
        return data
    if "web" in data:
        problems.append("health: [health] is now part of [web]; move its settings into [web] and "
                        "remove [health]")
        return {k: v for k, v in data.items() if k != "health"}
    notes.append("[health] is now [web] (the same enabled, host, port and stale_after_s, and the "
                 "live page beside /healthz and /metrics): rename the section")
    return {("web" if k == "health" else k): v for k, v in data.items()}


def find_config_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "no config file: pass --config PATH, set EDGE_GESTURE_CONFIG, or create "
        + " or ".join(str(p) for p in DEFAULT_CONFIG_PATHS)
    )


def load_config(path: str | os.PathLike | None = None) -> Config:
    p = find_config_path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(data, p)
