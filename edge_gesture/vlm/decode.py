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
        #: Tokens worth appending to the prompt's prefill: the forced path from the root to the
        #: branching point under the root's busiest child (" thumbs" before " up" / " down").
        #: If the model picks it, that branch's logits come with the prefill and save a step.
        self.lookahead: tuple[int, ...] = self._lookahead()

    def _count(self, node: _Node) -> int:
        return (node.label is not None) + sum(self._count(c) for c in node.children.values())

    def _lookahead(self) -> tuple[int, ...]:
        best: tuple[int, ...] = ()
        best_count = 0
        for tok, child in self.root.children.items():
            path, node = [tok], child
            while len(node.children) == 1:
                (t, node), = node.children.items()
                path.append(t)
            if node.children and self._count(child) > best_count:
                best, best_count = tuple(path), self._count(child)
        return best

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


#: Called with chosen tokens the model has not seen and, on the first call after the prefill, how
#: many of the prefilled lookahead tokens the answer kept (the rest must be forgotten), else None;
#: returns logits for `LabelTrie.tokens`, in that order, at the last position.
LogitsFn = Callable[[list[int], int | None], np.ndarray]


def masked_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def decode(trie: LabelTrie, first_logits: np.ndarray, next_logits: LogitsFn) -> Decoded:
    """Greedy decode under the trie mask.

    first_logits: [1 + k, len(trie.tokens)]: the prompt's last position, then the positions of
    the first k tokens of `trie.lookahead` prefilled after it (k may be 0; a 1-D array is k=0).
    """
    column = {tok: i for i, tok in enumerate(trie.tokens)}
    rows = np.atleast_2d(np.asarray(first_logits))
    ahead = tuple(trie.lookahead[: rows.shape[0] - 1])
    resolved = not ahead  # whether the model was told which lookahead tokens to keep
    node = trie.root
    chosen: list[int] = []
    fed = 0  # chosen tokens the model has seen
    logits = rows[0]
    probability = 1.0
    calls = 0
    while node.label is None:
        options = list(node.children)
        if len(options) == 1:
            tok, p = options[0], 1.0
        else:
            n = len(chosen)
            if not resolved and n <= len(ahead) and tuple(chosen) == ahead[:n]:
                logits, fed = rows[n], n  # computed with the prefill
            elif n > fed:
                kept = None if resolved else _common_prefix(chosen, ahead)
                start = fed if resolved else kept
                logits = np.asarray(next_logits(chosen[start:], kept))
                resolved, fed = True, n
                calls += 1
            probs = masked_softmax(logits[[column[t] for t in options]])
            best = int(np.argmax(probs))
            tok, p = options[best], float(probs[best])
        probability *= p
        chosen.append(tok)
        node = node.children[tok]
    return Decoded(node.label, probability, tuple(chosen), calls)
