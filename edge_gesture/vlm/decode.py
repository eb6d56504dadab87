"""Constrained greedy decoding: the model may only spell a configured gesture name or `none`.

The names are tokenized once into a trie. At each step only the children of the current trie node
are allowed; the softmax is taken over those tokens alone (the masked softmax), the most likely
child is taken, and the label's probability is the product of those per-step probabilities. A node
with a single child needs no model call: under the mask its probability is 1, so forced tokens are
only fed to the model when a later branching point needs their context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    label: str | None = None  # set on the node that completes a name


class LabelTrie:
    """Token trie of the answer labels.

    `sequences` maps each label to its token ids. A label whose ids are a prefix of another's is
    closed by `end_token` (so completing it is a choice the model makes, not an accident of the
    tokenizer); other labels end as soon as their last token is chosen.
    """

    def __init__(self, sequences: dict[str, Sequence[int]], end_token: int):
        if not sequences:
            raise ValueError("no labels to decode")
        self.root = _Node()
        seqs = {label: list(ids) for label, ids in sequences.items()}
        for label, ids in seqs.items():
            if not ids:
                raise ValueError(f"label {label!r} tokenizes to nothing")
            if end_token in ids:
                raise ValueError(f"label {label!r} contains the end token {end_token}")
        for label, ids in seqs.items():
            is_prefix = any(o != ids and o[: len(ids)] == ids for o in seqs.values())
            if is_prefix:
                ids = ids + [end_token]
            node = self.root
            for tok in ids:
                node = node.children.setdefault(tok, _Node())
            if node.label is not None or node.children:
                other = node.label or "another label"
                raise ValueError(f"labels {label!r} and {other!r} tokenize the same")
            node.label = label
        #: Every token the trie can ever allow: the only logits decoding needs.
        self.tokens: tuple[int, ...] = tuple(sorted(self._collect(self.root)))
        #: The most tokens an answer takes (its KV cache need beyond the prompt).
        self.depth: int = self._depth(self.root)

    def _depth(self, node: _Node) -> int:
        return max((1 + self._depth(c) for c in node.children.values()), default=0)

    def _collect(self, node: _Node) -> set[int]:
        out = set(node.children)
        for child in node.children.values():
            out |= self._collect(child)
        return out

    @classmethod
    def from_labels(
        cls, labels: Sequence[str], encode: Callable[[str], list[int]], end_token: int
    ) -> LabelTrie:
        return cls({label: encode(label) for label in labels}, end_token)


@dataclass(frozen=True)
class Decoded:
    label: str
    probability: float
    tokens: tuple[int, ...]
    model_calls: int  # forward passes made after the prompt's


#: Called with the tokens chosen since the last call (none for the prompt's own logits); returns
#: logits for `LabelTrie.tokens`, in that order, at the last position.
LogitsFn = Callable[[list[int]], np.ndarray]


def masked_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def decode(trie: LabelTrie, first_logits: np.ndarray, next_logits: LogitsFn) -> Decoded:
    """Greedy decode under the trie mask, starting from the prompt's last-position logits."""
    column = {tok: i for i, tok in enumerate(trie.tokens)}
    node = trie.root
    logits = np.asarray(first_logits)
    pending: list[int] = []  # chosen tokens the model has not seen yet
    chosen: list[int] = []
    probability = 1.0
    calls = 0
    while node.label is None:
        options = list(node.children)
        if len(options) == 1:
            tok, p = options[0], 1.0
        else:
            if pending:
                logits = np.asarray(next_logits(pending))
                calls += 1
                pending = []
            probs = masked_softmax(logits[[column[t] for t in options]])
            best = int(np.argmax(probs))
            tok, p = options[best], float(probs[best])
        probability *= p
        chosen.append(tok)
        pending.append(tok)
        node = node.children[tok]
    return Decoded(node.label, probability, tuple(chosen), calls)
