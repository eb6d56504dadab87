from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto

# Session fixtures with tiny exported SmolVLM bundles (built once, shared by the VLM tests), and
# MediaPipe's hands in the gesture photos (found once, shared by the classifier tests).
pytest_plugins = ("tests.vlm_fixtures", "tests.hand_cache", "pytester")

REPO = Path(__file__).resolve().parent.parent


def shared_path() -> Path:
    return Path(os.environ.get("EDGE_GESTURE_SHARED", REPO.parent / "shared"))


SHARED = shared_path()

# Skips CI accepts. Where ../shared is present (a developer's full checkout) or CI=true, every other
# skip fails the test: CI installs everything the suite needs (script/test: mosquitto, openssl,
# systemd-analyze, the dev and export extras), so a skip there means a test silently stopped
# proving anything. Only what the machine itself decides belongs here, each with why; match is
# `re.search` on the skip's reason.
ACCEPTED_SKIPS = {
    # The runner's kernel, not the checkout, decides: PR_SET_MDWE arrived in Linux 6.3.
    r"^kernel has no PR_SET_MDWE": "kernel too old to probe MemoryDenyWriteExecute",
    # Some kernels (and container sandboxes) treat MADV_PAGEOUT as a no-op hint.
    r"^this kernel ignores MADV_PAGEOUT$": "kernel ignores the page-out hint",
    # madvise page-out is Linux-only; CI is Linux, a developer's Mac is not.
    r"^Linux madvise$": "not Linux",
}


def skips_must_be_accepted() -> bool:
    return os.environ.get("CI") == "true" or (shared_path() / "gesture-data").is_dir()


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _refuse_unaccepted_skip(report) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not skips_must_be_accepted():
        return
    reason = _skip_reason(report)
    if any(re.search(pattern, reason) for pattern in ACCEPTED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped ({reason!r}), but ../shared is present or CI=true, where only the skips in "
        "ACCEPTED_SKIPS (tests/conftest.py) are allowed: install what the test needs "
        "(script/test does), or, if the machine itself decides, add the reason there with why")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _refuse_unaccepted_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # A module-level importorskip skips at collection, before any test report exists.
    report = yield
    _refuse_unaccepted_skip(report)
    return report


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
