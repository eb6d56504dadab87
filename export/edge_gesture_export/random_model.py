"""A checkpoint with the exact architecture of a real one and random weights, for benchmarks on
machines that cannot download weights: export time, bundle size and inference speed do not depend
on the weight values (the answers do, so accuracy is never measured on it)."""

from __future__ import annotations

import shutil
from pathlib import Path

from edge_gesture_export.source import resolve

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def build_random_model(config_dir: Path, dest: Path, *, seed: int = 0) -> Path:
    """Save a random-weight model built from config_dir's config.json into dest, with
    config_dir's processor, tokenizer and generation files beside it."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    resolve(str(config_dir))  # refuses what is not Idefics3/SmolVLM, by name
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # .float(): SmolVLM's sub-configs say bfloat16, which from_config partly honours.
    model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(config_dir))
    model.float().eval().save_pretrained(dest)
    for p in Path(config_dir).iterdir():
        if p.is_file() and p.name != "config.json" and p.suffix not in _WEIGHT_SUFFIXES:
            if p.suffix in (".json", ".txt", ".jinja", ".model"):
                shutil.copyfile(p, dest / p.name)  # copyfile: not the source's read-only mode
    return dest
