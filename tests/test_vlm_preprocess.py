"""Hand crops become the pixel_values SmolVLM's own processor would give (image splitting off)."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from edge_gesture.bundle import ImageSpec
from edge_gesture.vlm.preprocess import SIDE_STEP, hand_crop, pixel_values, square_box

SMOLVLM = ImageSpec(
    size=512, patch_size=16, pre_resize_longest_edge=2048, resample="lanczos",
    rescale_factor=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
)


@pytest.fixture(scope="module")
def processor(smolvlm_files):
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers (the export extra) to compare with its processor")
    from transformers import Idefics3Processor

    return Idefics3Processor.from_pretrained(smolvlm_files)


def test_pixels_match_idefics3_processor_on_real_hand_photos(processor, gesture_data):
    files = sorted(gesture_data.glob("*/*.jpg"))[::12]
    assert len(files) >= 8
    for f in files:
        bgr = cv2.imread(str(f))
        h, w = bgr.shape[:2]
        s = min(h, w)
        for sub in (bgr[:s, :s], bgr[h // 4: h // 4 + s // 2, w // 4: w // 4 + s // 2]):
            rgb = np.ascontiguousarray(sub[:, :, ::-1])
            ref = processor.image_processor(
                images=[rgb], do_image_splitting=False, return_tensors="np"
            )["pixel_values"][0, 0]
            ours = pixel_values(rgb, SMOLVLM)[0]
            assert ours.shape == ref.shape == (3, 512, 512)
            # In uint8 levels: the processor rounds to uint8 after each PIL pass, we once; and
            # it clips LANCZOS overshoot at its 2048 px intermediate, which we never build, so a
            # few pixels at saturated edges differ by more.
            levels = np.abs(ours - ref) * 255 / 2
            assert levels.mean() < 0.3, f.name
            assert np.percentile(levels, 99) <= 1.01, f.name
            assert np.percentile(levels, 99.9) <= 2.01, f.name
            assert levels.max() <= 24, f.name


def test_plain_opencv_resize_would_not_match(processor, gesture_data):
    """Why preprocessing is not a cv2.resize: the processor's LANCZOS double resize differs."""
    bgr = cv2.imread(str(sorted(gesture_data.glob("fist/*.jpg"))[0]))
    s = min(bgr.shape[:2])
    rgb = np.ascontiguousarray(bgr[:s, :s, ::-1])
    ref = processor.image_processor(images=[rgb], do_image_splitting=False,
                                    return_tensors="np")["pixel_values"][0, 0]
    naive = cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    naive = (naive / 255 - 0.5) / 0.5
    assert np.abs(naive.transpose(2, 0, 1) - ref).mean() * 255 / 2 > 3 * np.abs(
        pixel_values(rgb, SMOLVLM)[0] - ref).mean() * 255 / 2


def test_crop_is_a_square_around_the_hand_inside_the_frame():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[200:260, 300:340] = (0, 0, 255)  # a red "hand" (BGR)
    left, top, side = square_box((300, 200, 340, 260), 640, 480, margin=0.25)
    assert side % SIDE_STEP == 0 and side >= 60 * 1.5
    assert left <= 300 and left + side >= 340 and top <= 200 and top + side >= 260
    c = hand_crop(frame, (300, 200, 340, 260), 0.25)
    assert c.shape == (side, side, 3)
    assert c[c.shape[0] // 2, c.shape[1] // 2].tolist() == [255, 0, 0]  # now RGB
    # A hand at the edge: the square slides inside rather than being cut or padded.
    left, top, side = square_box((600, 440, 640, 480), 640, 480, margin=0.5)
    assert left + side <= 640 and top + side <= 480 and left >= 0 and top >= 0
    # A hand filling the frame: the square is as large as the frame's short side.
    assert square_box((0, 0, 640, 480), 640, 480, margin=0.25)[2] == 480
