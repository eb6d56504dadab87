"""Three daemons on clips, their vision encoder on one real `edge-gesture serve`, events to a real
mosquitto; the server is killed mid-run and started again. Each daemon keeps publishing every
gesture (landmarks alone while the server is away), says in its stats that the VLM is down, logs
it once, and decides through the server again once it is back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.gesture_video import gesture_sequence, write_video
from tests.logs import json_log_lines
from tests.mqtt_recorder import Recorder, wait_until
from tests.serve_process import ServeProcess
from tests.test_e2e import FPS, LABELS, clear_photos, start_daemon  # noqa: F401
from tests.test_vlm_e2e import write_config

pytestmark = [pytest.mark.e2e, pytest.mark.export]
DAEMONS = 3


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, gesture_data, clear_photos) -> Path:  # noqa: F811
    """Every gesture twice (about 32 s at 15 frames/s): time for the outage and the return."""
    path = tmp_path_factory.mktemp("video") / "gestures-twice.mp4"
    segments = gesture_sequence(gesture_data, LABELS * 2, hold=1.2, gap=0.8,
                                pick=lambda label, photos: clear_photos[label])
    return write_video(path, segments, FPS)


def _config(folder: Path, name: str, port: int, video: Path, bundle: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder, port, video, bundle, device_id=name,
                        tables=f'[vlm.remote]\nurl = "{url}"\ntimeout_s = 1.0\n')


def _vlm_stats(sub: Recorder, name: str) -> list[dict]:
    return [m.json()["vlm"] for m in sub.messages
            if m.topic == f"edge_gesture/{name}/stats"]


def test_three_daemons_decide_through_one_server_and_survive_its_restart(
        tmp_path, broker, long_video, tiny_ov_bundle):
    names = [f"cam{i}" for i in range(DAEMONS)]
    serve = ServeProcess(tiny_ov_bundle, tmp_path).start()
    sub = Recorder(broker.port, "edge_gesture/#")
    procs = [start_daemon(_config(tmp_path / n, n, broker.port, long_video, tiny_ov_bundle,
                                  serve.url)) for n in names]
    try:
        def everyone(pred):
            return all(pred(_vlm_stats(sub, n)) for n in names)

        wait_until(lambda: everyone(lambda s: s and s[-1]["state"] == "ok"
                                and s[-1]["decisions"] >= 2), 120, "decisions through the server")
        serve.kill()
        wait_until(lambda: everyone(lambda s: s and s[-1]["state"] == "failed"), 30,
               "daemons on landmarks after the server died")
        before = {n: _vlm_stats(sub, n)[-1]["decisions"] for n in names}
        time.sleep(1.0)
        serve = ServeProcess(tiny_ov_bundle, tmp_path, port=serve.port,
                             grpc_port=serve.grpc_port).start()
        wait_until(lambda: all(_vlm_stats(sub, n)[-1]["state"] == "ok"
                           and _vlm_stats(sub, n)[-1]["decisions"] > before[n] for n in names),
               60, "decisions through the restarted server")
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        serve.stop()
    time.sleep(0.5)
    sub.close()

    for name, proc, (_, err) in zip(names, procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        events = [json.loads(m.payload) for m in sub.messages
                  if m.topic == f"edge_gesture/{name}/event"]
        # Nothing lost: every gesture of the clip, twice, in order, server or no server.
        assert [e["gesture"] for e in events] == LABELS * 2, (name, err[-3000:])
        lines = json_log_lines(err)
        down = [x for x in lines if x.get("event", "").startswith("vlm unavailable")]
        assert len(down) == 1, (name, down)  # once for the outage, not per frame or retry
        assert "cannot reach the server" in down[0]["error"] \
            or "no answer within" in down[0]["error"]
        assert any(x.get("event") == "vlm server back" for x in lines), name
