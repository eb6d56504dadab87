"""What both runtimes share: the interface the decoder drives, and the inputs they build alike.

A backend is built for one prompt and one set of answer tokens. It embeds the prompt once, prefills
the fixed part before the image once (its KV cache is restored for every decision), and returns
logits only for the answer tokens at the last position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_gesture.bundle import BundleManifest
from edge_gesture.vlm.prompt import Prompt


@dataclass(frozen=True)
class BackendOptions:
    vision_device: str = "CPU"
    language_device: str = "CPU"
    cache_dir: Path | None = None
    num_threads: int = 0  # 0: the runtime's default
    fallback_device: str = ""
    onnx_provider: str = "auto"  # auto, cpu, openvino
    precision: str = "auto"  # CPU inference precision: auto (the plugin picks), f32, bf16, f16
    local_vision: bool = True  # False: a server runs the vision encoder (vlm.remote)


class BackendError(Exception):
    """The runtime refused the bundle or the device, or an inference failed."""


def patch_inputs(manifest: BundleManifest) -> tuple[np.ndarray, np.ndarray]:
    """patch_attention_mask and patch_position_ids for one unpadded image.

    Positions are Idefics3's bucketing as transformers >= 4.55 computes it (and so optimum-intel
    and the export's PyTorch check): indices scaled by (1 - 1e-6) fall just below the bucket
    boundaries, so a row of n patches gets 0, 0, 1, ..., n-2. Reproduced in float32 as torch does.
    """
    side = manifest.image.size // manifest.image.patch_size
    mask = np.ones((1, side, side), dtype=bool)
    if manifest.image.patch_position_ids is not None:  # the export wrote down what torch computed
        return mask, np.asarray(manifest.image.patch_position_ids, dtype=np.int64)[None]
    boundaries = np.arange(1 / side, 1.0, 1 / side, dtype=np.float32)
    frac = np.arange(side, dtype=np.float32) / np.float32(side) * np.float32(1 - 1e-6)
    bucket = np.searchsorted(boundaries, frac.astype(np.float32), side="right")
    pos = (bucket[:, None] * side + bucket[None, :]).reshape(1, -1).astype(np.int64)
    return mask, pos


class Backend:
    """Subclasses implement _vision, _embed, _reset_to_prefix, _run_language and close.

    KV bookkeeping: `past` slots are in the cache, `_mask` says which of them count (a rejected
    lookahead token stays in the cache but is masked out), `_next_pos` is the next position id.
    """

    def __init__(self, manifest: BundleManifest, prompt: Prompt, answer_tokens: tuple[int, ...],
                 lookahead: tuple[int, ...] = ()):
        self.manifest = manifest
        self.prompt = prompt
        self.answer_tokens = np.asarray(answer_tokens, dtype=np.int64)
        self.lookahead = tuple(lookahead)
        self.past = 0
        self._mask = np.zeros(0, dtype=np.int64)
        self._next_pos = 0
        self._ahead_at = 0  # first KV slot of the prefilled lookahead tokens
        self._ahead_open = 0  # lookahead tokens not yet kept or masked

    @property
    def rows(self) -> int:
        """Positions whose logits the prefill returns: the prompt's last, then the lookahead's."""
        return 1 + len(self.lookahead)

    # -- set-up, called by subclasses once their models are loaded --
    def _prepare(self) -> None:
        """Embed the prompt and the answer tokens, then prefill the prefix."""
        self._prompt_embeds = self._embed(self.prompt.ids)  # [L, H]
        answer = self._embed(self.answer_tokens)
        self._answer_embeds = dict(zip((int(t) for t in self.answer_tokens), answer, strict=True))
        self._prefill_prefix()

    def _start(self, past: int) -> None:
        """The cache holds `past` valid slots (the prompt prefix, or nothing)."""
        self.past = past
        self._mask = np.ones(past, dtype=np.int64)
        self._next_pos = past
        self._ahead_open = 0

    def _prefill_prefix(self) -> None:
        """Run the fixed prompt prefix once and keep its KV cache (subclass stores it)."""
        raise NotImplementedError

    # -- per decision --
    def vision(self, pixel_values: np.ndarray) -> np.ndarray:
        """pixel_values [1,3,S,S] -> image features [image_tokens, hidden]."""
        feats = self._vision(pixel_values)
        feats = feats.reshape(-1, feats.shape[-1])
        if feats.shape[0] != self.prompt.image_tokens:
            raise BackendError(
                f"the vision model gave {feats.shape[0]} image features, the prompt has "
                f"{self.prompt.image_tokens} image tokens: the bundle is inconsistent "
                "(image_tokens_per_image does not match its vision model)"
            )
        return feats

    def prefill(self, image_features: np.ndarray) -> np.ndarray:
        """Restore the prefix cache, run image + question + lookahead tokens; answer-token
        logits [rows, K] at the prompt's last position and at each lookahead token."""
        self._reset_to_prefix()
        rest = self._prompt_embeds[self.prompt.image_start :].copy()
        rest[: self.prompt.image_tokens] = image_features
        if self.lookahead:
            rest = np.concatenate([rest, [self._answer_embeds[t] for t in self.lookahead]])
        logits = self._step(rest, self.rows)
        self._ahead_at, self._ahead_open = self.past - len(self.lookahead), len(self.lookahead)
        return logits

    def extend(self, tokens: list[int], kept: int | None = None) -> np.ndarray:
        """Feed chosen answer tokens; answer-token logits at the last one. `kept`: how many
        prefilled lookahead tokens the answer kept (the others are masked out from now on)."""
        if kept is not None and self._ahead_open:
            if kept < self._ahead_open:
                self._mask[self._ahead_at + kept : self._ahead_at + self._ahead_open] = 0
                self._next_pos = self._ahead_at + kept
            self._ahead_open = 0
        return self._step(np.stack([self._answer_embeds[t] for t in tokens]), 1)[-1]

    def _step(self, embeds: np.ndarray, rows: int = 1) -> np.ndarray:
        n = embeds.shape[0]
        mask = np.concatenate([self._mask, np.ones(n, dtype=np.int64)])
        positions = np.arange(self._next_pos, self._next_pos + n, dtype=np.int64)
        logits = self._run_language(embeds[None].astype(np.float32), mask[None], positions[None],
                                    rows)
        self._mask, self.past, self._next_pos = mask, self.past + n, self._next_pos + n
        return logits

    # -- subclass hooks --
    def _vision(self, pixel_values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reset_to_prefix(self) -> None:
        raise NotImplementedError

    def _run_language(self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                      rows: int) -> np.ndarray:
        """Run the new positions (embeds [1, n, H], position ids [1, n]) after the cached ones
        (mask [1, past + n] covers both); answer-token logits [rows, K] of the last rows."""
        raise NotImplementedError

    def close(self) -> None:
        pass
