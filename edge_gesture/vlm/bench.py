"""`edge-gesture bench vlm`: decision latency from hand crop to label, start-up and memory.

Figures are medians and 95th percentiles over repeats. With --reference the same decision (same
bundle, crop and prompt, one new token, image splitting off) is also made the way the Hugging
Face / Intel guide does it, optimum-intel's OVModelForVisualCausalLM.generate, in the same run,
alternating with ours so both see the same machine load. With --reference-bundle (the guide's
bundle, when --bundle is one it does not make) optimum-intel runs on both, so the report gives
the ratio against the guide's bundle and the like-for-like one (the same bundle under both). The
reference needs the export extra (torch, transformers, optimum-intel); the runtime being
measured never imports them. Figures depend on the CPU (AMX above all), so the report names it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_gesture.bundle import BundleError
from edge_gesture.errors import UsageError
from edge_gesture.machine import cpu_facts, cpu_line
from edge_gesture.vlm.backend import BackendError, BackendOptions
from edge_gesture.vlm.prompt import DEFAULT_DESCRIPTIONS

SHARED = Path(os.environ.get("EDGE_GESTURE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
GESTURES = [*DEFAULT_DESCRIPTIONS.items()]


def add_arguments(p) -> None:
    p.add_argument("--bundle", required=True, type=Path, help="model bundle folder")
    p.add_argument("--reference", action="store_true",
                   help="also time optimum-intel's generate on the same bundle (needs the export extra)")
    p.add_argument("--reference-bundle", type=Path,
                   help="run the reference on this bundle instead (e.g. the INT8 weight-only one "
                   "the guide produces, when --bundle is a static-int8 vision bundle)")
    p.add_argument("--repeats", type=int, default=20, help="timed decisions (default 20)")
    p.add_argument("--device", default="CPU", help="device for both parts (default CPU)")
    p.add_argument("--vision-device", default="", help="device for the vision encoder")
    p.add_argument("--threads", type=int, default=0, help="CPU inference threads (0: all)")
    p.add_argument("--precision", default="auto", choices=("auto", "f32", "bf16", "f16"))
    p.add_argument("--image", type=Path, help="crop to use (default: a hand photo from "
                   "../shared/gesture-data, else a synthetic image)")
    p.add_argument("--startup", action="store_true",
                   help="also measure start-to-ready (cold and warm compiled-model cache) and RSS "
                   "in fresh processes")
    p.add_argument("--json", action="store_true")
    from edge_gesture.vlm.bench_remote import add_arguments as remote_arguments

    remote_arguments(p)


def bench_crop(path: Path | None) -> np.ndarray:
    import cv2

    if path is None:
        found = sorted((SHARED / "gesture-data" / "fist").glob("*.jpg"))
        path = found[0] if found else None
    if path is None:
        rng = np.random.default_rng(0)
        return cv2.resize(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), (320, 320))
    if not path.is_file():
        raise UsageError(f"--image {path}: no such file")
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise UsageError(f"--image {path}: not a readable image")
    h, w = bgr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return cv2.cvtColor(bgr[top: top + s, left: left + s], cv2.COLOR_BGR2RGB)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _opts(args, cache_dir: Path) -> BackendOptions:
    return BackendOptions(
        vision_device=args.vision_device or args.device, language_device=args.device,
        cache_dir=cache_dir, num_threads=args.threads, precision=args.precision,
    )


class _Reference:
    """optimum-intel's pipeline on the same bundle, as the guide shows it."""

    def __init__(self, bundle: Path, prompt_text: str, image_sequence: str, image_token: str,
                 expected_ids: np.ndarray):
        try:
            from optimum.intel import OVModelForVisualCausalLM
            from transformers import AutoProcessor
        except ImportError as e:
            raise SystemExit(f"error: --reference needs the export extra ({e.name} missing): "
                             "pip install -e export") from None
        self.model = OVModelForVisualCausalLM.from_pretrained(bundle)
        self.processor = AutoProcessor.from_pretrained(bundle)
        self.processor.image_processor.do_image_splitting = False
        self.text = prompt_text.replace(image_sequence, image_token)
        self.expected_ids = expected_ids

    def __call__(self, rgb: np.ndarray) -> tuple[str, float]:
        from PIL import Image

        t0 = time.perf_counter()
        inputs = self.processor(text=self.text, images=[Image.fromarray(rgb)], return_tensors="pt")
        out = self.model.generate(**inputs, max_new_tokens=1, do_sample=False)
        dt = time.perf_counter() - t0
        ids = inputs["input_ids"][0].numpy()
        if not np.array_equal(ids, self.expected_ids):
            raise SystemExit("error: the reference's prompt tokens differ from the runtime's; "
                             "the comparison would not be like for like")
        return self.processor.decode(out[0, -1:]), dt


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile of `xs` (NaN when there is none): the figure every VLM bench prints."""
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def check_arguments(args) -> None:
    """What can be checked before anything loads, each named by its flag."""
    import openvino as ov

    from edge_gesture.vlm.devices import missing

    if args.repeats < 1:
        raise UsageError(f"--repeats: expected 1 or more, got {args.repeats}")
    if args.reference_bundle is not None and not args.reference_bundle.is_dir():
        raise UsageError(f"--reference-bundle {args.reference_bundle}: not a folder")
    available = ov.Core().available_devices
    for flag, device in (("--device", args.device), ("--vision-device", args.vision_device)):
        if device and (absent := missing(device, available)):
            raise UsageError(f"{flag} {device}: not on this machine ({', '.join(absent)} missing); "
                             f"available: {', '.join(available)}")


def measure(args) -> dict:
    from edge_gesture.vlm.prompt import PromptError
    from edge_gesture.vlm.runtime import VlmRuntime

    check_arguments(args)
    crop = bench_crop(args.image)
    cache = Path(tempfile.mkdtemp(prefix="eg-bench-"))
    t0 = time.perf_counter()
    try:
        rt = VlmRuntime(args.bundle, GESTURES, _opts(args, cache))
    except (BundleError, PromptError, BackendError) as e:
        # Each names the bundle's folder or file: a bundle this runtime cannot use.
        raise UsageError(f"--bundle: {e}") from None
    rt.warm_up()
    load_s = time.perf_counter() - t0
    m = rt.manifest
    # "reference": optimum-intel on the guide's bundle (or on --bundle); "same_bundle":
    # optimum-intel on --bundle too, when that is another one: the like-for-like comparison.
    refs: dict[str, _Reference] = {}
    if args.reference:
        bundles = {"reference": args.reference_bundle or args.bundle}
        if args.reference_bundle is not None and args.reference_bundle.resolve() != args.bundle.resolve():
            bundles["same_bundle"] = args.bundle
        for key, bundle in bundles.items():
            refs[key] = _Reference(bundle, rt.prompt.text, m.prompt.image_sequence,
                                   m.tokens.image.text, rt.prompt.ids)
            refs[key](crop)  # its warm-up
    ours, parts = [], []
    theirs: dict[str, list[float]] = {key: [] for key in refs}
    answer = None
    for _ in range(args.repeats):
        t = time.perf_counter()
        answer, timings = rt.classify(crop)
        ours.append(time.perf_counter() - t)
        parts.append(timings)
        for key, ref in refs.items():
            theirs[key].append(ref(crop)[1])
    out = {
        "cpu": cpu_facts(),
        "bundle": str(args.bundle),
        "format": m.format,
        "weights": m.weights_precision,
        "activations": m.activations_precision,
        "vision_activations": m.models["vision"].activations_precision,
        "devices": rt.backend.devices,
        "threads": args.threads or os.cpu_count(),
        "image_size": m.image.size,
        "prompt_tokens": int(len(rt.prompt.ids)),
        "prefilled_per_decision": int(len(rt.prompt.rest_ids)),
        "repeats": args.repeats,
        "p50_s": percentile(ours, 50),
        "p95_s": percentile(ours, 95),
        "preprocess_p50_s": percentile([p.preprocess_s for p in parts], 50),
        "vision_p50_s": percentile([p.vision_s for p in parts], 50),
        "language_p50_s": percentile([p.language_s for p in parts], 50),
        "label": answer.label,
        "probability": round(answer.probability, 4),
        "load_and_warm_up_s": load_s,
        "precision": args.precision,
        "rss_mb": _rss_mb() if not refs else None,  # torch and optimum would inflate it
    }
    if refs:
        out["reference_bundle"] = str(args.reference_bundle or args.bundle)
        out["reference_p50_s"] = percentile(theirs["reference"], 50)
        out["reference_p95_s"] = percentile(theirs["reference"], 95)
        out["ratio"] = out["reference_p50_s"] / out["p50_s"]
        same = theirs.get("same_bundle", theirs["reference"])
        out["like_for_like_reference_bundle"] = str(args.bundle)
        out["like_for_like_reference_p50_s"] = percentile(same, 50)
        out["like_for_like_ratio"] = out["like_for_like_reference_p50_s"] / out["p50_s"]
    if args.remote:
        from edge_gesture.vlm.bench_remote import measure_remote

        out["remote"] = measure_remote(args, rt, GESTURES, _opts(args, cache), crop)
    return out


_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from edge_gesture.vlm.bench import GESTURES, _rss_mb
from edge_gesture.vlm.backend import BackendOptions
from edge_gesture.vlm.runtime import VlmRuntime
a = json.loads(sys.argv[1])
rt = VlmRuntime(a["bundle"], GESTURES, BackendOptions(vision_device=a["vd"], language_device=a["ld"],
                cache_dir=Path(a["cache"]), num_threads=a["threads"], precision=a["precision"]))
rt.warm_up()
print(json.dumps({"in_process_s": time.perf_counter() - t0, "rss_mb": _rss_mb()}), flush=True)
"""


def startup(args) -> dict:
    """Start-to-ready in fresh processes: first with an empty compiled-model cache, then warm."""
    cache = tempfile.mkdtemp(prefix="eg-bench-cache-")
    a = json.dumps({"bundle": str(args.bundle), "vd": args.vision_device or args.device,
                    "ld": args.device, "cache": cache, "threads": args.threads,
                    "precision": args.precision})
    runs = []
    for _ in range(4):  # cold, then warm three times (median)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _PROBE, a], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"error: start-up probe failed:\n{r.stderr[-2000:]}")
        runs.append({"wall_s": wall, **json.loads(r.stdout.strip().splitlines()[-1])})
    warm = runs[1:]
    return {
        "start_to_ready_cold_s": runs[0]["wall_s"],
        "start_to_ready_warm_s": float(np.median([w["wall_s"] for w in warm])),
        "runtime_rss_mb": float(np.median([w["rss_mb"] for w in warm])),
    }


def main(args) -> int:
    out = measure(args)
    if args.startup:
        out.update(startup(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(cpu_line(out["cpu"]))
    print(f"bundle {out['bundle']}: {out['format']}, weights {out['weights']}, vision activations "
          f"{out['vision_activations']}, devices {out['devices']}, {out['threads']} threads")
    print(f"prompt {out['prompt_tokens']} tokens, {out['prefilled_per_decision']} prefilled per "
          f"decision (the rest cached at start-up)")
    print(f"decision crop->label over {out['repeats']}: p50 {out['p50_s'] * 1000:.0f} ms, "
          f"p95 {out['p95_s'] * 1000:.0f} ms (preprocess {out['preprocess_p50_s'] * 1000:.0f}, "
          f"vision {out['vision_p50_s'] * 1000:.0f}, language {out['language_p50_s'] * 1000:.0f})")
    if "reference_p50_s" in out:
        print(f"optimum-intel generate on {out['reference_bundle']} (1 token, no splitting): p50 "
              f"{out['reference_p50_s'] * 1000:.0f} ms, p95 {out['reference_p95_s'] * 1000:.0f} ms"
              f" -> {out['ratio']:.2f}x faster")
        if out["reference_bundle"] != out["bundle"]:
            print(f"like for like, optimum-intel generate on {out['like_for_like_reference_bundle']}: p50 "
                  f"{out['like_for_like_reference_p50_s'] * 1000:.0f} ms -> "
                  f"{out['like_for_like_ratio']:.2f}x faster")
    if "remote" in out:
        from edge_gesture.vlm.bench_remote import print_remote

        print_remote(out["remote"])
    if "start_to_ready_warm_s" in out:
        print(f"start to ready: {out['start_to_ready_cold_s']:.2f} s cold cache, "
              f"{out['start_to_ready_warm_s']:.2f} s warm; RSS {out['runtime_rss_mb']:.0f} MB")
    return 0
