"""The live page and local API: a real aiohttp server on a free loopback port, fed by a real
LiveFeed with the test card's frames and MediaPipe's hands from a gesture photo, asked by real
HTTP and WebSocket clients (urllib, aiohttp's client and raw sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import aiohttp
import cv2
import jsonschema
import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from edge_gesture.capture import Frame
from edge_gesture.config import Config, ConfigError, HandsConfig, WebConfig, parse_config
from edge_gesture.daemon import FramePipeline, FrameResult
from edge_gesture.decide import GestureEvent, Observation
from edge_gesture.errors import StartupError
from edge_gesture.gestures import classify_landmarks
from edge_gesture.hands.geometry import Region
from edge_gesture.observers import FrameReport
from edge_gesture.publish.payloads import event_payload
from edge_gesture.testcard import TestCard
from edge_gesture.vlm.worker import VlmAnswer
from edge_gesture.web import LiveFeed, WebServer
from edge_gesture.web.observer import LiveFeedObserver

REPO = Path(__file__).resolve().parent.parent
EVENT_SCHEMA = json.loads((REPO / "edge_gesture/schemas/event.schema.json").read_text())
TOKEN = "0123456789abcdef-test-token"
BOUNDARY = b"--edge-gesture-frame\r\n"
#: A frame at 30 frames/s: what the frame loop may never lose to a page.
FRAME_S = 1 / 30


# ---------------------------------------------------------------- helpers


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def serving(feed: LiveFeed | None = None, check=lambda: [], metrics=lambda: b"# none\n", **web):
    srv = WebServer(WebConfig(enabled=True, port=0, **web), feed or LiveFeed(), check,
                    metrics).start()
    try:
        yield srv
    finally:
        assert srv.stop(timeout=2.0), "the server's thread did not end"


def get(srv: WebServer, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(srv.url + path.lstrip("/"), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Card:
    """The test card's frames, as capture.Frame, as fast as asked."""

    def __init__(self, width: int = 1280, height: int = 720):
        self.card = TestCard(width, height, fps=1000.0)
        self.index = 0

    def frame(self) -> Frame:
        _, image = self.card.read()
        self.index += 1
        now = time.monotonic()
        return Frame(image, self.index, now, time.time(), now)


NO_HANDS = FrameResult([], [], [], False)


def feed_frame(feed: LiveFeed, frame: Frame, result: FrameResult = NO_HANDS) -> float:
    """frame_done as the daemon calls it; returns how long the call took."""
    t0 = time.perf_counter()
    feed.frame_done(frame, result, {"hands": 0.012, "classify": 0.001, "publish": 0.0002}, 0.02)
    return time.perf_counter() - t0


@contextlib.contextmanager
def frames_flowing(feed: LiveFeed, fps: float = 30.0):
    """Test-card frames handed to the feed from a thread of their own, as the frame loop does."""
    stop = threading.Event()
    card = Card()

    def run():
        while not stop.is_set():
            feed_frame(feed, card.frame())
            stop.wait(1 / fps)

    t = threading.Thread(target=run, name="frames", daemon=True)
    t.start()
    try:
        yield card
    finally:
        stop.set()
        t.join(5)


def published(seq: int, gesture: str = "open_palm", hand: str = "right") -> tuple[GestureEvent, bytes]:
    ev = GestureEvent(gesture, 0.9, "landmarks", hand, time.monotonic(), time.time())
    return ev, event_payload(ev, device_id="web-test", run_id="0badcafe", sequence=seq, wall=ev.wall)


async def read_parts(resp: aiohttp.ClientResponse, n: int) -> list[bytes]:
    """The first `n` JPEGs of a multipart MJPEG answer, parsed from the bytes on the wire."""
    buf, parts = b"", []
    while len(parts) < n:
        start = buf.find(BOUNDARY)
        head_end = buf.find(b"\r\n\r\n", start) if start >= 0 else -1
        if head_end >= 0:
            m = re.search(rb"Content-Length: (\d+)", buf[start:head_end])
            assert m, f"part without Content-Length: {buf[start:head_end]!r}"
            body_start, length = head_end + 4, int(m.group(1))
            if len(buf) >= body_start + length:
                parts.append(buf[body_start:body_start + length])
                buf = buf[body_start + length:]
                continue
        chunk = await resp.content.readany()
        if not chunk:
            raise AssertionError(f"stream ended after {len(parts)} part(s)")
        buf += chunk
    return parts


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def run(coro, timeout: float = 60.0):
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def palm(photo_hands):
    """A gesture photo, the open palm MediaPipe finds in it (as track 3) and its observation."""
    for path in photo_hands.photos("open_palm"):
        for hand in photo_hands.hands(path):
            guess = classify_landmarks(hand.landmarks, hand.handedness, aspect=hand.aspect)
            if guess.label == "open_palm" and guess.confidence >= 0.8:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                hand = replace(hand, track_id=3)
                obs = Observation(3, hand.handedness, "open_palm", guess.confidence, "landmarks")
                return image, hand, obs
    raise AssertionError("no open_palm photo the classifier reads right")


# ---------------------------------------------------------------- config


def test_a_host_other_than_loopback_without_a_token_is_refused_naming_web_token_file():
    for host in ("0.0.0.0", "192.168.1.20", "::", "gesture.local"):
        with pytest.raises(ConfigError, match=r"web\.token_file: host .* reachable from other"):
            parse_config({"web": {"host": host}}, "test.toml")
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert parse_config({"web": {"host": host}}, "test.toml").web.host == host
    cfg = parse_config({"web": {"host": "0.0.0.0", "token_file": "web_token"}}, "test.toml")
    assert cfg.web.token_file == "web_token"


def test_viewers_must_leave_room_for_the_api():
    with pytest.raises(ConfigError, match=r"web\.max_viewers: must be below max_connections"):
        parse_config({"web": {"max_connections": 10, "max_viewers": 10}}, "test.toml")


def test_a_missing_or_short_token_file_stops_the_start_naming_web_token_file(tmp_path, monkeypatch):
    with pytest.raises(StartupError, match=r"web\.token_file: no such file"):
        WebServer(WebConfig(token_file=str(tmp_path / "nope")), LiveFeed(), list, bytes)
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(StartupError, match=r"web\.token_file: .* shorter than 16"):
        WebServer(WebConfig(token_file=str(short)), LiveFeed(), list, bytes)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(StartupError, match=r"web\.token_file 'web_token' is a bare name"):
        WebServer(WebConfig(token_file="web_token"), LiveFeed(), list, bytes)
    # systemd's LoadCredential= puts it in $CREDENTIALS_DIRECTORY.
    (tmp_path / "web_token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert WebServer(WebConfig(token_file="web_token"), LiveFeed(), list, bytes).token == TOKEN


def test_a_port_in_use_is_an_error_naming_web_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = WebServer(WebConfig(port=port), LiveFeed(), list, bytes)
        with pytest.raises(StartupError, match=rf"web\.port: 127\.0\.0\.1:{port} is already in use"):
            srv.start()
        assert srv.stop()


# ---------------------------------------------------------------- /healthz and /metrics


@pytest.mark.parametrize("reasons", [[], ["video source ended", "MQTT broker not connected"]])
def test_healthz_and_metrics_answer_as_the_health_server_did(reasons):
    # What probes and scrapers were written against when [health] served these two.
    metrics = lambda: b"# HELP edge_gesture_frames Frames.\nedge_gesture_frames 3.0\n"  # noqa: E731
    code = 503 if reasons else 200
    with serving(check=lambda: reasons, metrics=metrics) as srv:
        status, headers, body = get(srv, "healthz")
        assert (status, headers["Content-Type"]) == (code, "text/plain; charset=utf-8")
        assert body == ("".join(r + "\n" for r in reasons) or "ok\n").encode()
        status, headers, body = get(srv, "healthz", {"Accept": "application/json"})
        assert (status, headers["Content-Type"]) == (code, "application/json")
        assert json.loads(body) == {"ok": not reasons, "problems": reasons}
        status, headers, body = get(srv, "metrics")
        assert (status, headers["Content-Type"], body) == (200, CONTENT_TYPE_LATEST, metrics())


def test_a_failing_health_check_is_a_503_naming_it():
    def broken():
        raise RuntimeError("stats gone")

    with serving(check=broken) as srv:
        status, _, body = get(srv, "healthz")
    assert status == 503
    assert body == b"health check failed: RuntimeError: stats gone\n"


def test_an_answer_slower_than_request_timeout_s_is_a_503_not_a_hang():
    release = threading.Event()
    with serving(check=lambda: release.wait(30) and [], request_timeout_s=0.3) as srv:
        try:
            status, _, body = get(srv, "healthz")
        finally:
            release.set()
    assert status == 503
    assert b"web.request_timeout_s" in body


# ---------------------------------------------------------------- the API


def test_api_events_returns_the_published_json_in_order_with_limit():
    feed = LiveFeed()
    sent = [published(i, gesture=g) for i, g in enumerate(["fist", "open_palm", "victory", "ok", "call"], 1)]
    with serving(feed) as srv:
        assert json.loads(get(srv, "api/events")[2]) == []
        for ev, payload in sent:
            feed.event_published(ev, payload)
        status, headers, body = get(srv, "api/events")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        events = json.loads(body)
        assert events == [json.loads(p) for _, p in sent]  # the MQTT JSON, oldest first
        for e in events:
            jsonschema.validate(e, EVENT_SCHEMA)
        last3 = json.loads(get(srv, "api/events?limit=3")[2])
        assert [e["sequence"] for e in last3] == [3, 4, 5]
        assert json.loads(get(srv, "api/events?limit=0")[2]) == []
        status, _, body = get(srv, "api/events?limit=many")
        assert status == 400 and b"limit" in body


def test_api_state_stats_and_config_show_what_the_feed_was_given(palm):
    image, hand, obs = palm
    feed = LiveFeed()
    secret = parse_config({"mqtt": {"username": "u", "password": "hunter2-secret"}}, "test.toml")
    feed.set_config(secret)
    with serving(feed) as srv:
        feed.frame_done(Frame(image, 7, time.monotonic(), time.time(), time.monotonic()),
                        FrameResult([hand], [obs], [], True), {"hands": 0.01}, 0.03)
        feed.set_state({hand.handedness: "open_palm"})
        feed.set_stats({"fps_processed": 29.5, "vlm_latency_ms": None}, {"connected": True, "sent": 4})
        state = json.loads(get(srv, "api/state")[2])
        stats = json.loads(get(srv, "api/stats")[2])
        status, _, config_body = get(srv, "api/config")
    assert state["hands"][hand.handedness] == "open_palm"
    assert set(state["hands"]) == {"left", "right"}
    assert state["tracks"] == [{"track": 3, "hand": hand.handedness, "box": list(hand.bbox),
                                "label": "open_palm", "confidence": round(obs.confidence, 3),
                                "source": "landmarks", "active": "open_palm", "vlm": None}]
    assert state["search"] == {"whole_frame": False, "squares": []}
    assert state["frame"]["index"] == 7
    assert state["frame"]["width"] == image.shape[1]
    assert stats["stats"]["fps_processed"] == 29.5 and stats["mqtt"] == {"connected": True, "sent": 4}
    assert status == 200
    assert b"hunter2-secret" not in config_body
    assert json.loads(config_body)["mqtt"]["username"] == "u"


def test_the_feed_observes_the_daemons_frame_reports(palm):
    image, hand, obs = palm
    feed = LiveFeed()
    observer = LiveFeedObserver(feed)
    frame = Frame(image, 4, time.monotonic(), 1_800_000_000.0, time.monotonic())

    def report(state, changed):
        return FrameReport(frame, [hand], [obs], [], state, changed, {"hands": 0.02}, 0.05)

    observer.frame_done(report({hand.handedness: "open_palm"}, True))
    observer.frame_done(report({hand.handedness: "fist"}, False))  # not a change: not taken
    state = feed.state()
    assert state["hands"][hand.handedness] == "open_palm"
    assert state["changed_at"] == 1_800_000_000.0
    assert [t["label"] for t in state["tracks"]] == ["open_palm"]
    assert feed.latest_frame().frame is frame and feed.latest_frame().number == 2


def test_figures_count_processed_and_dropped_frames_per_second():
    clock = [1000.2]
    feed = LiveFeed(clock=lambda: clock[0])
    card = Card(320, 240)
    for index in (1, 2, 5, 6):  # frames 3 and 4 were read but replaced before the loop took them
        f = card.frame()
        feed.frame_done(replace(f, index=index), NO_HANDS, {"hands": 0.010, "decide": 0.002}, 0.03)
    clock[0] = 1002.5  # second 1000 has ended, 1001 passed with no frame at all
    rows, last = feed.figures_since(None)
    assert [(r["processed"], r["dropped"]) for r in rows] == [(4, 2), (0, 0)]
    assert rows[0]["latency_ms"] == {"hands": 10.0, "decide": 2.0}
    assert rows[0]["end_to_end_ms"] == 30.0
    assert rows[1]["end_to_end_ms"] is None  # a stall, shown as such
    assert feed.figures_since(last) == ([], last)


def test_snapshot_is_a_jpeg_of_the_frame_size_asked():
    feed = LiveFeed()
    with serving(feed) as srv:
        status, _, body = get(srv, "api/snapshot.jpg")
        assert status == 503 and b"no frame" in body  # nothing processed yet
        card = Card(1280, 720)
        feed_frame(feed, card.frame())
        status, headers, body = get(srv, "api/snapshot.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert decode(body).shape == (720, 1280, 3)
        assert decode(get(srv, "api/snapshot.jpg?width=320&overlay=1")[2]).shape == (180, 320, 3)
        assert get(srv, "api/snapshot.jpg?width=0")[0] == 400


def test_the_overlay_draws_the_hand_where_mediapipe_found_it(palm):
    image, hand, obs = palm
    untouched = image.copy()
    feed = LiveFeed()
    with serving(feed) as srv:
        feed.frame_done(Frame(image, 1, time.monotonic(), time.time(), time.monotonic()),
                        FrameResult([hand], [obs], [], True), {}, 0.0)
        feed.set_state({hand.handedness: "open_palm"})
        plain = decode(get(srv, "api/snapshot.jpg")[2]).astype(np.int16)
        drawn = decode(get(srv, "api/snapshot.jpg?overlay=1")[2]).astype(np.int16)
    x0, y0, x1, y1 = hand.bbox
    changed = np.abs(drawn - plain).max(axis=2) > 40
    assert changed[y0:y1, x0:x1].mean() > 0.02, "no landmarks drawn inside the hand's box"
    # Away from the hand and its labels, the picture is the photo's.
    h, w = changed.shape
    away = np.ones_like(changed)
    away[max(0, y0 - 120):min(h, y1 + 10), max(0, x0 - 10):min(w, x1 + 260)] = False
    assert changed[away].mean() < 0.001
    assert np.array_equal(image, untouched), "the overlay was drawn on the daemon's frame"


def overlay_of(feed: LiveFeed, report: FrameReport) -> tuple[np.ndarray, dict]:
    """The snapshot with overlay of `report` as the daemon's LivePage would show it, and the
    state the API gives for it."""
    LiveFeedObserver(feed).frame_done(report)
    with serving(feed) as srv:
        drawn = decode(get(srv, "api/snapshot.jpg?overlay=1")[2]).astype(np.int16)
        state = json.loads(get(srv, "api/state")[2])
    return drawn, state


def outline(shape: tuple[int, int], square: Region, width: int = 2) -> np.ndarray:
    """The pixels within `width` of a square's sides."""
    x0, y0 = round(square.cx - square.size / 2), round(square.cy - square.size / 2)
    x1, y1 = round(square.cx + square.size / 2), round(square.cy + square.size / 2)
    inside = np.zeros(shape, bool)
    inside[y0 - width:y1 + width + 1, x0 - width:x1 + width + 1] = True
    inside[y0 + width + 1:y1 - width, x0 + width + 1:x1 - width] = False
    return inside


def test_the_overlay_and_api_state_show_where_the_hand_finder_searched():
    image = np.full((480, 640, 3), 128, np.uint8)  # a plain grey room: only the overlay shows
    frame = Frame(image, 9, 12.0, time.time(), time.monotonic())
    squares = (Region(120.0, 140.0, 160.0), Region(420.0, 300.0, 200.0))

    def report(search=()):
        return FrameReport(frame, [], [], [], {}, False, {"hands": 0.01}, 0.02,
                           search_squares=search)

    plain, _ = overlay_of(LiveFeed(), report())
    drawn, state = overlay_of(LiveFeed(), report(squares))
    changed = np.abs(drawn - plain).max(axis=2) > 40
    sides = outline(changed.shape, squares[0]) | outline(changed.shape, squares[1])
    for square in squares:
        assert changed[outline(changed.shape, square)].mean() > 0.3, f"{square} not drawn"
    assert changed[~sides].mean() < 0.001, "the overlay drew elsewhere than the squares"
    assert state["search"] == {"whole_frame": False,
                               "squares": [[40, 60, 200, 220], [320, 200, 520, 400]]}


def test_with_the_mediapipe_backend_the_state_says_the_whole_frame_is_searched():
    feed = LiveFeed()
    feed.set_config(Config(hands=HandsConfig(backend="mediapipe")))
    _, state = overlay_of(feed, FrameReport(Card(320, 240).frame(), [], [], [], {}, False, {}, 0.0))
    assert state["search"] == {"whole_frame": True, "squares": []}


def test_the_openvino_finders_search_squares_reach_the_page_and_mediapipes_none():
    """The real hand stages on the test card: the OpenVINO finder's first frame of a scene
    searches its first squares (there is no hand to follow yet), and the frame's result carries
    them to the page; MediaPipe's graph searches the whole frame itself and names no square."""
    card = Card(1280, 720)
    frame = card.frame()
    openvino = FramePipeline(Config())
    try:
        result = openvino.process(frame)
        searched = list(openvino.tracker.search_squares)
    finally:
        openvino.close()
    assert len(searched) == Config().hands.search_squares_per_frame
    assert list(result.search_squares) == searched
    feed = LiveFeed()
    feed.frame_done(frame, result, {}, 0.0)
    state = feed.state()["search"]
    assert len(state["squares"]) == len(searched) and not state["whole_frame"]
    for box, square in zip(state["squares"], searched, strict=True):
        assert box[0] <= square.cx <= box[2] and box[1] <= square.cy <= box[3]
        assert box[2] - box[0] == pytest.approx(square.size, abs=1)

    mediapipe = FramePipeline(Config(hands=HandsConfig(backend="mediapipe")))
    try:
        assert mediapipe.process(card.frame()).search_squares == ()
    finally:
        mediapipe.close()


def test_the_vlms_latest_answer_shows_per_track_beside_the_hands_label(palm):
    image, hand, obs = palm
    frame = Frame(image, 5, 100.0, time.time(), time.monotonic())
    answer = VlmAnswer(hand.track_id, "thumbs_up", 0.8734, t=98.5, latency=0.4)

    def report(answers):
        return FrameReport(frame, [hand], [obs], [], {}, False, {"hands": 0.01}, 0.02,
                           vlm_answers=answers)

    plain, without = overlay_of(LiveFeed(), report({}))
    drawn, state = overlay_of(LiveFeed(), report({hand.track_id: answer}))
    assert without["tracks"][0]["vlm"] is None
    assert state["tracks"][0]["vlm"] == {"label": "thumbs_up", "probability": 0.873, "age_s": 1.5}
    # One more line of text in the hand's label, which sits on the box's top-left corner.
    changed = np.abs(drawn - plain).max(axis=2) > 40
    x0, y0, x1, _ = hand.bbox
    h, w = changed.shape
    near_label = np.zeros_like(changed)
    near_label[max(0, y0 - 140):min(h, y0 + 10), max(0, x0 - 10):min(w, x0 + 400)] = True
    assert changed[near_label].sum() > 200, "no VLM answer drawn by the hand's label"
    assert changed[~near_label].mean() < 0.001


def test_the_page_is_served_whole_with_nothing_from_elsewhere():
    with serving() as srv:
        status, headers, body = get(srv, "/")
    html = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<script>" in html and "<style>" in html  # inline: one request, the token asked once
    assert not re.search(r"https?://", html), "the page refers to another site"
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    for needed in ("/stream.mjpg", "/ws", "/api/snapshot.jpg", "/api/config", "/healthz", "<canvas"):
        assert needed in html


# ---------------------------------------------------------------- access


def test_a_token_is_asked_of_every_request_and_websocket(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    feed = LiveFeed()
    feed_frame(feed, Card(320, 240).frame())
    with serving(feed, token_file=str(token_file)) as srv:
        for path in ("/", "healthz", "metrics", "api/state", "api/events", "api/stats",
                     "api/config", "api/snapshot.jpg", "stream.mjpg"):
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                            {"Authorization": f"Basic {TOKEN}"}):
                status, _, body = get(srv, path, headers)
                assert (path, status) == (path, 401)
                assert TOKEN.encode() not in body and len(body) < 40  # nothing leaked
            assert get(srv, f"{path}?token=not-{TOKEN}")[0] == 401
        assert get(srv, "api/state", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(srv, f"api/state?token={TOKEN}")[0] == 200
        assert get(srv, f"?token={TOKEN}")[0] == 200

        async def websockets():
            async with aiohttp.ClientSession() as s:
                for url in (srv.url + "ws", srv.url + "ws?token=nope"):
                    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                        await s.ws_connect(url)
                    assert refused.value.status == 401
                async with s.ws_connect(srv.url + f"ws?token={TOKEN}") as ws:
                    assert (await ws.receive_json(timeout=10))["type"] == "hello"
                async with s.ws_connect(srv.url + "ws",
                                        headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                    assert (await ws.receive_json(timeout=10))["type"] == "hello"

        run(websockets())


def test_without_a_token_other_sites_cannot_read_the_page():
    with serving() as srv:
        # DNS rebinding: another site's name pointed at 127.0.0.1 sends its own Host.
        assert get(srv, "api/state", {"Host": f"evil.example:{srv.port}"})[0] == 403
        assert get(srv, "api/state", {"Host": f"localhost:{srv.port}"})[0] == 200
        status, headers, _ = get(srv, "api/state", {"Origin": "http://evil.example"})
        assert status == 200 and not [h for h in headers if h.lower().startswith("access-control")]

        async def cross_site_websocket():
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await s.ws_connect(srv.url + "ws", origin="http://evil.example")
                assert refused.value.status == 403
                async with s.ws_connect(srv.url + "ws", origin=srv.url.rstrip("/")) as ws:
                    assert (await ws.receive_json(timeout=10))["type"] == "hello"

        run(cross_site_websocket())


# ---------------------------------------------------------------- the WebSocket


def test_the_websocket_pushes_events_and_state_as_they_happen():
    feed = LiveFeed()
    early = published(1, gesture="fist")
    feed.event_published(*early)
    with serving(feed) as srv:

        async def watch():
            async with aiohttp.ClientSession() as s, s.ws_connect(srv.url + "ws") as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["type"] == "hello"
                assert hello["events"] == [json.loads(early[1])]
                for seq in (2, 3):
                    ev, payload = published(seq, gesture="victory")
                    # From another thread, as the publisher does.
                    threading.Thread(target=feed.event_published, args=(ev, payload)).start()
                    got = await next_of(ws, "event")
                    assert got["event"] == json.loads(payload)
                    jsonschema.validate(got["event"], EVENT_SCHEMA)
                threading.Thread(target=feed.set_state, args=({"left": "fist"},)).start()
                assert (await next_of(ws, "state"))["state"]["hands"] == {"left": "fist", "right": None}
                feed.set_stats({"fps_processed": 12.0}, {"connected": False})
                got = await next_of(ws, "stats")
                assert got["stats"] == {"fps_processed": 12.0} and got["mqtt"] == {"connected": False}

        run(watch())


async def next_of(ws, kind: str, timeout: float = 5.0) -> dict:
    """The next message of `kind` within `timeout` s (figures come every second between)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == kind:
                return msg


def test_the_websocket_pushes_figures_every_second_while_frames_flow():
    feed = LiveFeed()
    with serving(feed) as srv, frames_flowing(feed):

        async def watch():
            async with aiohttp.ClientSession() as s, s.ws_connect(srv.url + "ws") as ws:
                seen = []
                while sum(r["processed"] for r in seen) == 0:
                    seen += (await next_of(ws, "figures", timeout=5))["figures"]
                return seen

        rows = run(watch())
    assert all(set(r) >= {"t", "processed", "dropped", "latency_ms", "end_to_end_ms"} for r in rows)
    assert max(r["latency_ms"].get("hands", 0) for r in rows) == 12.0


# ---------------------------------------------------------------- the stream


def test_the_stream_yields_distinct_jpegs_at_stream_width():
    feed = LiveFeed()
    with serving(feed, stream_fps=10, stream_width=480) as srv, frames_flowing(feed):

        async def watch():
            async with aiohttp.ClientSession() as s, s.get(srv.url + "stream.mjpg") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
                return await read_parts(resp, 3)

        parts = run(watch())
    images = [decode(p) for p in parts]
    assert all(im.shape == (270, 480, 3) for im in images)
    assert len({p for p in parts}) == 3, "the stream repeated a picture"


def test_pictures_are_encoded_only_while_someone_watches():
    feed = LiveFeed()
    with serving(feed, stream_fps=20) as srv:
        card = Card(640, 360)
        for _ in range(15):  # three quarters of a second of frames, with nobody watching
            feed_frame(feed, card.frame())
            time.sleep(0.05)
        assert srv.picture.encoded == 0
        with frames_flowing(feed):

            async def watch():
                async with aiohttp.ClientSession() as s, s.get(srv.url + "stream.mjpg") as resp:
                    await read_parts(resp, 2)

            run(watch())
            wait_until(lambda: srv.viewers.open == 0, what="the viewer to be let go")
            after = srv.picture.encoded
            assert after >= 2
            time.sleep(0.5)  # ten stream periods with frames flowing and nobody watching
            assert srv.picture.encoded <= after + 1  # at most the one in flight as it left


def test_fifty_viewers_are_bounded_and_health_still_answers():
    feed = LiveFeed()
    with serving(feed, stream_fps=10, max_connections=20, max_viewers=10) as srv, \
            frames_flowing(feed):

        async def crowd():
            conn = aiohttp.TCPConnector(limit=0, force_close=True)
            async with aiohttp.ClientSession(connector=conn) as s:
                async def one():
                    try:
                        resp = await s.get(srv.url + "stream.mjpg")
                    except aiohttp.ClientConnectionError:
                        return "cut", None  # the connection cap closing it before the answer
                    if resp.status == 200:
                        return "watching", resp
                    await resp.read()
                    return resp.status, None

                results = await asyncio.gather(*(one() for _ in range(50)))
                watching = [r for kind, r in results if kind == "watching"]
                turned_away = [kind for kind, _ in results if kind != "watching"]
                assert 1 <= len(watching) <= 10
                assert set(turned_away) <= {503, "cut"} and len(turned_away) == 50 - len(watching)
                for resp in watching:  # every admitted viewer is really served
                    assert len(await read_parts(resp, 1)) == 1
                async with s.get(srv.url + "healthz") as health:
                    assert health.status == 200
                for resp in watching:
                    resp.close()

        run(crowd())
        wait_until(lambda: srv.viewers.open == 0, what="every viewer slot to come back")
        assert get(srv, "healthz")[0] == 200


def test_a_viewer_that_disconnects_mid_stream_breaks_nothing():
    feed = LiveFeed()
    with serving(feed, stream_fps=15) as srv, frames_flowing(feed):
        for _ in range(3):
            raw = socket.create_connection((srv.host, srv.port), timeout=10)
            raw.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            got = b""
            while b"\xff\xd8" not in got:  # into the first JPEG
                got += raw.recv(4096)
            # Gone without a goodbye: a reset, as a crashed browser or a dropped Wi-Fi leaves it.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
        wait_until(lambda: srv.viewers.open == 0, what="the dropped viewers' slots")
        assert get(srv, "healthz")[0] == 200

        async def watch():
            async with aiohttp.ClientSession() as s, s.get(srv.url + "stream.mjpg") as resp:
                return await read_parts(resp, 2)

        assert len(run(watch())) == 2


def test_idle_connections_are_capped_and_cut_after_request_timeout_s():
    # 3 s, not less: on a loaded 2-core machine the four connections may take longer than half a
    # second to be accepted, and one cut before the last is counted never shows four open.
    with serving(max_connections=4, max_viewers=2, request_timeout_s=3.0) as srv:
        # Half a request each, never finished: the classic way to hold a server's slots.
        idle = [socket.create_connection((srv.host, srv.port), timeout=10) for _ in range(4)]
        for s in idle:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            wait_until(lambda: srv.site.open_connections() == 4, what="the idle connections")
            status, _, body = get(srv, "healthz")
            assert status == 503 and b"too many connections" in body
            for s in idle:  # the server hangs up on each within the timeout
                assert s.recv(1024) == b""
            wait_until(lambda: get(srv, "healthz")[0] == 200, what="the server to answer again")
        finally:
            for s in idle:
                s.close()


# ---------------------------------------------------------------- the frame loop is never held


def test_frame_done_never_waits_for_five_stream_viewers(palm):
    image, hand, obs = palm
    big = cv2.resize(image, (1280, 720))
    sx, sy = 1280 / image.shape[1], 720 / image.shape[0]
    x0, y0, x1, y1 = hand.bbox
    hand = replace(hand, frame_size=(1280, 720),
                   bbox=(round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)))
    feed = LiveFeed()
    durations: list[float] = []
    with serving(feed, stream_fps=10, stream_width=640) as srv:
        got = [0] * 5
        watching = threading.Event()
        done = threading.Event()

        async def viewers():
            async with aiohttp.ClientSession() as s:
                async def one(i):
                    async with s.get(srv.url + "stream.mjpg") as resp:
                        while not done.is_set():
                            await read_parts(resp, 1)
                            got[i] += 1
                            if min(got) >= 1:
                                watching.set()

                async with s.ws_connect(srv.url + "ws") as ws:
                    tasks = [asyncio.create_task(one(i)) for i in range(5)]
                    while not done.is_set():
                        with contextlib.suppress(TimeoutError):
                            await ws.receive(timeout=0.2)
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)

        watchers = threading.Thread(target=run, args=(viewers(),), daemon=True)
        watchers.start()
        card = Card(1280, 720)
        feed_frame(feed, card.frame())
        assert watching.wait(20), "the five viewers got no picture"
        for i in range(90):  # three seconds of frames at 30 frames/s
            frame = replace(card.frame(), image=big)  # the photo's hand, at 1280x720
            result = FrameResult([hand], [obs], [], i % 10 == 0)
            durations.append(feed_frame(feed, frame, result))
            if i % 10 == 0:
                t0 = time.perf_counter()
                feed.event_published(*published(i + 1))
                feed.set_state({hand.handedness: "open_palm" if i % 20 else None})
                durations.append(time.perf_counter() - t0)
            time.sleep(FRAME_S)
        done.set()
        watchers.join(20)
    assert min(got) >= 5, f"viewers were not watching while frames came: {got}"
    # The frame loop hands over references; encoding and sending are the server's. A typical
    # call is tens of microseconds, so per-frame encoding (milliseconds) shows in the median;
    # and even with the GIL's 5 ms switch on a busy 2-core machine, no call costs a frame.
    typical = sorted(durations)[len(durations) // 2]
    assert typical < 0.001, f"typical frame_done/event_published: {typical * 1000:.2f} ms"
    assert max(durations) < FRAME_S, f"slowest call: {max(durations) * 1000:.1f} ms"


def test_frame_done_and_events_return_while_the_server_is_frozen():
    feed = LiveFeed()
    with serving(feed) as srv:
        card = Card(640, 360)
        feed_frame(feed, card.frame())

        async def listen(ready: threading.Event):
            async with aiohttp.ClientSession() as s, s.ws_connect(srv.url + "ws") as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "hello"
                ready.set()
                return [(await next_of(ws, "event", timeout=20))["event"]["sequence"] for _ in range(5)]

        ready = threading.Event()
        results = []
        client = threading.Thread(target=lambda: results.append(run(listen(ready))), daemon=True)
        client.start()
        assert ready.wait(20)
        frozen_for = 2.0
        srv._loop.call_soon_threadsafe(time.sleep, frozen_for)  # the server's loop stops dead
        time.sleep(0.1)
        slowest = 0.0
        for i in range(30):
            slowest = max(slowest, feed_frame(feed, card.frame()))
            if i % 6 == 0:
                t0 = time.perf_counter()
                feed.event_published(*published(i // 6 + 1))
                feed.set_stats({"fps_processed": 30.0})
                slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(FRAME_S)
        # Had any call waited for the server, it would have taken the rest of the freeze.
        assert slowest < frozen_for / 4
        client.join(30)
    assert results == [[1, 2, 3, 4, 5]]  # and nothing was lost meanwhile


# ---------------------------------------------------------------- stopping


def test_stop_ends_streams_and_websockets_within_its_timeout():
    feed = LiveFeed()
    with frames_flowing(feed):
        srv = WebServer(WebConfig(enabled=True, port=0, stream_fps=10), feed, list, bytes).start()
        stopped = []

        async def watch():
            async with aiohttp.ClientSession() as s:
                resp = await s.get(srv.url + "stream.mjpg")
                await read_parts(resp, 1)
                ws = await s.ws_connect(srv.url + "ws")
                await ws.receive_json(timeout=10)
                loop = asyncio.get_running_loop()
                stopped.append(await loop.run_in_executor(None, srv.stop, 1.0))
                with pytest.raises(AssertionError, match="stream ended"):
                    async with asyncio.timeout(5):
                        await read_parts(resp, 100)
                msg = await ws.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.CLOSING)

        run(watch())
    assert stopped == [True]
    with pytest.raises(OSError):
        socket.create_connection((srv.host, srv.port), timeout=2).close()
