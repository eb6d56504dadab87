"""The daemon as systemd runs it: `edge-gesture run` as a subprocess with $NOTIFY_SOCKET and
$WATCHDOG_USEC pointing at a datagram socket the test binds, a real mosquitto, and the health
endpoint scraped over HTTP (tests/daemon_harness.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon_harness import START_S, Daemons, config, short_video, wait_for
from tests.mosquitto import free_port
from tests.mqtt_recorder import Recorder

pytestmark = pytest.mark.e2e


@pytest.fixture
def daemons():
    with Daemons() as start:
        yield start


def test_ready_only_after_the_first_frame(tmp_path, broker, daemons):
    # A stream that never answers: the daemon runs, says what it waits for, and is not READY.
    dead = f"rtsp://127.0.0.1:{free_port()}/cam"
    d = daemons(tmp_path / "a", config(broker.port, dead))
    d.manager.wait("STATUS", START_S, value=f"waiting for the first frame from {dead}")
    body = d.wait_health(503, 20, "no frame processed yet")
    assert "source not connected" in body
    # Reopening a lost source is a reported wait, not a wedge: the watchdog is still fed. Four
    # pings (two watchdog periods) of a frame loop that keeps turning, and still no READY.
    d.manager.wait_count("WATCHDOG", 4, 30)
    assert d.manager.fields("READY") == []
    assert d.proc.poll() is None

    live = daemons(tmp_path / "b", config(broker.port, "testcard"))
    t_ready, _ = live.manager.wait("READY", START_S)
    status = [v for t, v in live.manager.fields("STATUS") if t <= t_ready]
    assert status[0] == "hand models loaded; starting capture and MQTT"
    # READY's status sums up: what it processes, or what is still missing (on a busy machine
    # the first frame can beat the broker's CONNACK); then the next status update says it.
    assert status[-1].startswith("processing testcard") or \
        status[-1] == "MQTT broker not connected", status
    wait_for(lambda: any(v.startswith("processing testcard; MQTT connected")
                         for _, v in live.manager.fields("STATUS", t_ready)),
             20, "status 'processing testcard; MQTT connected'")
    # The first frame was logged before READY went out, and frames keep flowing after it.
    log = live.output()
    assert log.index('"first frame"') < log.index('"ready"')
    live.wait_health(200, 20)


def test_watchdog_pings_while_frames_flow_and_stop_when_they_stop(tmp_path, broker, daemons):
    # Six seconds of video with a ping due every 0.3 s: about 20 pings while it plays, so the
    # four asked for leave room for a frame loop slowed down by a busy machine.
    video = short_video(tmp_path / "clip.avi", seconds=6.0)
    d = daemons(tmp_path, config(broker.port, str(video)), watchdog_usec=600_000)
    t_ready, _ = d.manager.wait("READY", START_S)
    d.wait_log('"source ended"', 30)
    t_end = time.monotonic()
    assert "video source ended" in d.wait_health(503, 20, "video source ended")
    # A silence window of ten ping periods: a daemon that kept pinging would send ~10 here.
    time.sleep(3.0)
    pings = [t for t, _ in d.manager.fields("WATCHDOG")]
    assert len([t for t in pings if t_ready <= t <= t_end]) >= 4, (pings, t_ready, t_end)
    # After "source ended" only the frame being processed and the one waiting in the slot can
    # still ping; then silence, so systemd would restart a daemon whose frames stopped.
    assert len([t for t in pings if t > t_end]) <= 2, (pings, t_end)
    assert d.proc.poll() is None


def test_sigterm_sends_stopping_publishes_offline_and_exits_0_within_5s(tmp_path, broker, daemons):
    sub = Recorder(broker.port, "edge_gesture/#")
    try:
        d = daemons(tmp_path, config(broker.port, "testcard"))
        d.manager.wait("READY", START_S)
        sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online", 20)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(5) == 0  # systemd's stop timeout for this unit: the promise itself
        t_stop, _ = d.manager.wait("STOPPING", 5, value="1")
        assert t_stop >= t0
        sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"offline", 10)
    finally:
        sub.close()


def test_health_and_metrics_follow_the_broker(tmp_path, broker, daemons):
    d = daemons(tmp_path, config(broker.port, "testcard"))
    d.manager.wait("READY", START_S)
    d.wait_health(200, 20)
    m = d.metrics()
    assert m["edge_gesture_frames_processed_total"] > 0
    assert m["edge_gesture_frames_read_total"] >= m["edge_gesture_frames_processed_total"]
    assert m["edge_gesture_mqtt_connected"] == 1
    assert m["edge_gesture_source_connected"] == 1
    assert m["edge_gesture_stage_latency_seconds_count{stage=hands}"] > 0

    t_down = time.monotonic()
    broker.stop()
    body = d.wait_health(503, 20, "MQTT broker not connected")
    assert body.strip() == "MQTT broker not connected"  # frames still flow: the only problem
    assert d.metrics()["edge_gesture_mqtt_connected"] == 0
    d.manager.wait("STATUS", 20, since=t_down, value="MQTT broker not connected")

    broker.start()
    d.wait_health(200, 30)
    assert d.proc.poll() is None


def test_sighup_applies_a_good_config_and_refuses_a_bad_one(tmp_path, broker, daemons):
    sub = Recorder(broker.port, "#")
    try:
        d = daemons(tmp_path, config(broker.port, "testcard"))
        d.manager.wait("READY", START_S)
        sub.wait_for(lambda m: m.topic == "edge_gesture/edge-gesture/availability"
                     and m.payload == b"online", 20)

        # Good: new topics and thresholds apply without a restart; the camera setting waits.
        good = config(broker.port, "testcard", extra="[decide]\nenter_threshold = 0.8\n")
        good = good.replace("[mqtt]\n", '[mqtt]\nbase_topic = "home/gestures"\n')
        good = good.replace("reconnect_max_s = 0.5", "reconnect_max_s = 0.7")
        d.config.write_text(good.replace("@HEALTH_PORT@", str(d.health_port)))
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGHUP)
        d.manager.wait("RELOADING", 20, since=t0, value="1")
        d.manager.wait("READY", 20, since=t0, value="1")
        sub.wait_for(lambda m: m.topic == "home/gestures/edge-gesture/availability"
                     and m.payload == b"online", 20, "online on the new topic")
        sub.wait_for(lambda m: m.topic == "edge_gesture/edge-gesture/availability"
                     and m.payload == b"offline", 20, "offline on the old topic")
        d.wait_log('"config reloaded"', 20)
        log = d.output()
        assert '"mqtt.base_topic"' in log and '"decide.enter_threshold"' in log
        assert '"capture.reconnect_max_s"' in log and "need a restart" in log
        assert d.metrics()["edge_gesture_config_reloads_total{result=applied}"] == 1

        # Bad: refused with the field named; the daemon keeps running on the last good settings.
        d.config.write_text(good.replace("[decide]\n", "[decide]\nenter_treshold = 0.9\n")
                            .replace("@HEALTH_PORT@", str(d.health_port)))
        t1 = time.monotonic()
        d.proc.send_signal(signal.SIGHUP)
        d.manager.wait("READY", 20, since=t1, value="1")
        d.wait_log("config reload refused", 20)
        assert "decide.enter_treshold: unknown key" in d.output()
        assert d.metrics()["edge_gesture_config_reloads_total{result=refused}"] == 1
        d.wait_health(200, 20)
        assert d.proc.poll() is None
        # Still publishing on the topics of the last good file.
        n = len(sub.on("home/gestures/edge-gesture/availability"))
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(5) == 0
        sub.wait_for(lambda m: m.topic == "home/gestures/edge-gesture/availability"
                     and m.payload == b"offline", 10)
        assert len(sub.on("home/gestures/edge-gesture/availability")) > n
    finally:
        sub.close()


def test_dataset_samples_are_saved_within_the_quota(tmp_path, broker, daemons):
    folder = tmp_path / "dataset"
    d = daemons(tmp_path, config(broker.port, "testcard", extra=f"""
[dataset]
enabled = true
dir = "{folder}"
quota_mb = 0.3
no_gesture_sample_rate = 1.0
"""))

    def newest():
        return max(folder.rglob("*.jpg"), default=None)  # names start with the time saved

    d.manager.wait("READY", START_S)
    # The test pattern keeps coming, so the quota has to hold while it does: wait until the
    # writer has deleted a sample to stay under it, and more came after.
    seen = wait_for(newest, 30, "a saved sample")
    wait_for(lambda: not seen.exists(), 60, f"{seen.name} deleted to keep the quota")
    last = newest()
    wait_for(lambda: newest() != last, 30, "samples saved after the quota was reached")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    saved = [p for p in folder.rglob("*") if p.is_file()]
    assert len([p for p in saved if p.suffix == ".jpg"]) >= 5
    assert {p.parent.name for p in saved} == {"none"}  # the test pattern has no hands
    assert sum(p.stat().st_size for p in saved) <= 0.3 * 1024 * 1024


def test_mqtt_password_reaches_the_daemon_as_the_unit_delivers_it(tmp_path, daemons):
    """The credential ID in LoadCredential= and the config's password_file name must agree."""
    from tests.mosquitto import Mosquitto

    unit = (Path(__file__).parent.parent / "systemd/edge-gesture.service").read_text()
    cred_id = next(line.split("=", 1)[1].split(":", 1)[0] for line in unit.splitlines()
                   if line.startswith("LoadCredential="))
    pw = tmp_path / "passwd"
    pw.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "nuc", "s3cret"], check=True)
    broker = Mosquitto(tmp_path / "broker", allow_anonymous=False,
                       extra_conf=f"password_file {pw}").start()
    try:
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / cred_id).write_text("s3cret\n")
        d = daemons(tmp_path / "d", config(broker.port, "testcard").replace(
            "[mqtt]\n", f'[mqtt]\nusername = "nuc"\npassword_file = "{cred_id}"\n'),
            env={"CREDENTIALS_DIRECTORY": str(creds)})
        d.manager.wait("READY", START_S)
        d.wait_health(200, 20)  # connected, so the broker took the password
        assert "s3cret" not in d.output()
    finally:
        broker.stop()
