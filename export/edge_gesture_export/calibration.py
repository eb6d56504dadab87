"""Calibration images for static INT8 quantization of the vision encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_gesture_export.errors import ExportError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_IMAGES = 300


def find_images(folder: Path | None, needed_for: str = "--quantize-vision static-int8") -> list[Path]:
    """Image files under folder (recursively, sorted, at most MAX_IMAGES); errors say what to pass."""
    if folder is None:
        raise ExportError(
            f"{needed_for} needs --calibration DIR: a folder of images like the "
            "ones the daemon will see (hand crops are best; a few dozen are enough)"
        )
    if not folder.exists():
        raise ExportError(f"--calibration {folder}: no such folder")
    if not folder.is_dir():
        raise ExportError(f"--calibration {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(
            f"--calibration {folder}: no images in it (looked for {', '.join(IMAGE_SUFFIXES)}, "
            "in subfolders too)"
        )
    return files[:MAX_IMAGES]


def vision_samples(
    files: list[Path], processor: Any, input_names: list[str], position_ids: list[int]
) -> list[dict[str, np.ndarray]]:
    """Vision-model inputs for each image, preprocessed exactly as the processor does."""
    from PIL import Image, UnidentifiedImageError

    samples = []
    for f in files:
        try:
            with Image.open(f) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise ExportError(f"--calibration: cannot read {f}: {e}") from None
        pv = processor.image_processor(images=[[img]], return_tensors="np")["pixel_values"][0]
        side = int(round(len(position_ids) ** 0.5))
        feeds = {
            "pixel_values": pv.astype(np.float32),
            "patch_attention_mask": np.ones((1, side, side), dtype=bool),
            "patch_position_ids": np.array([position_ids], dtype=np.int64),
        }
        samples.append({n: feeds[n] for n in input_names})
    return samples
