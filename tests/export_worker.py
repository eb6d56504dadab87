"""edge-gesture-export's run() in a worker process, so the test process itself never converts
a model: OpenVINO's CPU plugin now and then segfaults in a process that has (see
tests/ov_teardown.py), and the tests go on to run bundles in this one."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def export_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def export_quietly(options):
    from edge_gesture_export.export import run
    from edge_gesture_export.progress import Progress

    return run(options, Progress(quiet=True))
