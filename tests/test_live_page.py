"""The live page in a real browser (Debian's chromium, driven by Selenium through chromedriver)
against `edge-gesture run` on a clip of gestures: the events appear in the timeline, the picture
moves, a client without the token is turned away, and the API's events match the event schema.
A screenshot of the page is kept in test-artifacts/ (a CI artifact)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from tests.gesture_video import gesture_sequence, write_video
from tests.mosquitto import free_port
from tests.mqtt_recorder import Recorder

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "live-page-test-token-0123456789abcdef"
LABELS = ["fist", "victory", "thumbs_up"]


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "script/test installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    options.binary_location = browser
    return webdriver.Chrome(service=Service(driver), options=options)


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except urllib.error.URLError:  # not listening yet
        return 0, b""


def wait(what: str, timeout: float, probe):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


@pytest.fixture
def daemon_with_page(tmp_path, broker, gesture_data):
    clip = write_video(tmp_path / "gestures.mp4",
                       gesture_sequence(gesture_data, LABELS, hold=1.5, gap=1.0), 15.0)
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    cfg = tmp_path / "page.toml"
    cfg.write_text(f"""
device_id = "page"
[capture]
source = "{clip}"
at_end = "loop"
[mqtt]
port = {broker.port}
stats_interval_s = 1.0
[web]
enabled = true
port = {port}
token_file = "{tmp_path / 'token'}"
""")
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge_gesture", "run", "--config", str(cfg)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait("web page", 90, lambda: proc.poll() is None and get(f"{base}/healthz", TOKEN)[0]
             in (200, 503) or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_the_page_shows_events_and_a_moving_picture_and_keeps_strangers_out(daemon_with_page,
                                                                            broker):
    base = daemon_with_page
    rec = Recorder(broker.port, "edge_gesture/page/event")
    browser = chromium()
    try:
        browser.get(f"{base}/?token={TOKEN}")
        # The timeline fills as events are published: the gestures of the clip, by name.
        rows = wait("events in the timeline", 90, lambda: [
            r.text for r in browser.find_elements("css selector", "#events tbody tr")
            if any(label in r.text for label in LABELS)])
        assert rows
        # The live picture moves: two screenshots of it a second apart differ.
        picture = browser.find_element("id", "picture")
        wait("a live picture", 30, lambda: browser.execute_script(
            "return arguments[0].naturalWidth", picture) > 0)
        first = picture.screenshot_as_png
        changed = wait("the picture to change", 20,
                       lambda: picture.screenshot_as_png != first)
        assert changed
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "live-page.png"))
    finally:
        browser.quit()

    # A second client without the token, or with a wrong one, gets nothing.
    for token in (None, "wrong-token-wrong-token-wrong-token"):
        for path in ("/", "/api/events", "/api/snapshot.jpg", "/stream.mjpg"):
            code, body = get(base + path, token)
            assert code == 401, (path, code)
            assert b"fist" not in body and b"JFIF" not in body
    # The API's events are the MQTT events, schema and all, newest last.
    code, body = get(f"{base}/api/events?limit=50", TOKEN)
    assert code == 200
    events = json.loads(body)
    events = events["events"] if isinstance(events, dict) else events
    schema = json.loads((REPO / "edge_gesture" / "schemas" / "event.schema.json").read_text())
    for ev in events:
        jsonschema.validate(ev, schema)
    published = [m.json()["sequence"] for m in rec.on("/event")]
    rec.close()
    seqs = [ev["sequence"] for ev in events]
    assert seqs == sorted(seqs) and {ev["gesture"] for ev in events} & set(LABELS)
    # Every event MQTT carried in the span the API returned is in it.
    assert {s for s in published if seqs[0] <= s <= seqs[-1]} <= set(seqs)


def test_a_taken_port_stops_the_start_naming_it_before_mqtt_says_online(tmp_path, broker):
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    cfg = tmp_path / "taken.toml"
    cfg.write_text(f"""
device_id = "taken"
[capture]
source = "testcard"
[mqtt]
port = {broker.port}
[web]
enabled = true
port = {port}
""")
    rec = Recorder(broker.port, "edge_gesture/taken/#")
    try:
        run = subprocess.run([sys.executable, "-m", "edge_gesture", "run", "--config", str(cfg)],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        time.sleep(0.5)
        assert run.returncode == 1, run.stderr[-2000:]
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"web.port: 127.0.0.1:{port} is already in use" in errors[0]
        assert rec.on("/availability") == []  # never announced online
    finally:
        rec.close()
        taken.close()
