"""A bundle's vision encoder as a model another machine serves: an OpenVINO Model Server repository.

The vision encoder is the heavy, stateless part of a decision, so it is the part worth sending to
a bigger box. OpenVINO Model Server (and KServe's OpenVINO runtime, which runs it) serves an IR
from `<repository>/<name>/<version>/model.xml|.bin`, with `config.json` listing the models
(`model_config_list`, each `name` and `base_path`), over the Open Inference Protocol (KServe v2,
REST and gRPC).

What the served model takes is what the daemon has after resizing the hand crop to the model's
square: uint8 RGB pixels [1, size, size, 3], a quarter of the bytes of float pixel values. The
bundle's rescale and normalisation and the turn to channels-first are built into the IR
(OpenVINO's PrePostProcessor), and the patch inputs the runtime feeds for one unpadded image
(`backend.patch_inputs`) become constants, so a client sends pixels and nothing else. The output
is the image features the local language model takes, [1, image tokens, hidden].

The IR's rt_info carries which bundle it came from (the manifest's sha256 and the bundle's
format, precision and source), so a daemon can refuse an encoder exported from another bundle:
its features would be another model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from edge_gesture.bundle import MANIFEST_NAME, BundleError, BundleManifest, load_bundle_manifest
from edge_gesture.vlm.backend import patch_inputs

#: Where in the IR's rt_info the bundle's identity is written.
RT_INFO_KEY = "edge_gesture"
#: The served model's one input: the crop resized to the model's square, uint8 RGB, NHWC.
PIXELS_INPUT = "pixels"
DEFAULT_NAME = "edge-gesture-vision"


def manifest_sha256(bundle: Path) -> str:
    """The bundle's identity: the sha256 of its manifest, which lists every file's sha256."""
    return hashlib.sha256((Path(bundle) / MANIFEST_NAME).read_bytes()).hexdigest()


def serving_vision_model(bundle: Path, manifest: BundleManifest):
    """The bundle's vision encoder with pixels in, normalisation inside, patch inputs fixed."""
    import openvino as ov
    import openvino.opset13 as opset
    from openvino.preprocess import PrePostProcessor

    part = manifest.models["vision"]
    path = Path(bundle) / part.file
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as e:
        raise BundleError(f"{path}: OpenVINO cannot read the vision model: "
                          f"{str(e).strip().splitlines()[0]}") from None
    mask, positions = patch_inputs(manifest)
    constants = {"patch_attention_mask": mask, "patch_position_ids": positions}
    for parameter in list(model.get_parameters()):
        name = parameter.output(0).get_any_name()
        if name in constants:
            value = constants[name].astype(parameter.get_element_type().to_dtype())
            parameter.output(0).replace(ov.op.Constant(value).output(0))
            model.remove_parameter(parameter)
    names = [i.get_any_name() for i in model.inputs]
    if names != ["pixel_values"]:
        raise BundleError(f"{path}: the vision model takes {names}; a served encoder takes "
                          "pixel_values and the patch inputs only")
    size = manifest.image.size
    model.reshape({"pixel_values": [1, 3, size, size]})

    ppp = PrePostProcessor(model)
    pixels = ppp.input("pixel_values")
    pixels.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    pixels.model().set_layout(ov.Layout("NCHW"))
    # (x * rescale - mean) / std in float32, in the order preprocess.normalised computes it: a
    # static-INT8 encoder quantizes its input, and a last-bit difference can cross a step.
    shape = [1, 3, 1, 1]
    rescale = ov.op.Constant(np.full([1, 1, 1, 1], manifest.image.rescale_factor, np.float32))
    mean = ov.op.Constant(np.asarray(manifest.image.mean, np.float32).reshape(shape))
    std = ov.op.Constant(np.asarray(manifest.image.std, np.float32).reshape(shape))
    pixels.preprocess().convert_element_type(ov.Type.f32).convert_layout(ov.Layout("NCHW")) \
        .custom(lambda x: opset.divide(opset.subtract(opset.multiply(x, rescale), mean), std).output(0))
    model = ppp.build()
    model.input(0).get_tensor().set_names({PIXELS_INPUT})
    model.output(0).get_tensor().set_names({"image_features"})
    return model


def write_ovms_repository(bundle: Path, out: Path, *, name: str = DEFAULT_NAME, version: int = 1,
                          device: str = "CPU") -> dict:
    """Write `out/<name>/<version>/model.xml|.bin` and `out/config.json`; returns what was written.

    An existing version folder is refused (a server may be reading it); a config.json already in
    `out` keeps its other models and gets this one added or replaced."""
    import openvino as ov

    bundle, out = Path(bundle), Path(out)
    if version < 1:
        raise ValueError(f"version must be a positive integer (OVMS's version folders), got {version}")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name {name!r}: a model name is one folder name")
    manifest = load_bundle_manifest(bundle)
    target = out / name / str(version)
    if target.exists():
        raise FileExistsError(f"{target}: already there; write another version or remove it")
    config_path = out / "config.json"
    config = _read_config(config_path)

    model = serving_vision_model(bundle, manifest)
    identity = {
        "manifest_sha256": manifest_sha256(bundle),
        "format": manifest.format,
        "weights_precision": manifest.weights_precision,
        "activations_precision": manifest.activations_precision,
        "source": manifest.source.model,
        "image_size": str(manifest.image.size),
    }
    for key, value in identity.items():
        model.set_rt_info(value, [RT_INFO_KEY, key])

    staging = out / name / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    entries = [e for e in config["model_config_list"] if e.get("config", {}).get("name") != name]
    entries.append({"config": {"name": name, "base_path": f"/models/{name}",
                               "target_device": device}})
    config["model_config_list"] = entries
    tmp = config_path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, config_path)

    out_shape = [int(d) for d in model.output(0).get_shape()]
    return {"model": str(target / "model.xml"), "config": str(config_path), "name": name,
            "version": version, "input": {"name": PIXELS_INPUT, "datatype": "UINT8",
                                          "shape": [1, manifest.image.size, manifest.image.size, 3]},
            "output": {"name": "image_features", "datatype": "FP32", "shape": out_shape},
            **identity}


def _read_config(path: Path) -> dict:
    if not path.exists():
        return {"model_config_list": []}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON config OVMS can read ({e}); move it away first") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_config_list", []), list):
        raise ValueError(f"{path}: model_config_list must be a list")
    config.setdefault("model_config_list", [])
    return config

