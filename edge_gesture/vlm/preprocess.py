"""Hand crop to pixel_values, matching Idefics3's image processor with image splitting off.

The processor resizes twice with PIL (first so the longest edge is `pre_resize_longest_edge`,
2048 for SmolVLM, then to size x size), rescales to [0, 1] and normalises. PIL's resize is not
OpenCV's: it widens the filter when shrinking (antialiasing), so the model saw softer pixels than
cv2.resize would give. We build PIL's filter weights as matrices, fold both resizes into one
matrix per axis and apply it with two matmuls per channel; rounding happens once instead of after
each pass, which keeps us within a level or two of the processor's uint8 pixels.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from edge_gesture.bundle import ImageSpec


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


def _cubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
        np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )


def _sinc(x: np.ndarray) -> np.ndarray:
    return np.sinc(x)  # numpy's sinc is the normalised sin(pi x) / (pi x), as PIL's


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3.0), 0.0)


def _hamming(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, _sinc(x) * (0.54 + 0.46 * np.cos(np.pi * x)), 0.0)


# PIL's filters and their supports (Imaging/Resample.c). SmolVLM's processor asks for LANCZOS.
_FILTERS = {
    "bilinear": (_triangle, 1.0),
    "box": (_box, 0.5),
    "bicubic": (_cubic, 2.0),
    "lanczos": (_lanczos, 3.0),
    "hamming": (_hamming, 1.0),
}


def pil_resize_matrix(in_size: int, out_size: int, resample: str) -> np.ndarray:
    """(out_size, in_size) weights of PIL's 1-D resize; rows sum to 1."""
    if resample not in _FILTERS:
        raise ValueError(f"resample {resample!r} is not supported (use one of {sorted(_FILTERS)})")
    fn, support = _FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    center = (np.arange(out_size) + 0.5) * scale
    lo = np.maximum((center - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((center + support + 0.5).astype(np.int64), in_size)
    x = np.arange(in_size)[None, :]
    inside = (x >= lo[:, None]) & (x < hi[:, None])
    w = np.where(inside, fn((x - center[:, None] + 0.5) / filterscale), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return w / np.where(total == 0, 1.0, total)


def _pre_resize_shape(h: int, w: int, longest: int) -> tuple[int, int]:
    # Idefics3's _resize_output_size_rescale_to_max_len: aspect kept, an odd short edge rounded up.
    aspect = w / h
    if w >= h:
        w2, h2 = longest, int(longest / aspect)
        h2 += h2 % 2
    else:
        h2, w2 = longest, int(longest * aspect)
        w2 += w2 % 2
    return max(h2, 1), max(w2, 1)


@lru_cache(maxsize=4)
def _cached_resize_matrix(in_size: int, out_size: int, resample: str) -> np.ndarray:
    return pil_resize_matrix(in_size, out_size, resample)


# Few sizes occur (crop sides are multiples of SIDE_STEP); each entry is about 1-3 MB.
@lru_cache(maxsize=24)
def _axis_matrices(
    h: int, w: int, size: int, pre_resize: int | None, resample: str
) -> tuple[np.ndarray, np.ndarray]:
    if pre_resize:
        h1, w1 = _pre_resize_shape(h, w, pre_resize)
        rows = _cached_resize_matrix(h1, size, resample) @ pil_resize_matrix(h, h1, resample)
        cols = _cached_resize_matrix(w1, size, resample) @ pil_resize_matrix(w, w1, resample)
    else:
        rows = pil_resize_matrix(h, size, resample)
        cols = pil_resize_matrix(w, size, resample)
    return rows.astype(np.float32), np.ascontiguousarray(cols.T.astype(np.float32))


def resized_pixels(rgb: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """uint8 RGB image (H, W, 3) -> the model's square of uint8 RGB pixels (size, size, 3), as
    the processor resizes it: what a remote vision encoder with normalisation built in takes."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    rows, cols_t = _axis_matrices(
        rgb.shape[0], rgb.shape[1], spec.size, spec.pre_resize_longest_edge, spec.resample
    )
    # C order: numpy hands strided operands to a slow non-BLAS loop.
    planes = np.moveaxis(rgb, 2, 0).astype(np.float32, order="C")  # (3, H, W)
    resized = np.stack([rows @ plane @ cols_t for plane in planes], axis=-1)  # (size, size, 3)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def normalised(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """uint8 (size, size, 3) pixels -> float32 pixel_values [1, 3, size, size]."""
    planes = np.moveaxis(pixels, 2, 0).astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    out = (planes * np.float32(spec.rescale_factor) - mean) / std
    return out[None].astype(np.float32)


def pixel_values(rgb: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """uint8 RGB image (H, W, 3) -> float32 pixel_values [1, 3, size, size]."""
    return normalised(resized_pixels(rgb, spec), spec)


SIDE_STEP = 16


def square_box(
    bbox: tuple[int, int, int, int], frame_w: int, frame_h: int, margin: float
) -> tuple[int, int, int]:
    """A square (x0, y0, side) around the hand box, widened by `margin` of its longer side on
    every side, moved (not cut) to stay inside the frame; never larger than the frame allows.

    The side is rounded up to a multiple of SIDE_STEP so that few distinct crop sizes occur and
    their resize matrices stay cached."""
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0, 1) * (1.0 + 2.0 * margin)
    side = -(-int(np.ceil(side)) // SIDE_STEP) * SIDE_STEP
    side = int(min(side, frame_w, frame_h))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left = int(round(cx - side / 2.0))
    top = int(round(cy - side / 2.0))
    left = min(max(left, 0), frame_w - side)
    top = min(max(top, 0), frame_h - side)
    return left, top, side


def hand_crop(frame_bgr: np.ndarray, bbox: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """The square RGB crop the VLM sees for one hand."""
    h, w = frame_bgr.shape[:2]
    left, top, side = square_box(bbox, w, h, margin)
    crop = frame_bgr[top : top + side, left : left + side]
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
