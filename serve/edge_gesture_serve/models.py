"""The two models `edge-gesture serve` offers, both over one loaded runtime.

- `edge-gesture-vision`: uint8 pixels [1, S, S, 3] (the crop as the daemon resized it) in,
  image features [1, tokens, hidden] out: the daemon's split = "vision".
- `edge-gesture-decision`: a uint8 RGB crop [1, H, W, 3] and the gesture names the daemon enables
  in, the answer (label, probability) out: split = "all".

Both report the bundle they run as their version (the manifest's sha256), which the daemon checks
against its own bundle before it trusts the features.

The runtime runs one inference at a time (its language model keeps one KV cache, and a compiled
model's one infer request is not for two threads); requests wait their turn in a thread, never on
the server's event loop, so health, metadata and metrics answer while a decision runs.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from edge_gesture.vlm.preprocess import normalised
from edge_gesture.vlm.remote_runtime import (
    CROP_INPUT,
    FEATURES_OUTPUT,
    GESTURES_INPUT,
    LABEL_OUTPUT,
    PROBABILITY_OUTPUT,
)
from edge_gesture.vlm.runtime import VlmRuntime
from edge_gesture.vlm.serving import PIXELS_INPUT, manifest_sha256

VISION_MODEL = "edge-gesture-vision"
DECISION_MODEL = "edge-gesture-decision"
#: The crop sizes a decision accepts: the daemon's crops are 16-pixel steps up to the frame's height.
MIN_CROP, MAX_CROP = 16, 4096


class SharedRuntime:
    """One VlmRuntime, taken by one request at a time."""

    def __init__(self, runtime: VlmRuntime):
        self.runtime = runtime
        self.sha256 = manifest_sha256(runtime.root)
        self.size = runtime.manifest.image.size
        self.image_tokens = runtime.prompt.image_tokens
        self.hidden = runtime.manifest.language.hidden_size
        self.gestures = runtime.labels[:-1]  # the last is "none"
        self._lock = threading.Lock()

    def features(self, pixels: np.ndarray) -> np.ndarray:
        pv = normalised(pixels[0], self.runtime.manifest.image)
        with self._lock:
            feats = self.runtime.backend.vision(pv)
        return feats.reshape(1, self.image_tokens, self.hidden).astype(np.float32, copy=False)

    def decide(self, crop: np.ndarray) -> tuple[str, float]:
        with self._lock:
            result, _ = self.runtime.classify(crop[0])
        return result.label, float(result.probability)


def _input(payload: InferRequest, name: str, model: str) -> np.ndarray:
    for i in payload.inputs:
        if i.name == name:
            try:
                return i.as_numpy()
            except ValueError as e:  # data that does not fill the shape it claims
                raise InvalidInput(f"input {name!r}: {e}") from None
    have = [i.name for i in payload.inputs]
    raise InvalidInput(f"model {model!r} needs input {name!r}; the request has {have}")


def _response(payload: InferRequest, model: str, version: str,
              outputs: dict[str, np.ndarray]) -> InferResponse:
    infer_outputs = []
    for name, value in outputs.items():
        datatype = "BYTES" if value.dtype == object else {"float32": "FP32"}[value.dtype.name]
        # Kept as an array: kserve encodes it once, as binary data for gRPC and for a REST
        # request that asked for binary outputs (read from each requested output), else JSON.
        infer_outputs.append(InferOutput(name=name, shape=list(value.shape), datatype=datatype,
                                         data=value))
    return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=model,
                         model_version=version, infer_outputs=infer_outputs,
                         requested_outputs=payload.request_outputs)


class VisionModel(Model):
    def __init__(self, shared: SharedRuntime, name: str = VISION_MODEL):
        super().__init__(name)
        self.shared = shared
        self.ready = True

    def get_input_types(self) -> list[dict]:
        s = self.shared.size
        return [{"name": PIXELS_INPUT, "datatype": "UINT8", "shape": [1, s, s, 3]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": FEATURES_OUTPUT, "datatype": "FP32",
                 "shape": [1, self.shared.image_tokens, self.shared.hidden]}]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        pixels = _input(payload, PIXELS_INPUT, self.name)
        s = self.shared.size
        if pixels.dtype != np.uint8 or pixels.shape != (1, s, s, 3):
            raise InvalidInput(f"model {self.name!r} takes {PIXELS_INPUT} UINT8 [1, {s}, {s}, 3]; "
                               f"got {payload.inputs[0].datatype} {list(pixels.shape)}")
        feats = await asyncio.to_thread(self.shared.features, pixels)
        return _response(payload, self.name, self.shared.sha256, {FEATURES_OUTPUT: feats})


class DecisionModel(Model):
    def __init__(self, shared: SharedRuntime, name: str = DECISION_MODEL):
        super().__init__(name)
        self.shared = shared
        self.ready = True

    def get_input_types(self) -> list[dict]:
        return [{"name": CROP_INPUT, "datatype": "UINT8", "shape": [1, -1, -1, 3]},
                {"name": GESTURES_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [1]},
                {"name": PROBABILITY_OUTPUT, "datatype": "FP32", "shape": [1]}]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        crop = _input(payload, CROP_INPUT, self.name)
        if (crop.dtype != np.uint8 or crop.ndim != 4 or crop.shape[0] != 1 or crop.shape[3] != 3
                or not (MIN_CROP <= crop.shape[1] <= MAX_CROP and MIN_CROP <= crop.shape[2] <= MAX_CROP)):
            raise InvalidInput(f"model {self.name!r} takes {CROP_INPUT} UINT8 [1, H, W, 3] with H "
                               f"and W {MIN_CROP}-{MAX_CROP}; got {list(crop.shape)}")
        asked = tuple(str(g.decode() if isinstance(g, bytes) else g)
                      for g in _input(payload, GESTURES_INPUT, self.name).reshape(-1))
        if asked != self.shared.gestures:
            raise InvalidInput(f"this server answers for gestures {list(self.shared.gestures)}; "
                               f"the request enables {list(asked)}: give both the same "
                               "[gestures] enabled (and custom descriptions)")
        label, probability = await asyncio.to_thread(self.shared.decide, crop)
        return _response(payload, self.name, self.shared.sha256, {
            LABEL_OUTPUT: np.asarray([label], dtype=object),
            PROBABILITY_OUTPUT: np.asarray([probability], dtype=np.float32),
        })
