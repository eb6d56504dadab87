"""How often verifying an OpenVINO bundle crashes the process: right after exporting it in the
same process, or in a process that only loads it.

CI once died with a segfault in ov::InferRequest's destructor (CPU plugin) as the export's
verification let go of its models, in the process that had just converted the model. This
exports a tiny random SmolVLM, then runs child processes that each verify a bundle many times
(compile, infer, tear down), and counts the children that crashed:

- after-export: the child exports the bundle itself first, as the export used to verify;
- load-only: the child only loads the bundle exported beforehand, as the export's verification
  process (verify_process.py) and the daemon do.

    python -m tests.ov_teardown --processes 12 --verifications 100

Needs the export extra (torch, optimum-intel). Not a unit test: the crash is rare and takes
minutes to show.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("after-export", "load-only")


def export_tiny(tiny: Path, out: Path, *, verify_here: bool = False) -> Path:
    from edge_gesture_export import export, verify
    from edge_gesture_export.export import Options

    from edge_gesture.bundle import load_bundle_manifest
    from tests.export_worker import export_quietly

    if verify_here:  # the old way: the export's own verification in the converting process
        export.run_bundle_in_fresh_process = lambda root, ref, work: verify.run_bundle(
            root, load_bundle_manifest(root), ref)
    return export_quietly(Options(model=str(tiny), output=out, format="openvino", weights="int8",
                                  device_profile="cpu", max_prompt_length=64,
                                  kv_length=80)).bundle


def child(bundle: Path, tiny: Path, mode: str, verifications: int) -> None:
    from edge_gesture_export import facts, verify
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from edge_gesture.bundle import load_bundle_manifest

    if mode == "after-export":
        bundle = export_tiny(tiny, bundle.parent / f"{bundle.name}-{time.monotonic_ns()}",
                             verify_here=True)
    manifest = load_bundle_manifest(bundle)
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    processor = AutoProcessor.from_pretrained(tiny)
    processor.image_processor.do_image_splitting = False
    image = verify.verification_image(model.config.vision_config.image_size)
    ref = verify.torch_reference(model, processor, image,
                                 facts.chat_prompt(processor, verify.QUESTION), verify.DECODE_STEPS)
    for _ in range(verifications):
        verify.run_bundle(bundle, manifest, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=12, help="child processes per mode")
    ap.add_argument("--verifications", type=int, default=100, help="verifications per child")
    ap.add_argument("--mode", choices=MODES, action="append", help="default: both")
    ap.add_argument("--child", nargs=3, metavar=("BUNDLE", "TINY", "MODE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(Path(a.child[0]), Path(a.child[1]), a.child[2], a.verifications)
        return
    from tests.tiny_smolvlm import build_tiny_smolvlm

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_smolvlm(Path(tmp) / "tiny-smolvlm")
        bundle = export_tiny(tiny, Path(tmp) / "bundle")
        for mode in a.mode or MODES:
            crashed, t0 = [], time.monotonic()
            for i in range(a.processes):
                rc = subprocess.run(
                    [sys.executable, "-m", "tests.ov_teardown", "--verifications",
                     str(a.verifications), "--child", str(bundle), str(tiny), mode],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ).returncode
                if rc != 0:
                    crashed.append(f"#{i + 1} " + (signal.Signals(-rc).name if rc < 0 else f"exit {rc}"))
            print(f"{mode:>12}: {len(crashed)} of {a.processes} processes crashed "
                  f"({a.processes * a.verifications} verifications, {time.monotonic() - t0:.0f} s)"
                  + (f": {', '.join(crashed)}" if crashed else ""), flush=True)


if __name__ == "__main__":
    main()
