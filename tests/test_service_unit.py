"""The unit file: systemd-analyze verify and security on the unit as installed, and why one
hardening option is off (OpenVINO's JIT needs memory it can make executable)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_gesture.install import install

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd/edge-gesture.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd; script/test does)")


@pytest.fixture
def installed_unit(tmp_path) -> Path:
    # verify checks that ExecStart= exists, so check the unit as install-service writes it.
    install(tmp_path, program=[sys.executable, "-m", "edge_gesture"])
    return tmp_path / "etc/systemd/system/edge-gesture.service"


@needs_analyze
def test_systemd_analyze_verify_is_clean(installed_unit):
    r = subprocess.run([ANALYZE, "verify", "--man=no", str(installed_unit)],
                       capture_output=True, text=True)
    # verify exits 0 even when it ignores a line it cannot parse: demand silence too.
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


@needs_analyze
def test_exposure_score_is_at_most_3(installed_unit):
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(installed_unit)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for edge-gesture\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.0, r.stdout


@needs_analyze
def test_check_unit_script_prints_both_reports():
    r = subprocess.run([str(REPO / "systemd/check-unit")], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: ok" in r.stdout and "Overall exposure level" in r.stdout


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_has_the_service_contract():
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"] and "StartLimitBurst" in s and "WatchdogSec" in s
    # Devices: exactly cameras, the iGPU and the NPU.
    assert s["DevicePolicy"] == ["closed"]
    assert sorted(s["DeviceAllow"]) == ["char-accel rw", "char-drm rw", "char-video4linux rw"]
    assert s["SupplementaryGroups"] == ["video render"]
    assert s.get("PrivateDevices", ["no"]) == ["no"]  # it would hide /dev/video*
    assert s["LoadCredential"] == ["mqtt_password:/etc/edge-gesture/mqtt_password"]
    for key in ("StateDirectory", "CacheDirectory", "ConfigurationDirectory"):
        assert s[key] == ["edge-gesture"]
    # SIGTERM has to finish within TimeoutStopSec; the daemon promises 5 s.
    assert int(s["TimeoutStopSec"][0]) > 5


_MDWE_PROBE = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)  # kernel without MDWE (before 6.3)
    import openvino as ov, openvino.opset13 as ops
    x = ops.parameter([1, 3, 32, 32], np.float32)
    w = ops.constant(np.ones((4, 3, 3, 3), np.float32))
    model = ov.Model([ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])], [x])
    ov.Core().compile_model(model, "CPU")(np.ones((1, 3, 32, 32), np.float32))
    print("compiled")
""")


def test_openvino_cpu_plugin_needs_write_execute_memory():
    """MemoryDenyWriteExecute=yes is off in the unit because of this; if this test starts
    failing, OpenVINO no longer needs W+X and the option can be turned on."""
    r = subprocess.run([sys.executable, "-c", _MDWE_PROBE], capture_output=True, text=True,
                       timeout=120)
    if r.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (needs Linux 6.3+), the same W^X rule as "
                    "MemoryDenyWriteExecute=")
    assert r.returncode != 0 and "compiled" not in r.stdout
    assert "can't protect" in r.stderr or "Permission denied" in r.stderr, r.stderr[-2000:]
