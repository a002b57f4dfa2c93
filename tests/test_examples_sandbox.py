"""The sandbox's examples computation (``offline.examples.corpus_examples``) against a float64 loop."""

from __future__ import annotations

import numpy as np

from sae_lens_gemmascope.evidence.examples import EXAMPLES_TENSORS
from sae_lens_gemmascope.offline.examples import corpus_examples


def test_corpus_examples_match_a_plain_reference() -> None:
    g = np.random.default_rng(0)
    S, C, d, W, V, k = 6, 9, 5, 40, 50, 8
    lens = [9, 7, 9, 5, 8, 9]
    tokens = np.zeros((S, C), np.int32)
    row_seq, row_pos = [], []
    for s, n in enumerate(lens):
        tokens[s, 0] = 2
        tokens[s, 1:n] = g.integers(3, V, n - 1)
        row_seq += [s] * (n - 1)
        row_pos += list(range(1, n))
    x = g.standard_normal((len(row_seq), d))
    p = {
        "w_enc": g.standard_normal((d, W)).astype(np.float32),
        "b_enc": g.standard_normal(W).astype(np.float32) * 0.1,
        "threshold": np.abs(g.standard_normal(W)).astype(np.float32) + 0.5,
        "w_dec": g.standard_normal((W, d)).astype(np.float32),
    }
    unembed = g.standard_normal((V, d)).astype(np.float32)
    t = corpus_examples(x, np.array(row_seq), np.array(row_pos), tokens, p, unembed, k=k)
    for key, (dtype, _) in EXAMPLES_TENSORS.items():  # the official keys and dtypes
        assert t[key].dtype == {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}[dtype]
    pre = x @ p["w_enc"].astype(np.float64) + p["b_enc"]
    acts = np.where(pre > p["threshold"], np.maximum(pre, 0), 0.0)
    seen = np.unique(tokens[tokens > 0])
    for f in range(W):
        order = sorted(range(len(row_seq)), key=lambda r: -acts[r, f])[:k]
        real = [r for r in order if acts[r, f] > 0]
        n = len(real)
        np.testing.assert_allclose(t["activations"][f, :n], acts[real, f], rtol=1e-4, atol=1e-4)
        assert (t["activations"][f, n:] == 0).all() and (t["seq_ids"][f, n:] == -1).all()
        assert sorted(zip(t["seq_ids"][f, :n], t["positions"][f, :n], strict=True)) == sorted(
            (row_seq[r], row_pos[r]) for r in real
        )
        assert t["feature_frequencies"][f] == (acts[:, f] > 0).mean()
        for j in range(n):
            s, q = int(t["seq_ids"][f, j]), int(t["positions"][f, j])
            nxt = tokens[s, q + 1] if q + 1 < C else 0
            want = t["activations"][f, j] * (p["w_dec"][f] @ unembed[nxt]) if nxt else 0.0
            np.testing.assert_allclose(t["logit_effects"][f, j], want, rtol=1e-3, atol=1e-3)
        logits = {int(v): float(p["w_dec"][f].astype(np.float64) @ unembed[v]) for v in seen}
        best = sorted(logits, key=lambda v: -logits[v])[:10]
        worst = sorted(logits, key=lambda v: logits[v])[:10]
        assert t["top_tokens"][f].tolist() == best and t["bottom_tokens"][f].tolist() == worst
        np.testing.assert_allclose(t["top_logits"][f], [logits[v] for v in best], rtol=1e-4, atol=1e-4)
