"""OpenVINO backend: the bundle's three models driven with openvino.Core directly.

The language model is optimum-intel's stateful export (KV cache inside the model). Two changes
to its graph at load time: the output layer is cut to the answer tokens, applied to the last
position only (the full vocabulary at every prompt position is most of a prefill's arithmetic,
and the decoder needs a few dozen logits at one position); and the prompt's fixed prefix is
prefilled once, its state saved and put back before each decision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from edge_gesture.bundle import BundleManifest
from edge_gesture.vlm import derived, devices
from edge_gesture.vlm.backend import Backend, BackendError, BackendOptions, patch_inputs
from edge_gesture.vlm.memory import page_out_model_files
from edge_gesture.vlm.prompt import Prompt

log = logging.getLogger(__name__)


def compile_config(device: str, opts: BackendOptions) -> dict:
    cfg: dict = {"PERFORMANCE_HINT": "LATENCY"}
    if opts.cache_dir is not None:
        cfg["CACHE_DIR"] = str(opts.cache_dir)
    # Thread and precision settings are CPU-plugin properties: pass them to the CPU only (a GPU or
    # NPU refuses unknown keys), also when the CPU sits behind AUTO or HETERO.
    cpu: dict = {}
    if opts.num_threads:
        cpu["INFERENCE_NUM_THREADS"] = opts.num_threads
    if opts.precision != "auto":
        cpu["INFERENCE_PRECISION_HINT"] = opts.precision
        # The CPU keeps the KV cache in f16 by default whatever the hint; f32 means f32 throughout.
        if opts.precision == "f32":
            cpu["KV_CACHE_PRECISION"] = "f32"
    if cpu:
        if device.upper() == "CPU":
            cfg.update(cpu)
        elif "CPU" in device.upper():
            cfg["DEVICE_PROPERTIES"] = {"CPU": cpu}
    return cfg


def _logits_matmul(model: ov.Model) -> tuple[ov.Node, ov.Node]:
    for result in model.get_results():
        if "logits" in result.output(0).get_names() or "logits" in (
            result.input_value(0).get_names()
        ):
            node = result.input_value(0).get_node()
            if node.get_type_name() != "MatMul":
                raise BackendError(
                    f"language model: expected the logits to come from a MatMul, found "
                    f"{node.get_type_name()}; was the bundle exported by edge-gesture-export?"
                )
            return result, node
    raise BackendError("language model has no `logits` output")


def _constant_value(core: ov.Core, output: ov.Output) -> np.ndarray:
    """Evaluate a subgraph of constants (e.g. INT8 weights and their decompression) once."""
    sub = ov.Model([ops.result(output)], [], "lm_head_weights")
    compiled = core.compile_model(sub, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    value = compiled({})[0]
    return np.array(value, dtype=np.float32, copy=True)


def answer_only_language_model(
    core: ov.Core, model: ov.Model, answer_tokens: np.ndarray, *, last: int | None = 1
) -> ov.Model:
    """Rewrite the LM to return logits for `answer_tokens` only, at the `last` positions
    ([batch, min(seq, last), K]), or with last=None at every position ([batch, seq, K]; static
    models, whose last real token is not the last padded position)."""
    result, matmul = _logits_matmul(model)
    hidden = matmul.input_value(0)  # [batch, seq, hidden], after the final norm
    weight = _constant_value(core, matmul.input_value(1))
    transpose_b = matmul.get_attributes().get("transpose_b", False)
    rows = weight[answer_tokens] if transpose_b else weight[:, answer_tokens].T  # [K, hidden]
    if last is not None:  # Slice clamps: a 1-token step gives one row
        hidden = ops.slice(hidden, np.array([-last], dtype=np.int64),
                           np.array([np.iinfo(np.int64).max], dtype=np.int64),
                           np.array([1], dtype=np.int64), np.array([1], dtype=np.int64))
    logits = ops.matmul(hidden, ops.constant(np.ascontiguousarray(rows)), False, True)
    result.input(0).replace_source_output(logits.output(0))
    logits.output(0).set_names({"logits"})
    model.validate_nodes_and_infer_types()
    return model


class OpenVinoBackend(Backend):
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
        self._static = manifest.static_shapes
        if self._static is None and not manifest.language.stateful:
            raise BackendError(f"{root}: the OpenVINO language model must be stateful")
        core = ov.Core()
        available = core.available_devices
        vision_dev = devices.resolve(
            opts.vision_device, available, field="vlm.vision_device", fallback=opts.fallback_device
        )
        lang_dev = devices.resolve(
            opts.language_device, available, field="vlm.language_device",
            fallback=opts.fallback_device,
        )
        self.devices = {"vision": vision_dev, "language": lang_dev}
        models = manifest.models
        self._derived = _derived_dir(opts.cache_dir, manifest, prompt, answer_tokens, self.rows,
                                     opts.precision)
        self._patch_mask, self._patch_pos = patch_inputs(manifest)
        model_dirs = [root, opts.cache_dir]
        try:
            # With the encoder on a server (vlm.remote) its model is not even read here.
            self._vis = core.compile_model(
                self._one_image_vision_model(core, root / models["vision"].file),
                vision_dev, compile_config(vision_dev, opts),
            ) if opts.local_vision else None
            # Each compile leaves the file pages it read resident; handing them back between the
            # compiles keeps them from adding up (the start-up peak is ~90 MB lower).
            page_out_model_files(model_dirs)
            answer = self._load_derived(core, lang_dev, opts)
            if answer is None:
                lm = answer_only_language_model(
                    core, core.read_model(str(root / models["language"].file)),
                    self.answer_tokens, last=None if self._static is not None else self.rows,
                )
                # Embeddings are needed only for the fixed prompt and the answer tokens:
                # computed once here, then the embedding model is dropped.
                emb = core.compile_model(str(root / models["text_embeddings"].file), "CPU")
                self._emb_req = emb.create_infer_request()
                self._prompt_embeds = self._embed(self.prompt.ids)
                answer = self._embed(self.answer_tokens)
                del self._emb_req, emb
                self._save_derived(lm, answer)
                self._lm = core.compile_model(lm, lang_dev, compile_config(lang_dev, opts))
            page_out_model_files(model_dirs)
        except RuntimeError as e:
            raise BackendError(f"OpenVINO could not load {root}: {_first_line(e)}") from None
        self._answer_embeds = dict(zip((int(t) for t in self.answer_tokens), answer, strict=True))
        self._vis_req = self._vis.create_infer_request() if self._vis is not None else None
        self._lm_req = self._lm.create_infer_request()
        self._vis_inputs = {i.get_any_name() for i in self._vis.inputs} if self._vis is not None else set()
        if self._static is not None:
            self._init_static_kv()
        self._prefill_prefix()

    def _load_derived(self, core: ov.Core, device: str, opts: BackendOptions) -> np.ndarray | None:
        """Warm start: compile the rewritten LM and read the fixed embeddings an earlier run
        saved; returns the answer tokens' embeddings, or None when there is nothing (usable)
        to load. What fails to load is deleted, so the caller builds and saves it afresh."""
        if self._derived is None:
            return None
        lm_path, emb_path = self._derived / _LM_FILE, self._derived / _EMBEDDINGS_FILE
        if not (lm_path.is_file() and emb_path.is_file()):
            return None
        hidden = self.manifest.language.hidden_size
        try:
            with np.load(emb_path) as z:
                prompt_embeds, answer = z["prompt"], z["answer"]
            want = {"prompt": (len(self.prompt.ids), hidden), "answer": (len(self.answer_tokens), hidden)}
            for name, got in (("prompt", prompt_embeds), ("answer", answer)):
                if got.shape != want[name]:
                    raise ValueError(f"{name} embeddings are {got.shape}, expected {want[name]}")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            derived.discard(self._derived, e)  # the LM beside it is no more trustworthy
            return None
        try:
            self._lm = core.compile_model(str(lm_path), device, compile_config(device, opts))
        except RuntimeError as e:
            derived.discard(self._derived, e)
            return None
        self._prompt_embeds = prompt_embeds
        return answer

    def _save_derived(self, lm: ov.Model, answer: np.ndarray) -> None:
        """Keep the rewritten LM and the fixed embeddings for the next start. The embeddings
        go last: their file's presence says the LM beside it is complete."""
        if self._derived is None:
            return
        lm_path, emb_path = self._derived / _LM_FILE, self._derived / _EMBEDDINGS_FILE
        tmp_xml = derived.temp_name(lm_path)
        tmp_bin, bin_path = tmp_xml.with_suffix(".bin"), lm_path.with_suffix(".bin")
        try:
            self._derived.mkdir(parents=True, exist_ok=True)
            derived.remove_stale_temps(self._derived)
            emb_path.unlink(missing_ok=True)
            ov.save_model(lm, str(tmp_xml), compress_to_fp16=False)
            derived.commit((tmp_bin, bin_path), (tmp_xml, lm_path))
            derived.save_npz(emb_path, prompt=self._prompt_embeds, answer=answer)
        except (OSError, RuntimeError) as e:
            # Not fatal: this start has what it needs; the next one derives it again.
            log.warning("could not save the derived language model in %s: %s", self._derived,
                        _first_line(e))
        finally:
            tmp_xml.unlink(missing_ok=True)
            tmp_bin.unlink(missing_ok=True)

    def _one_image_vision_model(self, core: ov.Core, path: Path) -> ov.Model:
        """The vision model with the shapes of the one image the daemon sends. The export keeps
        them dynamic (batch and image size) for optimum-intel; fixed shapes let the plugin plan
        its kernels and memory once (about 10% faster on the CPU, and what GPU and NPU prefer)."""
        model = core.read_model(str(path))
        size = self.manifest.image.size
        fixed = {"pixel_values": [1, 3, size, size],
                 "patch_attention_mask": list(self._patch_mask.shape),
                 "patch_position_ids": list(self._patch_pos.shape)}
        shapes = {i.get_any_name(): fixed[i.get_any_name()] for i in model.inputs
                  if i.get_any_name() in fixed and i.get_partial_shape().is_dynamic}
        if shapes:
            model.reshape(shapes)
        return model

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if self._static is None:
            out = self._emb_req.infer({0: ids[None]})
            return np.array(out[0][0], dtype=np.float32, copy=True)
        c = self._static.max_prompt_length  # a static embedding model takes C ids at a time
        parts = []
        for start in range(0, len(ids), c):
            chunk = ids[start: start + c]
            padded = np.zeros((1, c), dtype=np.int64)
            padded[0, : len(chunk)] = chunk
            parts.append(np.array(self._emb_req.infer({0: padded})[0][0, : len(chunk)],
                                  dtype=np.float32))
        return np.concatenate(parts)

    def _vision(self, pixel_values: np.ndarray) -> np.ndarray:
        feed = {"pixel_values": pixel_values}
        if "patch_attention_mask" in self._vis_inputs:
            feed["patch_attention_mask"] = self._patch_mask
        if "patch_position_ids" in self._vis_inputs:
            feed["patch_position_ids"] = self._patch_pos
        return np.array(self._vis_req.infer(feed)[0], copy=True)

    def _prefill_prefix(self) -> None:
        self._lm_req.reset_state()
        self._start(0)
        prefix = self._prompt_embeds[: self.prompt.image_start]
        saved = self._derived / _PREFIX_STATE_FILE if self._derived is not None else None
        if self._static is None and saved is not None and saved.is_file():
            # Warm start: the prefix's KV cache from an earlier run (same model, same prompt).
            names = {s.name for s in self._lm_req.query_state()}
            try:
                with np.load(saved) as z:
                    state = {name: z[name] for name in z.files}
                if set(state) != names:
                    raise ValueError(f"holds states {sorted(state)}, the model has {sorted(names)}")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                derived.discard(saved, e)
            else:
                self._prefix_state = state
                self._prefix_len = len(prefix)
                self._start(self._prefix_len)
                return
        if len(prefix):
            self._step(prefix)
        self._prefix_len = self.past
        if self._static is not None:
            self._prefix_kv = [buf[:, :, : self.past].copy() for buf in self._kv]
        else:
            self._prefix_state = {
                s.name: np.array(s.state.data, copy=True) for s in self._lm_req.query_state()
            }
            if saved is not None:
                try:
                    derived.save_npz(saved, **self._prefix_state)
                except OSError as e:
                    log.warning("could not save the prompt prefix's state in %s: %s", saved, e)

    def _reset_to_prefix(self) -> None:
        if self._static is not None:
            for buf, saved in zip(self._kv, self._prefix_kv, strict=True):
                buf[:, :, : self._prefix_len] = saved
        else:
            self._lm_req.reset_state()
            if self._prefix_len:
                for s in self._lm_req.query_state():
                    s.state = ov.Tensor(self._prefix_state[s.name])
        self._start(self._prefix_len)

    # -- static (npu profile): the caller owns a fixed KV buffer, prompts go in chunks of C --
    def _init_static_kv(self) -> None:
        lang, k = self.manifest.language, self._static.kv_length
        names = [i.get_any_name() for i in self._lm.inputs]
        self._kv_names = [n for n in names if n.startswith("past_key_values.")]
        if len(self._kv_names) != 2 * lang.num_layers:
            raise BackendError(
                f"static language model has {len(self._kv_names)} past_key_values inputs, the "
                f"manifest says {lang.num_layers} layers"
            )
        self._present = [n.replace("past_key_values.", "present.", 1) for n in self._kv_names]
        shape = (1, lang.num_key_value_heads, k, lang.head_dim)
        self._kv = [np.zeros(shape, dtype=np.float32) for _ in self._kv_names]

    def _run_static(self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                    rows: int) -> np.ndarray:
        c, k = self._static.max_prompt_length, self._static.kv_length
        n = embeds.shape[1]
        past = mask.shape[1] - n
        out_rows = []
        for start in range(0, n, c):
            m = min(c, n - start)
            at = past + start  # buffer slots in use before this chunk
            x = np.zeros((1, c, embeds.shape[2]), dtype=np.float32)
            x[0, :m] = embeds[0, start: start + m]
            full = np.zeros((1, k + c), dtype=np.int64)
            full[0, :at] = mask[0, :at]
            full[0, k: k + m] = 1
            pos = np.zeros((1, c), dtype=np.int64)
            pos[0, :m] = positions[0, start: start + m]
            feed = {"inputs_embeds": x, "attention_mask": full, "position_ids": pos}
            feed.update(zip(self._kv_names, self._kv, strict=True))
            out = self._lm_req.infer(feed)
            for buf, name in zip(self._kv, self._present, strict=True):
                buf[:, :, at: at + m] = out[name][:, :, :m]
            out_rows.append(np.array(out["logits"][0, :m], dtype=np.float32))
        return np.concatenate(out_rows)[-rows:]

    def _run_language(self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                      rows: int) -> np.ndarray:
        if self._static is not None:
            return self._run_static(embeds, mask, positions, rows)
        out = self._lm_req.infer(
            {
                "inputs_embeds": embeds,
                "attention_mask": mask,
                "position_ids": positions,
                "beam_idx": np.zeros((1,), dtype=np.int32),
            }
        )
        return np.array(out[0][0, -rows:], dtype=np.float32, copy=True)


#: Bump when what _derived_dir holds changes meaning.
_DERIVED_VERSION = 2
_LM_FILE = "language_answers.xml"
_EMBEDDINGS_FILE = "embeddings.npz"
_PREFIX_STATE_FILE = "prefix_state.npz"


def _derived_dir(
    cache_dir: Path | None, manifest: BundleManifest, prompt: Prompt,
    answer_tokens: tuple[int, ...], rows: int, precision: str,
) -> Path | None:
    """Cache folder for what this runtime derives from the bundle for one prompt: the LM with
    the answer-only output layer, the prompt's and answer tokens' embeddings, and the KV cache
    of the prompt's fixed prefix. Keyed by the
    model files' checksums, the prompt and the answer tokens, so any change makes a new one."""
    if cache_dir is None:
        return None
    files = manifest.files
    key = json.dumps(
        {
            "v": _DERIVED_VERSION,
            "lm": files[manifest.models["language"].file].sha256,
            "emb": files[manifest.models["text_embeddings"].file].sha256,
            "lm_bin": files.get(manifest.models["language"].file[:-4] + ".bin", files[
                manifest.models["language"].file]).sha256,
            "prompt": prompt.ids.tolist(),
            "answer": list(answer_tokens),
            "rows": rows,
            "precision": precision,  # the saved prefix KV cache was computed at it
        },
        sort_keys=True,
    )
    return Path(cache_dir) / "vlm" / hashlib.sha256(key.encode()).hexdigest()[:20]


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # OpenVINO's messages start with source locations; the reason is usually the last line.
    return lines[-1] if lines else type(e).__name__
