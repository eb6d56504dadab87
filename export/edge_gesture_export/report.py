"""`edge-gesture-export --report`: export one model in each format and precision, and print a
table of export time, bundle size and parity with PyTorch (what the README's table comes from)."""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_gesture_export import __version__
from edge_gesture_export.errors import VerificationFailed
from edge_gesture_export.export import Options, run
from edge_gesture_export.progress import Progress

MB, MIB = 1e6, 2**20
#: The INT8 OpenVINO CPU bundle of SmolVLM-256M must stay within this (issue 3).
INT8_OPENVINO_LIMIT_MIB = 260


@dataclass(frozen=True)
class Config:
    label: str
    options: dict


CONFIGS = [
    Config("openvino int8 cpu", dict(format="openvino", weights="int8")),
    Config("openvino int4 cpu", dict(format="openvino", weights="int4")),
    Config("openvino fp16 cpu", dict(format="openvino", weights="fp16")),
    Config(
        "openvino int8 + static-int8 vision cpu",
        dict(format="openvino", weights="int8", quantize_vision="static-int8"),
    ),
    Config("openvino int8 npu (static)", dict(format="openvino", weights="int8", device_profile="npu")),
    Config("onnx int8 cpu", dict(format="onnx", weights="int8")),
    Config("onnx fp32 cpu", dict(format="onnx", weights="fp32")),
]


def _row(label: str, result) -> str:
    m = result.manifest
    total = sum(f.size for f in m.files.values()) + (result.bundle / "edge-gesture-model.json").stat().st_size
    models = sum(
        e.size for name, e in m.files.items() if name.endswith((".xml", ".bin", ".onnx", ".onnx_data"))
    )
    v = m.verification
    rule = f"<= {v.tolerance:.2e}" if v.tolerance is not None else "top-1"
    if v.top1_agree:
        top1 = f"same at {v.steps}/{v.steps}"
    elif v.passed:
        top1 = f"same, or a near-tie, at {v.steps}/{v.steps} ({v.top1_ties} near-tie)"
    else:
        top1 = "differs"
    return (
        f"| {label} | {result.seconds:.0f} | {total / MB:.1f} ({total / MIB:.1f}) | {models / MB:.1f} | "
        f"{v.max_abs_logit_diff:.2e} | {rule} | {top1} | {'pass' if v.passed else 'FAIL'} |"
    )


def report(args: argparse.Namespace, progress: Progress) -> int:
    keep = args.output
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="edge-gesture-report-"))
    root.mkdir(parents=True, exist_ok=True)
    failures = 0
    try:
        model = args.model
        if args.random_weights_from:
            from edge_gesture_export.random_model import build_random_model

            with progress.step(f"building a random-weight model from {args.random_weights_from}"):
                model = str(build_random_model(args.random_weights_from, root / "random-model"))
        rows = []
        for cfg in CONFIGS:
            opts = dict(cfg.options)
            if opts.get("quantize_vision") == "static-int8":
                if not args.calibration:
                    rows.append(f"| {cfg.label} | - | - | - | - | - | - | skipped: no --calibration |")
                    continue
                opts["calibration"] = args.calibration
            progress.note(f"=== {cfg.label}")
            out = root / re.sub(r"[^a-z0-9]+", "-", cfg.label).strip("-")
            try:
                result = run(
                    Options(
                        model=model,
                        output=out,
                        force=True,
                        max_prompt_length=args.max_prompt_length,
                        kv_length=args.kv_length,
                        **opts,
                    ),
                    progress=Progress(quiet=args.quiet),
                )
            except VerificationFailed as e:
                failures += 1
                print(e, file=sys.stderr)
                rows.append(_row(cfg.label, e.result))
                continue
            rows.append(_row(cfg.label, result))
            print("\n".join(result.verification_lines), file=sys.stderr)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"edge-gesture-export {__version__} --report, model {args.random_weights_from or args.model}"
        f"{' (random weights)' if args.random_weights_from else ''}, "
        f"{platform.processor() or platform.machine()}, {_cores()} cores\n"
    )
    print(
        "| bundle | export s | bundle MB (MiB) | model files MB | max abs logit diff | rule "
        "| top-1 | parity |"
    )
    print("|---|---:|---:|---:|---:|---|---|---|")
    print("\n".join(rows))
    print(
        "\nexport s: wall time of the whole export (load, convert, quantize, verify); sizes: every "
        "file of the bundle, manifest included; parity: the export's own check against PyTorch fp32 "
        "on a fixed image and prompt, 3 positions (prompt + 2 greedy steps)."
    )
    return 1 if failures else 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
