"""MediaPipe's bundled hand models, compiled by OpenVINO for `hands.device`.

mediapipe 0.10.21 ships `palm_detection_{lite,full}.tflite` and `hand_landmark_{lite,full}.tflite`
inside the wheel; `openvino.Core.read_model` reads them as they are. The colour conversion and
the scaling to 0..1 are built into the compiled model (OpenVINO's pre-processing), so the daemon
hands it the 8-bit BGR crops that OpenCV gives.

Every model is compiled with a static input of one square: the NPU compiles static shapes only,
and on the CPU plugin a static one-square model ran a square in about two thirds of the time the
same model with a dynamic batch took (measured interleaved in one process), more than batching
gained. A search step is then one call per square.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_gesture.errors import StartupError

log = logging.getLogger(__name__)

_KIND = {0: "lite", 1: "full"}


class HandModelError(StartupError):
    """A hand model file is missing or unreadable; the message names it (a start-up error: the
    command says so and exits, no traceback)."""


def model_path(name: str, complexity: int) -> Path:
    """The `.tflite` file of `name` ("palm_detection" or "hand_landmark") in the mediapipe install."""
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise HandModelError("mediapipe is not installed: its hand models come with mediapipe==0.10.21")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "modules" / name / f"{name}_{_KIND[complexity]}.tflite"
    if not path.is_file():
        raise HandModelError(
            f"{path}: hand model missing from the mediapipe install (mediapipe 0.10.21 ships it; "
            f"reinstall it with `pip install --force-reinstall mediapipe==0.10.21`)")
    return path


@dataclass
class CompiledHandModel:
    """A compiled model with its fixed input side, run on batches of BGR squares."""

    name: str
    side: int
    compiled: object  # openvino.CompiledModel

    def __post_init__(self):
        self._request = self.compiled.create_infer_request()

    def run(self, squares: np.ndarray) -> list[np.ndarray]:
        """squares: (N, side, side, 3) uint8 BGR. Returns the model's outputs, one square after
        another along the first axis (as a model with a batch axis would)."""
        outs = []
        for i in range(len(squares)):
            self._request.infer({0: squares[i:i + 1]})
            outs.append([self._request.get_output_tensor(k).data.copy()
                         for k in range(len(self.compiled.outputs))])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


def compile_hand_model(core, name: str, complexity: int, device: str, cache_dir: str | None,
                       threads: int = 0, path: Path | None = None) -> CompiledHandModel:
    """`path`: another file of the same model (the INT8 IR from `int8.py`); default the
    mediapipe install's .tflite. Either takes RGB floats in 0..1; the pre-processing is added here."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    path = path or model_path(name, complexity)
    try:
        model = core.read_model(str(path))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        raise HandModelError(f"{path}: not a readable hand model ({e})") from e
    side = int(model.inputs[0].get_partial_shape()[1].get_length())
    model.reshape({model.inputs[0]: [1, side, side, 3]})
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
        .set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    ppp.input().preprocess().convert_color(ColorFormat.RGB).convert_element_type(ov.Type.f32) \
        .scale(255.0)
    model = ppp.build()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if threads and device.upper().startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = threads
    if cache_dir:
        config["CACHE_DIR"] = cache_dir
    compiled = core.compile_model(model, device, config)
    return CompiledHandModel(name, side, compiled)
