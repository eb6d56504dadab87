"""Load a bundle and answer "which gesture?" for a hand crop, torch-free.

`VlmRuntime` ties the pieces together: the manifest (validated, checksums checked), the tokenizer,
the prompt built from the enabled gestures, the answer trie and a backend (OpenVINO for an
OpenVINO bundle, ONNX Runtime for an ONNX one). One decision: preprocess, vision, prefill of the
image and question, then constrained decoding.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edge_gesture.bundle import MANIFEST_NAME, BundleManifest, load_bundle_manifest
from edge_gesture.vlm.backend import Backend, BackendError, BackendOptions
from edge_gesture.vlm.decode import Decoded, LabelTrie, decode
from edge_gesture.vlm.memory import page_out_model_files
from edge_gesture.vlm.preprocess import pixel_values, resized_pixels
from edge_gesture.vlm.prompt import Prompt, build_prompt, label_token_ids


@dataclass(frozen=True)
class Timings:
    preprocess_s: float
    vision_s: float
    language_s: float  # prefill and decode steps

    @property
    def total_s(self) -> float:
        return self.preprocess_s + self.vision_s + self.language_s


class VlmRuntime:
    def __init__(
        self,
        bundle: str | Path,
        gestures: Sequence[tuple[str, str]],
        opts: BackendOptions,
        *,
        verify_checksums: bool = True,
        allow_unverified: bool = False,
        remote_vision=None,
    ):
        """`remote_vision(root, manifest, image_tokens)`, when given, builds the callable that
        turns uint8 pixels [S, S, 3] into image features on a server (remote_runtime.RemoteVision);
        the bundle's own vision model is then not loaded."""
        self.root = Path(bundle)
        self._cache_dir = opts.cache_dir
        stamp = _verified_stamp(self.root, opts.cache_dir) if verify_checksums else None
        full = verify_checksums and not (stamp is not None and stamp.exists())
        self.manifest: BundleManifest = load_bundle_manifest(
            self.root, checksums=full, allow_unverified=allow_unverified
        )
        if full and stamp is not None:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()
        tok_path = self.root / self.manifest.tokenizer
        try:
            self.tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as e:  # the tokenizers library raises plain Exception subclasses
            raise BackendError(f"{tok_path}: not a usable tokenizer.json: {e}") from None
        self.prompt: Prompt = build_prompt(self.manifest, self.tokenizer, gestures)
        self.trie = LabelTrie(
            label_token_ids(self.tokenizer, self.prompt.labels),
            end_token=self.manifest.tokens.end_of_utterance.id,
        )
        static = self.manifest.static_shapes
        # The worst case: the lookahead prefilled, then a whole other answer after it.
        need = len(self.prompt.ids) + len(self.trie.lookahead) + self.trie.depth
        if static is not None and need > static.kv_length:
            raise BackendError(
                f"the prompt ({len(self.prompt.ids)} tokens) and the answer need up to {need} KV "
                "slots; the bundle's static language model "
                f"has {static.kv_length}: re-export with --kv-length {need} or more, or enable "
                "fewer gestures"
            )
        self.remote_vision = None
        if remote_vision is not None:
            opts = replace(opts, local_vision=False)
            self.remote_vision = remote_vision(self.root, self.manifest, self.prompt.image_tokens)
        self.backend: Backend = _make_backend(self.root, self.manifest, self.prompt, self.trie,
                                              opts)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.prompt.labels

    def classify(self, rgb: np.ndarray) -> tuple[Decoded, Timings]:
        """Answer for one square RGB crop (uint8, any size)."""
        t0 = time.perf_counter()
        if self.remote_vision is not None:
            pixels = resized_pixels(rgb, self.manifest.image)
            t1 = time.perf_counter()
            feats = self.remote_vision(pixels)
        else:
            pv = pixel_values(rgb, self.manifest.image)
            t1 = time.perf_counter()
            feats = self.backend.vision(pv)
        t2 = time.perf_counter()
        first = self.backend.prefill(feats)
        result = decode(self.trie, first, self.backend.extend)
        t3 = time.perf_counter()
        return result, Timings(t1 - t0, t2 - t1, t3 - t2)

    def warm_up(self) -> Timings:
        """One decision on a grey image: first inferences allocate and tune kernels. Then the
        model-file pages compiling and warming up touched are handed back (see memory.py)."""
        size = self.manifest.image.size
        timings = self.classify(np.full((size, size, 3), 128, dtype=np.uint8))[1]
        page_out_model_files([self.root, self._cache_dir])
        return timings

    def probe(self) -> None:
        """After a failed decision: raises unless the remote encoder is back (local: no-op)."""
        if self.remote_vision is not None:
            self.remote_vision.check()

    def close(self) -> None:
        self.backend.close()
        if self.remote_vision is not None:
            self.remote_vision.client.close()


def _verified_stamp(root: Path, cache_dir: Path | None) -> Path | None:
    """A marker meaning "these exact files passed the sha256 check": named after the manifest
    and every file's size, mtime and inode, so any replaced or rewritten file hashes again.
    Sizes are still checked on every load."""
    if cache_dir is None:
        return None
    h = hashlib.sha256()
    try:
        h.update((root / MANIFEST_NAME).read_bytes())
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}\n".encode())
    except OSError:
        return None  # load_bundle_manifest reports what is wrong
    return Path(cache_dir) / "vlm" / "verified" / h.hexdigest()[:32]


def _make_backend(
    root: Path, manifest: BundleManifest, prompt: Prompt, trie: LabelTrie, opts: BackendOptions
) -> Backend:
    if manifest.format == "openvino":
        from edge_gesture.vlm.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(root, manifest, prompt, trie.tokens, opts, trie.lookahead)
    from edge_gesture.vlm.onnx_backend import OnnxBackend

    return OnnxBackend(root, manifest, prompt, trie.tokens, opts, trie.lookahead)
