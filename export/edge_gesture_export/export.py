"""One export, start to finish: checks, conversion, quantization, manifest, verification."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_gesture.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    BundleManifest,
    ModelPart,
    SourceSpec,
    StaticShapes,
    ToolSpec,
    file_entries,
    load_bundle_manifest,
    now,
    write_bundle_manifest,
)
from edge_gesture_export import __version__, calibration, facts, onnx_export, openvino_export, verify
from edge_gesture_export.errors import ExportError, VerificationFailed
from edge_gesture_export.progress import Progress
from edge_gesture_export.source import DEFAULT_MODEL, Source, resolve
from edge_gesture_export.verify_process import run_bundle_in_fresh_process

WEIGHTS = ("int8", "int4", "fp16", "fp32")
SLOW_TOKENIZER_FILES = ("vocab.json", "merges.txt", "added_tokens.json")
ONNX_WEIGHTS = ("int8", "fp32")


@dataclass(frozen=True)
class Options:
    model: str = DEFAULT_MODEL
    revision: str | None = None
    format: Literal["openvino", "onnx"] = "openvino"
    weights: str = "int8"
    quantize_vision: Literal["none", "static-int8"] = "none"
    calibration: Path | None = None
    device_profile: Literal["cpu", "gpu", "npu"] = "cpu"
    max_prompt_length: int = 128
    kv_length: int = 192
    output: Path | None = None
    force: bool = False


@dataclass
class Result:
    bundle: Path
    manifest: BundleManifest
    verification_lines: list[str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def repo_models_dir() -> Path:
    """`models/` of the repository this package sits in (editable install), else ./models."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "models").is_dir() and (repo / "edge_gesture").is_dir():
        return repo / "models"
    return Path.cwd() / "models"


def bundle_name(o: Options) -> str:
    base = Path(o.model.rstrip("/")).name.lower()
    vision = "-vision-int8" if o.quantize_vision == "static-int8" else ""
    return f"{base}-{o.format}-{o.weights}{vision}-{o.device_profile}"


def check_options(o: Options) -> tuple[Path, list[Path]]:
    """Everything that can be refused before the slow work: returns the output folder and the
    calibration images."""
    if o.weights not in WEIGHTS:
        raise ExportError(f"--weights {o.weights}: choose one of {', '.join(WEIGHTS)}")
    if o.format == "onnx" and o.weights not in ONNX_WEIGHTS:
        raise ExportError(
            f"--weights {o.weights} is for --format openvino; ONNX bundles are int8 "
            "(ONNX Runtime dynamic quantization) or fp32"
        )
    if o.format == "onnx" and o.quantize_vision != "none":
        raise ExportError("--quantize-vision static-int8 is for --format openvino (NNCF)")
    if o.calibration is not None and o.quantize_vision == "none":
        raise ExportError("--calibration is only used with --quantize-vision static-int8")
    if o.device_profile == "npu" and not 1 <= o.max_prompt_length < o.kv_length:
        raise ExportError(
            f"--kv-length ({o.kv_length}) must be larger than --max-prompt-length "
            f"({o.max_prompt_length}): the buffer holds the prompt plus the answer"
        )
    images = calibration.find_images(o.calibration) if o.quantize_vision == "static-int8" else []
    out = o.output or repo_models_dir() / bundle_name(o)
    if out.exists() or out.is_symlink():
        if not o.force:
            raise ExportError(f"{out} already exists: pass --force to replace it, or --output elsewhere")
        check_replaceable(out)
    return out, images


def check_replaceable(out: Path, manifest_name: str = MANIFEST_NAME) -> None:
    """--force deletes the output folder: only when it is an empty folder or a bundle (a folder
    whose every file is the manifest or listed in it), never a folder of someone's other files
    (a mistyped --output such as a home folder)."""
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder: --force replaces only a bundle "
                          "folder or an empty folder; choose another --output")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                   if p.is_file() or p.is_symlink())
    if not files:
        return
    try:
        listed = set(json.loads((out / manifest_name).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    if listed is None:
        raise ExportError(
            f"{out} is not a bundle (no readable {manifest_name}) and not empty: --force replaces "
            f"only a bundle or an empty folder, and would delete {len(files)} other file(s) "
            f"({', '.join(files[:3])}{', ...' if len(files) > 3 else ''}); choose another "
            "--output, or move those files away yourself"
        )
    others = [f for f in files if f != manifest_name and f not in listed]
    if others:
        raise ExportError(
            f"{out} holds {len(others)} file(s) its bundle manifest does not list "
            f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): --force replaces "
            "only a bundle's own files; move those away, or choose another --output"
        )


def _load(source: Source) -> tuple[Any, Any, Any]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = AutoModelForImageTextToText.from_pretrained(source.path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(source.path)
    # The daemon sends one hand crop: one 512x512 tile, never split.
    processor.image_processor.do_image_splitting = False
    try:
        gen = GenerationConfig.from_pretrained(source.path)
    except OSError:
        gen = model.generation_config
    return model, processor, gen


def _manifest(
    o: Options,
    source: Source,
    model: Any,
    processor: Any,
    gen: Any,
    parts: dict[str, ModelPart],
    static: StaticShapes | None,
    add_special: bool,
    stage: Path,
) -> BundleManifest:
    acts = {p.activations_precision for p in parts.values()}
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()}
    options.pop("force")
    options.pop("output")
    return BundleManifest(
        schema_version=SCHEMA_VERSION,
        format=o.format,
        weights_precision=o.weights,
        activations_precision="int8" if "int8" in acts else "fp32",
        device_profile=o.device_profile,
        static_shapes=static,
        image=facts.image_spec(
            processor, model, with_position_ids="patch_position_ids" in parts["vision"].inputs
        ),
        image_tokens_per_image=facts.image_tokens_per_image(processor, model.config),
        tokens=facts.special_tokens(processor, gen),
        prompt=facts.prompt_spec(processor, add_special),
        tokenizer="tokenizer.json",
        language=facts.language_spec(model.config, stateful=(o.format == "openvino" and static is None)),
        models=parts,
        files=file_entries(stage),
        source=SourceSpec(
            model=source.model,
            revision=source.revision,
            architecture=source.architecture,
            model_type=source.model_type,
        ),
        tool=ToolSpec(name="edge-gesture-export", version=__version__, options=options),
        created=now(),
    )


def run(o: Options, progress: Progress | None = None) -> Result:
    progress = progress or Progress()
    out, images = check_options(o)
    with progress.step(f"finding {o.model}"):
        source = resolve(o.model, o.revision)
    static = (
        StaticShapes(max_prompt_length=o.max_prompt_length, kv_length=o.kv_length)
        if o.device_profile == "npu"
        else None
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the destination and moved in at the end: an interrupted export never leaves
    # a half bundle under the name the daemon's config points at.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        return _run(o, progress, source, static, images, out, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _openvino_parts(
    o: Options,
    progress: Progress,
    source: Source,
    model: Any,
    processor: Any,
    static: StaticShapes | None,
    images: list[Path],
    work: Path,
    stage: Path,
) -> dict[str, ModelPart]:
    with progress.step("converting with optimum-intel (fp32 OpenVINO IR)"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        openvino_export.convert_fp32(source.path, work)
    samples = None
    if images:
        with progress.step(f"preprocessing {len(images)} calibration images"):
            import openvino as ov

            vision_xml = work / f"{openvino_export.NAMES['vision']}.xml"
            samples = calibration.vision_samples(
                images,
                processor,
                [p.get_any_name() for p in ov.Core().read_model(vision_xml).inputs],
                facts.patch_position_ids(model),
            )
    parts = openvino_export.build(
        work,
        stage,
        weights=o.weights,
        static=static,
        calibration=samples,
        torch_model=model,
        progress=progress,
    )
    if static is None:
        # With these, optimum-intel's OVModelForVisualCausalLM loads the bundle as it is.
        for name in ("config.json", "generation_config.json"):
            if (work / name).is_file():
                shutil.copy2(work / name, stage / name)
    return parts


def _onnx_parts(
    o: Options, progress: Progress, model: Any, static: StaticShapes | None, work: Path, stage: Path
) -> dict[str, ModelPart]:
    with progress.step("exporting ONNX (fp32)"):
        onnx_export.export_fp32(model, work, static, facts.patch_position_ids(model))
    if o.weights == "int8":
        with progress.step("quantizing ONNX weights to INT8 (ONNX Runtime, dynamic)"):
            onnx_export.quantize_int8(work, stage)
    else:
        onnx_export.copy_fp32(work, stage)
    return onnx_export.describe(stage, o.weights)


def _run(
    o: Options,
    progress: Progress,
    source: Source,
    static: StaticShapes | None,
    images: list[Path],
    out: Path,
    tmp: Path,
) -> Result:
    work, stage = tmp / "work", tmp / "bundle"
    stage.mkdir(parents=True)
    with progress.step("loading the PyTorch model"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor, gen = _load(source)
    size = model.config.vision_config.image_size
    with progress.step("computing the PyTorch reference (fixed image and prompt)"):
        prompt = facts.chat_prompt(processor, verify.QUESTION)
        ref = verify.torch_reference(
            model, processor, verify.verification_image(size), prompt, verify.DECODE_STEPS
        )
    if o.format == "openvino":
        parts = _openvino_parts(o, progress, source, model, processor, static, images, work, stage)
    else:
        parts = _onnx_parts(o, progress, model, static, work, stage)
    processor.save_pretrained(stage)  # tokenizer.json, and the processor with splitting off
    for name in SLOW_TOKENIZER_FILES:  # tokenizer.json holds all of it; no need to ship twice
        (stage / name).unlink(missing_ok=True)
    if not (stage / "tokenizer.json").is_file():
        raise ExportError("the tokenizer has no tokenizer.json form (a fast tokenizer is needed)")

    # The manifest's prompt facts must rebuild the processor's ids exactly.
    rendered = facts.prompt_spec(processor, add_special_tokens=False).render(verify.QUESTION)
    add_special = verify.add_special_tokens_flag(stage / "tokenizer.json", rendered, ref.input_ids)
    manifest = _manifest(o, source, model, processor, gen, parts, static, add_special, stage)
    write_bundle_manifest(stage, manifest)
    with progress.step("verifying the bundle against PyTorch"):
        # The verification process runs the daemon's own checks (sha256 included) on the
        # fresh bundle; here the manifest is only read back for the comparison.
        manifest = load_bundle_manifest(stage, checksums=False)
        got = run_bundle_in_fresh_process(stage, ref, tmp / "verify")
        v = verify.compare(manifest, ref, got)
    lines = verify.report_lines(ref, got, v)
    manifest = manifest.model_copy(update={"verification": v})
    write_bundle_manifest(stage, manifest)
    if out.exists() or out.is_symlink():
        check_replaceable(out)  # again: the folder may have changed during the export
        shutil.rmtree(out)
    shutil.move(str(stage), str(out))
    result = Result(out, manifest, lines, progress.elapsed, dict(progress.timings))
    if not v.passed:
        raise VerificationFailed(
            "\n".join(lines)
            + f"\nthe bundle does not match PyTorch; it is kept at {out} for inspection and its "
            "manifest records verification.passed = false",
            result,
        )
    return result
