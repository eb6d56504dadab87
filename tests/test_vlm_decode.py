"""Constrained decoding: only configured labels come out, the best allowed one wins, and its
probability is the product of the masked softmax over its tokens."""

from __future__ import annotations

import numpy as np
import pytest

from edge_gesture.vlm.decode import LabelTrie, decode, masked_softmax

END = 99
# Token ids as a BPE would give them: shared prefixes ("thumbs" _ ...), one-token names, and
# "ok" being a prefix of "ok_sign".
SEQS = {
    "thumbs_up": [10, 11, 12],
    "thumbs_down": [10, 11, 13],
    "fist": [20],
    "ok": [30],
    "ok_sign": [30, 31],
    "none": [40],
}


def logits_for(trie: LabelTrie, prefs: dict[int, float], default: float = -5.0) -> np.ndarray:
    return np.array([prefs.get(t, default) for t in trie.tokens], dtype=np.float32)


class Model:
    """Crafted logits per context: context (tokens fed so far) -> {token: logit}."""

    def __init__(self, trie: LabelTrie, table: dict[tuple[int, ...], dict[int, float]]):
        self.trie, self.table, self.fed, self.calls = trie, table, [], 0

    def first(self) -> np.ndarray:
        return logits_for(self.trie, self.table.get((), {}))

    def __call__(self, tokens: list[int], kept: int | None = None) -> np.ndarray:
        self.calls += 1
        self.kept = kept
        self.fed += tokens
        return logits_for(self.trie, self.table.get(tuple(self.fed), {}))


def test_the_most_probable_allowed_label_wins_with_product_probability():
    trie = LabelTrie(SEQS, END)
    m = Model(trie, {(): {10: 3.0, 20: 1.0, 30: 0.0, 40: 0.5}, (10, 11): {12: 0.2, 13: 1.4}})
    got = decode(trie, m.first(), m)
    p_first = masked_softmax(np.array([3.0, 1.0, 0.0, 0.5]))[0]
    p_down = masked_softmax(np.array([0.2, 1.4]))[1]
    assert got.label == "thumbs_down"
    assert got.probability == pytest.approx(p_first * p_down)
    # "_" (11) is forced after "thumbs": fed with the branching step, one model call in all.
    assert m.fed == [10, 11] and got.model_calls == 1


def test_tokens_outside_the_trie_are_ignored_however_likely():
    trie = LabelTrie(SEQS, END)
    first = logits_for(trie, {20: -1.0, 40: -2.0})
    # A real model's best token is something unlisted: the decoder never sees it (it only gets
    # logits for trie.tokens), and among the allowed children "fist" is best.
    got = decode(trie, first, lambda toks, kept: pytest.fail("no call needed"))
    assert got.label == "fist" and got.model_calls == 0
    assert set(trie.tokens) == {10, 11, 12, 13, 20, 30, 31, 40, END}


def test_a_label_that_is_a_prefix_of_another_needs_the_end_token():
    trie = LabelTrie(SEQS, END)
    m = Model(trie, {(): {30: 5.0}, (30,): {END: 2.0, 31: 0.0}})
    assert decode(trie, m.first(), m).label == "ok"
    m = Model(trie, {(): {30: 5.0}, (30,): {END: 0.0, 31: 2.0}})
    assert decode(trie, m.first(), m).label == "ok_sign"


def test_random_logits_only_ever_give_configured_labels():
    trie = LabelTrie(SEQS, END)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(300):
        rows = rng.normal(size=(1 + len(trie.lookahead), len(trie.tokens))) * 4
        got = decode(trie, rows, lambda toks, kept: rng.normal(size=len(trie.tokens)) * 4)
        assert got.label in SEQS
        assert 0.0 < got.probability <= 1.0
        seen.add(got.label)
    assert seen == set(SEQS)


def test_probabilities_of_all_labels_sum_to_one():
    """Scoring every path with fixed logits: a proper distribution over the labels."""
    trie = LabelTrie(SEQS, END)
    rng = np.random.default_rng(2)
    fixed = {ctx: rng.normal(size=len(trie.tokens)) for ctx in [(), (10, 11), (30,)]}
    col = {t: i for i, t in enumerate(trie.tokens)}

    def prob(label):
        ids = SEQS[label] + ([END] if label == "ok" else [])
        node, p, ctx = trie.root, 1.0, ()
        for t in ids:
            opts = list(node.children)
            if len(opts) > 1:
                p *= masked_softmax(fixed[ctx][[col[o] for o in opts]])[opts.index(t)]
            ctx, node = ctx + (t,), node.children[t]
        return p

    assert sum(prob(label) for label in SEQS) == pytest.approx(1.0)


def test_labels_that_tokenize_the_same_are_refused():
    with pytest.raises(ValueError, match="tokenize the same"):
        LabelTrie({"a": [1, 2], "b": [1, 2]}, END)
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        LabelTrie({"a": []}, END)


def test_lookahead_logits_from_the_prefill_save_the_branch_step():
    trie = LabelTrie(SEQS, END)
    # "thumbs" (two labels under it) is the busiest first token; its forced "_" comes along.
    assert trie.lookahead == (10, 11)
    root = logits_for(trie, {10: 3.0, 20: 1.0})
    after_thumbs = logits_for(trie, {})  # row for the "thumbs" position: "_" is forced anyway
    after_underscore = logits_for(trie, {12: 0.1, 13: 2.0})
    rows = np.stack([root, after_thumbs, after_underscore])
    got = decode(trie, rows, lambda toks, kept: pytest.fail("the prefill had these logits"))
    assert got.label == "thumbs_down" and got.model_calls == 0


def test_leaving_the_lookahead_tells_the_model_what_to_forget():
    trie = LabelTrie(SEQS, END)
    m = Model(trie, {(30,): {END: 0.0, 31: 2.0}})
    rows = np.stack([logits_for(trie, {30: 4.0}), logits_for(trie, {}), logits_for(trie, {})])
    got = decode(trie, rows, m)
    # "ok" was chosen over "thumbs": none of the prefilled lookahead tokens are kept.
    assert got.label == "ok_sign" and m.calls == 1 and m.kept == 0 and m.fed == [30]
