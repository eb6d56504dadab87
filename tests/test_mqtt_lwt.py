"""The last will: a daemon killed outright (SIGKILL, power loss) is reported `offline` by the
broker, retained, so Home Assistant marks every entity unavailable."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.mqtt_recorder import Recorder


def test_sigkill_leaves_offline_retained(broker, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""device_id = "attic"
[capture]
source = "testcard"
fps = 15
[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 60
[logging]
format = "json"
""")
    rec = Recorder(broker.port, "edge_gesture/attic/availability")
    proc = subprocess.Popen([sys.executable, "-m", "edge_gesture", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        online = rec.wait_count("/availability", 1, timeout=60)
        assert online[0].payload == b"online", proc.poll() or ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        # Well before the 90 s keepalive runs out: the broker sees the socket close.
        offline = rec.wait_count("/availability", 2, timeout=10)[1]
        assert offline.payload == b"offline"
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rec.close()

    late = Recorder(broker.port, "edge_gesture/attic/availability")
    try:
        msg = late.wait_count("/availability", 1)[0]
        assert msg.retain and msg.payload == b"offline"
    finally:
        late.close()
