"""Tiny SmolVLM bundles for the VLM tests, exported with edge-gesture-export once per session.

Needs the export extra (torch, transformers, optimum-intel); tests that use these skip, saying
so, when it is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

GESTURES = [
    ("open_palm", "an open hand, all five fingers spread"),
    ("fist", "a closed fist"),
    ("thumbs_up", "a fist with the thumb pointing up"),
    ("thumbs_down", "a fist with the thumb pointing down"),
    ("crossed_fingers", "index and middle finger crossed over each other"),
]


def _need_export_extra() -> None:
    for mod in ("torch", "transformers", "optimum.intel", "edge_gesture_export"):
        if importlib.util.find_spec(mod.split(".")[0]) is None:
            pytest.skip(f"needs the export extra ({mod} is not installed): pip install -e export")


def export_bundle(checkpoint: Path, out: Path, *args: str) -> Path:
    cmd = [sys.executable, "-m", "edge_gesture_export", "--model", str(checkpoint),
           "--output", str(out), "--quiet", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    _need_export_extra()
    from tests.tiny_smolvlm import build_tiny_smolvlm

    return build_tiny_smolvlm(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tiny_ov_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    return export_bundle(tiny_checkpoint, tmp_path_factory.mktemp("ov") / "b", "--weights", "fp32")


@pytest.fixture(scope="session")
def tiny_onnx_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    return export_bundle(
        tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "b", "--format", "onnx", "--weights", "fp32"
    )


@pytest.fixture(scope="session")
def tiny_npu_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    """Static shapes (the NPU plugin's need), run here on the CPU plugin: prompt chunks of 64,
    a 400-slot KV buffer."""
    return export_bundle(
        tiny_checkpoint, tmp_path_factory.mktemp("npu") / "b", "--weights", "fp32",
        "--device-profile", "npu", "--max-prompt-length", "64", "--kv-length", "400",
    )


@pytest.fixture(scope="session")
def tiny_smolvlm2_checkpoint(tmp_path_factory) -> Path:
    """SmolVLM2's classes (model_type smolvlm; its processor has a video part, which needs
    torchvision) with the same tiny sizes."""
    _need_export_extra()
    from tests.tiny_smolvlm import build_tiny_smolvlm

    return build_tiny_smolvlm(tmp_path_factory.mktemp("tiny2") / "ckpt", family="smolvlm")
