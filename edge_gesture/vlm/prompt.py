"""The VLM's question, built once at start-up from the enabled gestures.

The user turn is the gesture list (name and one-line description each), the question, then the
image: the chat template's rendering of a text-then-image message. Everything before the image
never changes while the daemon runs, so it is prefilled once and its KV cache reused; per
decision only the image and the few tokens that close the turn are prefilled (OpenVINO's CPU
plugin spends about 1 ms per token prefilled after a cached prefix, so each token counts).
Gesture names are shown and answered in words ("thumbs up"), which a language model spells
more naturally than identifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from edge_gesture.bundle import BundleManifest

NONE_LABEL = "none"

#: What the landmark gestures look like, for the VLM. Config `gestures.custom` entries add others
#: (and an entry with one of these names replaces its description).
DEFAULT_DESCRIPTIONS = {
    "open_palm": "an open hand facing the camera, all five fingers spread",
    "fist": "a closed fist, all fingers curled in",
    "thumbs_up": "a fist with the thumb pointing up",
    "thumbs_down": "a fist with the thumb pointing down",
    "pointing_up": "only the index finger extended, pointing up",
    "victory": "index and middle fingers extended in a V, the others curled",
    "ok": "thumb and index finger touching in a circle, the other fingers extended",
    "call": "thumb and little finger extended, the other fingers curled, like a phone",
}

# Short: it is prefilled on every decision, and the decoder already limits the answer to the list.
QUESTION = "Which gesture from the list does the hand show?"


class PromptError(Exception):
    """The bundle's template or tokenizer cannot express the prompt the runtime needs."""


def spoken(label: str) -> str:
    return label.replace("_", " ")


def gesture_list(gestures: Sequence[tuple[str, str]]) -> str:
    lines = [f"- {spoken(name)}: {desc.strip()}" for name, desc in gestures]
    lines.append(f"- {NONE_LABEL}: no hand, or a hand showing none of these gestures")
    return " Gestures:\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: np.ndarray  # int64 token ids of the whole prompt
    image_start: int  # index of the first image token; everything before it is the fixed prefix
    image_tokens: int
    labels: tuple[str, ...]  # gesture names and `none`, as the decoder may answer

    @property
    def prefix_ids(self) -> np.ndarray:
        return self.ids[: self.image_start]

    @property
    def rest_ids(self) -> np.ndarray:
        return self.ids[self.image_start :]


def build_prompt(
    manifest: BundleManifest, tokenizer: Tokenizer, gestures: Sequence[tuple[str, str]]
) -> Prompt:
    """gestures: (name, description) pairs of the enabled gestures, in config order."""
    spec = manifest.prompt
    text = spec.template.replace(spec.question_placeholder, "").replace(
        spec.image_placeholder, gesture_list(gestures) + QUESTION + "\n" + spec.image_sequence
    )
    ids = np.asarray(
        tokenizer.encode(text, add_special_tokens=spec.add_special_tokens).ids, dtype=np.int64
    )
    image_id = manifest.tokens.image.id
    where = np.flatnonzero(ids == image_id)
    want = manifest.image_tokens_per_image
    if len(where) != want:
        raise PromptError(
            f"the prompt holds {len(where)} {manifest.tokens.image.text} tokens (id {image_id}) "
            f"but the bundle's vision model gives {want} per image and one image is sent: the "
            "bundle's prompt.image_sequence, tokenizer.json or a gesture description does not "
            "fit (descriptions may not contain special tokens)"
        )
    if where[-1] - where[0] != want - 1:
        raise PromptError(
            f"the {manifest.tokens.image.text} tokens are not one run in the prompt: a gesture "
            "description may not contain special tokens"
        )
    labels = tuple(name for name, _ in gestures) + (NONE_LABEL,)
    return Prompt(text, ids, int(where[0]), want, labels)


def label_token_ids(tokenizer: Tokenizer, labels: Sequence[str]) -> dict[str, list[int]]:
    """How each label is spelled right after the prompt (which ends at `Assistant:`)."""
    return {
        label: tokenizer.encode(" " + spoken(label), add_special_tokens=False).ids
        for label in labels
    }
