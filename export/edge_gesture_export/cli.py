"""edge-gesture-export: turn a SmolVLM checkpoint into the model bundle the daemon loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_gesture_export import __version__
from edge_gesture_export.errors import ExportError, VerificationFailed
from edge_gesture_export.export import ONNX_WEIGHTS, WEIGHTS, Options, run
from edge_gesture_export.progress import Progress
from edge_gesture_export.source import DEFAULT_MODEL

EPILOG = """\
examples:
  edge-gesture-export                                   # SmolVLM-256M, OpenVINO, INT8 weights, CPU
  edge-gesture-export --model ~/models/SmolVLM-256M-Instruct --weights int4
  edge-gesture-export --quantize-vision static-int8 --calibration ~/hand-crops
  edge-gesture-export --format onnx
  edge-gesture-export --device-profile npu --max-prompt-length 128 --kv-length 192
  edge-gesture-export --report --model DIR              # export time, sizes, parity table
  edge-gesture-export --hand-models --calibration ~/photos-with-hands   # INT8 hand-landmark model

The bundle goes to models/<name> in the repository unless --output says otherwise; point the
daemon at it with [vlm] bundle = "models/<name>" in config.toml (see models/README.md).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-gesture-export",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="Hugging Face id or local folder (default: %(default)s)"
    )
    p.add_argument("--revision", help="hub revision (commit, tag or branch) for a model id")
    p.add_argument("--format", choices=("openvino", "onnx"), default="openvino")
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="int8",
        help=f"weight precision (default int8; ONNX: {' or '.join(ONNX_WEIGHTS)})",
    )
    p.add_argument(
        "--quantize-vision",
        choices=("none", "static-int8"),
        default="none",
        help="static-int8: quantize the vision encoder's activations too (NNCF; needs --calibration)",
    )
    p.add_argument(
        "--calibration", type=Path, metavar="DIR", help="folder of calibration images (hand crops)"
    )
    p.add_argument(
        "--device-profile",
        choices=("cpu", "gpu", "npu"),
        default="cpu",
        help="npu: every shape static (NPU plugin); cpu/gpu: dynamic shapes (default cpu)",
    )
    p.add_argument("--max-prompt-length", type=int, default=128, help="npu: prompt chunk length in tokens")
    p.add_argument("--kv-length", type=int, default=192, help="npu: KV buffer slots (prompt + answer)")
    p.add_argument(
        "--output",
        type=Path,
        help="bundle folder (default: models/<name> in the repository); with --report, the "
        "folder that keeps the report's bundles (default: a temporary one, removed)",
    )
    p.add_argument("--force", action="store_true",
                   help="replace an existing output folder: only an earlier bundle (every file "
                   "listed in its manifest) or an empty folder, never other files")
    p.add_argument(
        "--report",
        action="store_true",
        help="benchmark: export --model in each format/precision into a temporary folder and print "
        "export time, bundle size and parity",
    )
    p.add_argument(
        "--random-weights-from",
        type=Path,
        metavar="DIR",
        help="--report only: build a random-weight model from the config/tokenizer files in DIR "
        "(e.g. ../shared/smolvlm-256m-instruct) and report on it",
    )
    p.add_argument(
        "--hand-models",
        action="store_true",
        help="instead of a VLM bundle: MediaPipe's hand-landmark model quantized to INT8 (NNCF), "
        "calibrated on the hands in --calibration's photos and checked against FP32 on others "
        "(default output models/hand-landmark-<full|lite>-int8)",
    )
    p.add_argument("--hand-complexity", type=int, choices=(0, 1), default=1,
                   help="--hand-models: hands.model_complexity to quantize for (default 1, full)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


_VLM_OPTIONS = ("model", "revision", "format", "weights", "quantize_vision", "device_profile",
                "max_prompt_length", "kv_length")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    progress = Progress(quiet=args.quiet)
    try:
        if args.report:
            from edge_gesture_export.report import report

            return report(args, progress)
        if args.random_weights_from:
            raise ExportError("--random-weights-from is only for --report")
        if args.hand_models:
            vlm_only = [f"--{k.replace('_', '-')}" for k in _VLM_OPTIONS
                        if getattr(args, k) != parser().get_default(k)]
            if vlm_only:
                raise ExportError(f"{', '.join(vlm_only)}: VLM bundle options, not for --hand-models")
            from edge_gesture_export.hand_models import export_hand_models

            hands = export_hand_models(args.calibration, args.output, args.hand_complexity,
                                       args.force, progress)
            print("\n".join(hands.lines))
            return 0
        result = run(
            Options(
                model=args.model,
                revision=args.revision,
                format=args.format,
                weights=args.weights,
                quantize_vision=args.quantize_vision,
                calibration=args.calibration,
                device_profile=args.device_profile,
                max_prompt_length=args.max_prompt_length,
                kv_length=args.kv_length,
                output=args.output,
                force=args.force,
            ),
            progress,
        )
    except VerificationFailed as e:
        print(f"edge-gesture-export: verification FAILED\n{e}", file=sys.stderr)
        return 1
    except ExportError as e:
        print(f"edge-gesture-export: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-gesture-export: interrupted; no bundle written", file=sys.stderr)
        return 130
    print("\n".join(result.verification_lines))
    size = sum(f.size for f in result.manifest.files.values())
    print(f"bundle: {result.bundle} ({size / 1e6:.1f} MB, {result.seconds:.1f} s)")
    return 0
