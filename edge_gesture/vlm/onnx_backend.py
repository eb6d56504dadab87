"""ONNX Runtime backend: the same three parts as ONNX, the KV cache passed in and out explicitly.

CPU execution provider by default; the OpenVINO execution provider when `onnxruntime-openvino`
is installed and asked for (or `auto`). The output layer stays as exported (ONNX Runtime cannot
be told to skip rows of it), so here only the last position's answer-token logits are read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_gesture.bundle import BundleManifest
from edge_gesture.vlm.backend import Backend, BackendError, BackendOptions, patch_inputs
from edge_gesture.vlm.prompt import Prompt

log = logging.getLogger(__name__)

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def providers(opts: BackendOptions, device: str) -> list:
    have = ort.get_available_providers()
    want = opts.onnx_provider
    if want == "openvino" and "OpenVINOExecutionProvider" not in have:
        raise BackendError(
            "vlm.onnx_provider is 'openvino' but onnxruntime has no OpenVINOExecutionProvider "
            f"(providers: {', '.join(have)}); install onnxruntime-openvino or use 'cpu'"
        )
    if want in ("openvino", "auto") and "OpenVINOExecutionProvider" in have:
        ov_opts = {"device_type": device}
        if opts.cache_dir is not None:
            ov_opts["cache_dir"] = str(opts.cache_dir)
        return [("OpenVINOExecutionProvider", ov_opts), "CPUExecutionProvider"]
    if device.upper() not in ("CPU", "AUTO") and not device.upper().startswith("AUTO:"):
        raise BackendError(
            f"the ONNX bundle runs on the CPU execution provider here, which cannot use device "
            f"{device!r}: install onnxruntime-openvino, or set the device to CPU"
        )
    return ["CPUExecutionProvider"]


class OnnxBackend(Backend):
    def __init__(
        self,
        root: Path,
        manifest: BundleManifest,
        prompt: Prompt,
        answer_tokens: tuple[int, ...],
        opts: BackendOptions,
        lookahead: tuple[int, ...] = (),
    ):
        super().__init__(manifest, prompt, answer_tokens, lookahead)
        if manifest.device_profile == "npu":
            raise BackendError(
                f"{root}: an ONNX npu-profile bundle is not run by the daemon: for an NPU export "
                "--format openvino --device-profile npu; for the CPU use --device-profile cpu"
            )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if opts.num_threads:
            so.intra_op_num_threads = opts.num_threads
        so.log_severity_level = 3
        self.devices = {"vision": opts.vision_device, "language": opts.language_device}

        def session(role: str, device: str) -> ort.InferenceSession:
            path = root / manifest.models[role].file
            try:
                return ort.InferenceSession(str(path), so, providers=providers(opts, device))
            except Exception as e:  # ORT raises several unrelated classes for a bad model
                raise BackendError(f"{path}: ONNX Runtime could not load it: {e}") from None

        # With the encoder on a server (vlm.remote) its model is not even read here.
        self._vis = session("vision", opts.vision_device) if opts.local_vision else None
        emb = session("text_embeddings", "CPU")
        self._lm = session("language", opts.language_device)
        self._emb = emb
        self._vis_inputs = {i.name for i in self._vis.get_inputs()} if self._vis is not None else set()
        self._patch_mask, self._patch_pos = patch_inputs(manifest)
        lang = manifest.language
        self._kv_names = [
            (f"past_key_values.{i}.{kind}", f"present.{i}.{kind}")
            for i in range(lang.num_layers)
            for kind in ("key", "value")
        ]
        types = {i.name: i.type for i in self._lm.get_inputs()}
        missing = [p for p, _ in self._kv_names if p not in types]
        if missing:
            raise BackendError(
                f"{root / manifest.models['language'].file}: no input {missing[0]} "
                f"(manifest says {lang.num_layers} layers)"
            )
        self._kv_dtype = _DTYPES.get(types[self._kv_names[0][0]], np.float32)
        self._embeds_dtype = _DTYPES.get(types.get("inputs_embeds", ""), np.float32)
        self._outputs = ["logits"] + [present for _, present in self._kv_names]
        self._answer_idx = np.asarray(answer_tokens, dtype=np.int64)
        self._prepare()
        del self._emb, emb

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        name = self._emb.get_inputs()[0].name
        out = self._emb.run(None, {name: np.asarray(ids, dtype=np.int64)[None]})[0]
        return np.asarray(out[0], dtype=np.float32)

    def _vision(self, pixel_values: np.ndarray) -> np.ndarray:
        feed = {"pixel_values": pixel_values}
        if "patch_attention_mask" in self._vis_inputs:
            feed["patch_attention_mask"] = self._patch_mask
        if "patch_position_ids" in self._vis_inputs:
            feed["patch_position_ids"] = self._patch_pos
        return np.asarray(self._vis.run(None, feed)[0], dtype=np.float32)

    def _empty_kv(self) -> list[np.ndarray]:
        lang = self.manifest.language
        shape = (1, lang.num_key_value_heads, 0, lang.head_dim)
        return [np.zeros(shape, dtype=self._kv_dtype) for _ in self._kv_names]

    def _prefill_prefix(self) -> None:
        self._kv = self._empty_kv()
        self._start(0)
        prefix = self._prompt_embeds[: self.prompt.image_start]
        if len(prefix):
            self._step(prefix)
        self._prefix_len = self.past
        self._prefix_kv = self._kv  # never written to: each step makes new arrays

    def _reset_to_prefix(self) -> None:
        self._kv = self._prefix_kv
        self._start(self._prefix_len)

    def _run_language(self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                      rows: int) -> np.ndarray:
        feed = {
            "inputs_embeds": embeds.astype(self._embeds_dtype),
            "attention_mask": mask,
            "position_ids": positions,
        }
        for (name, _), value in zip(self._kv_names, self._kv, strict=True):
            feed[name] = value
        out = self._lm.run(self._outputs, feed)
        self._kv = out[1:]
        return np.asarray(out[0][0, -rows:][:, self._answer_idx], dtype=np.float32)
