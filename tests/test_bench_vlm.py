"""`bench vlm --reference --reference-bundle`: the ratio against the guide's bundle and the
like-for-like one (optimum-intel on the bundle being measured), and the CPU they came from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.export
REPO = Path(__file__).resolve().parent.parent


def bench(*args: str, cwd: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "edge_gesture", "bench", "vlm", *args],
                       cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_like_for_like_ratio_beside_the_reference_bundles(tiny_ov_bundle, tmp_path):
    ours = shutil.copytree(tiny_ov_bundle, tmp_path / "ours")  # another bundle, as far as bench knows
    args = ["--bundle", str(ours), "--reference", "--reference-bundle", str(tiny_ov_bundle),
            "--repeats", "2", "--threads", "1"]
    report = json.loads(bench(*args, "--json", cwd=tmp_path))
    assert report["reference_bundle"] == str(tiny_ov_bundle)
    assert report["like_for_like_reference_bundle"] == str(ours)
    assert report["ratio"] == pytest.approx(report["reference_p50_s"] / report["p50_s"])
    assert report["like_for_like_ratio"] == pytest.approx(
        report["like_for_like_reference_p50_s"] / report["p50_s"])
    cpu = report["cpu"]
    assert cpu["model"] and cpu["logical_cpus"] >= 1
    assert set(cpu["isa"]) >= {"amx", "avx512_vnni", "avx_vnni", "avx512_bf16"}
    assert "FP32" in cpu["openvino_capabilities"]  # OpenVINO is loaded by then: asked too
    text = bench(*args, cwd=tmp_path)
    assert text.startswith("CPU: ") and "AMX " in text.splitlines()[0]
    assert f"like for like, optimum-intel generate on {ours}: p50" in text
