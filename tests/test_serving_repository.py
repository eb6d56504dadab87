"""`edge-gesture serving-repository`: a bundle's vision encoder as an OpenVINO Model Server model.

Checked against OVMS's documented repository format (a folder per model, a positive-integer
folder per version holding model.xml and model.bin, and config.json's model_config_list of
{"config": {"name", "base_path"}}), and run by OpenVINO as OVMS runs it: the features it gives
for a crop's uint8 pixels are the ones the daemon's own runtime computes for that crop.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import openvino as ov
import pytest

from edge_gesture.bundle import BundleError, load_bundle_manifest
from edge_gesture.vlm.backend import BackendOptions
from edge_gesture.vlm.preprocess import pixel_values, resized_pixels
from edge_gesture.vlm.runtime import VlmRuntime
from edge_gesture.vlm.serving import PIXELS_INPUT, RT_INFO_KEY, manifest_sha256, write_ovms_repository
from tests.vlm_fixtures import GESTURES


def run_served_model(model_xml, pixels: np.ndarray) -> np.ndarray:
    """The served model's answer for one crop's pixels, as OVMS computes it (OpenVINO on CPU)."""
    # f32 like the runtime it is compared with: on a CPU with AVX-512 BF16 or AMX the plugin's
    # default is bf16, which moves features by ~3e-3 on either side.
    compiled = ov.Core().compile_model(str(model_xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.array(compiled({PIXELS_INPUT: pixels[None]})[0], copy=True)


@pytest.fixture(scope="module")
def hand_crop(gesture_data) -> np.ndarray:
    photo = sorted((gesture_data / "fist").glob("*.jpg"))[0]
    return cv2.cvtColor(cv2.imread(str(photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("bundle_fixture", ["tiny_ov_bundle", "tiny_onnx_bundle"])
def test_the_repository_has_ovms_layout_and_serves_the_runtimes_features(
        request, bundle_fixture, tmp_path, hand_crop):
    bundle = request.getfixturevalue(bundle_fixture)
    manifest = load_bundle_manifest(bundle)
    out = tmp_path / "models"
    written = write_ovms_repository(bundle, out)

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "config.json", "edge-gesture-vision", "edge-gesture-vision/1",
        "edge-gesture-vision/1/model.bin", "edge-gesture-vision/1/model.xml"]
    config = json.loads((out / "config.json").read_text())
    assert config == {"model_config_list": [{"config": {
        "name": "edge-gesture-vision", "base_path": "/models/edge-gesture-vision",
        "target_device": "CPU"}}]}

    model = ov.Core().read_model(str(out / "edge-gesture-vision/1/model.xml"))
    size = manifest.image.size
    assert [(i.get_any_name(), i.get_element_type(), list(i.get_shape())) for i in model.inputs] \
        == [("pixels", ov.Type.u8, [1, size, size, 3])]
    features = [1, manifest.image_tokens_per_image, manifest.language.hidden_size]
    assert [list(o.get_shape()) for o in model.outputs] == [features]
    assert written["output"]["shape"] == features
    assert model.get_rt_info([RT_INFO_KEY, "manifest_sha256"]).astype(str) \
        == manifest_sha256(bundle)

    runtime = VlmRuntime(bundle, GESTURES, BackendOptions(precision="f32", cache_dir=tmp_path / "c"))
    try:
        local = runtime.backend.vision(pixel_values(hand_crop, manifest.image))
    finally:
        runtime.close()
    served = run_served_model(out / "edge-gesture-vision/1/model.xml",
                              resized_pixels(hand_crop, manifest.image))
    assert served.shape == (1, *local.shape)
    np.testing.assert_allclose(served[0], local, atol=1e-4, rtol=1e-4)


def test_a_second_model_joins_the_config_and_an_existing_version_is_refused(tiny_ov_bundle, tmp_path):
    out = tmp_path / "models"
    (out).mkdir()
    other = {"config": {"name": "resnet", "base_path": "/models/resnet"}}
    (out / "config.json").write_text(json.dumps({"model_config_list": [other]}))
    write_ovms_repository(tiny_ov_bundle, out, name="hands-vision", version=3, device="GPU")
    config = json.loads((out / "config.json").read_text())
    assert config["model_config_list"] == [other, {"config": {
        "name": "hands-vision", "base_path": "/models/hands-vision", "target_device": "GPU"}}]

    before = (out / "hands-vision/3/model.bin").read_bytes()
    with pytest.raises(FileExistsError, match="hands-vision/3: already there"):
        write_ovms_repository(tiny_ov_bundle, out, name="hands-vision", version=3)
    assert (out / "hands-vision/3/model.bin").read_bytes() == before
    assert not list(out.rglob("*.partial"))


def test_bad_input_is_refused_naming_what_is_wrong(tiny_ov_bundle, tmp_path):
    with pytest.raises(BundleError, match="edge-gesture-model.json: no manifest"):
        write_ovms_repository(tmp_path, tmp_path / "out")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not a JSON config"):
        write_ovms_repository(tiny_ov_bundle, broken)
    with pytest.raises(ValueError, match="positive integer"):
        write_ovms_repository(tiny_ov_bundle, tmp_path / "v0", version=0)
    assert not (tmp_path / "v0").exists()

    cli = [sys.executable, "-m", "edge_gesture", "serving-repository"]
    done = subprocess.run(cli + [str(tmp_path / "nowhere"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "nowhere: not a directory" in done.stderr
    assert done.stdout == ""
