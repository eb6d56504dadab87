from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto

# Session fixtures with tiny exported SmolVLM bundles (built once, shared by the VLM tests), and
# MediaPipe's hands in the gesture photos (found once, shared by the classifier tests).
pytest_plugins = ("tests.vlm_fixtures", "tests.hand_cache")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_GESTURE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "gesture-data").is_dir():
        pytest.skip(f"needs ../shared/gesture-data (looked in {SHARED}); CI always has it")
    return SHARED


@pytest.fixture(scope="session")
def gesture_data(shared_dir: Path) -> Path:
    return shared_dir / "gesture-data"


@pytest.fixture(scope="session")
def smolvlm_files(shared_dir: Path) -> Path:
    p = shared_dir / "smolvlm-256m-instruct"
    if not p.is_dir():
        pytest.skip(f"needs {p} (SmolVLM-256M config and tokenizer)")
    return p


@pytest.fixture
def broker(tmp_path: Path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()
