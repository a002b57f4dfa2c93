"""The offline sandbox's ``examples.safetensors``: real Gemma 3 270M activations, synthetic SAE.

:meth:`Sandbox.examples <sae_lens_gemmascope.offline.sandbox.Sandbox.examples>` writes, next to a
synthetic SAE's ``params.safetensors``, an examples file with the official keys, dtypes and layout
(:mod:`sae_lens_gemmascope.evidence.examples`), computed by running the real Gemma 3 270M over the
sandbox's built-in corpus and encoding its activations with the synthetic SAE:

* ``tokens``: the corpus windows (``<bos>`` + up to 31 tokens), padded with ``<pad>`` to one width;
* ``activations`` / ``seq_ids`` / ``positions``: each feature's :data:`EXAMPLES_PER_FEATURE`
  strongest activations in the corpus (BOS excluded), strongest first; a feature that fires fewer
  times has padding slots (activation 0, sequence and position -1);
* ``feature_frequencies``: the fraction of corpus tokens on which the feature fires;
* ``top_tokens`` / ``bottom_tokens`` and their logits: the direct logit effect of the decoder row,
  ``w_dec[f] @ W_U`` (the tied unembedding, final norm ignored);
* ``logit_effects``: per example, ``activation * (w_dec[f] @ W_U[:, next token])``, the direct
  effect on the token that follows (0 at a window's last position).

Two honest differences from the official files: :data:`EXAMPLES_PER_FEATURE` is 64, not 1000 (the
corpus has ~3,500 tokens), and logit tokens are ranked among the tokens that occur in the corpus, not
the whole 262,144-token vocabulary (ranking the whole vocabulary for 16k features takes minutes on
two cores). **The SAE weights are synthetic: these examples show what the synthetic features fire on,
not what Gemma Scope's features mean.**

Example:
    >>> import numpy as np
    >>> params = {"w_enc": np.eye(2, 3, dtype=np.float32), "b_enc": np.zeros(3, np.float32),
    ...           "threshold": np.full(3, 0.5, np.float32), "w_dec": np.ones((3, 2), np.float32)}
    >>> t = corpus_examples(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0, 0]), np.array([1, 2]),
    ...                     np.array([[2, 10, 11]]), params, np.eye(12, 2, dtype=np.float32), k=2)
    >>> t["activations"].tolist(), t["seq_ids"].tolist(), t["feature_frequencies"].tolist()
    ([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]], [[0, -1], [0, -1], [-1, -1]], [0.5, 0.5, 0.0])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

#: Examples stored per feature (the official files store 1000).
EXAMPLES_PER_FEATURE = 64
#: Top and bottom logit tokens per feature (as in the official files).
LOGIT_TOKENS = 10
#: Features encoded at a time.
BLOCK = 2048


def corpus_examples(
    x: np.ndarray,
    row_seq: np.ndarray,
    row_pos: np.ndarray,
    tokens: np.ndarray,
    params: Mapping[str, np.ndarray],
    unembed: np.ndarray,
    *,
    k: int = EXAMPLES_PER_FEATURE,
    n_logits: int = LOGIT_TOKENS,
) -> dict[str, np.ndarray]:
    """The examples tensors of one SAE.

    ``x`` (R, d_in): the SAE's input at every non-BOS corpus token; ``row_seq`` / ``row_pos`` (R,):
    where each row is in ``tokens`` (S, C); ``unembed`` (V, d_model): the unembedding rows (the
    logit of token v is ``h @ unembed[v]``).
    """
    xs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    w_enc = torch.as_tensor(np.asarray(params["w_enc"], dtype=np.float32))
    b_enc = torch.as_tensor(np.asarray(params["b_enc"], dtype=np.float32))
    thr = torch.as_tensor(np.asarray(params["threshold"], dtype=np.float32))
    w_dec = torch.as_tensor(np.asarray(params["w_dec"], dtype=np.float32))
    n_rows, d_sae = xs.shape[0], w_enc.shape[1]
    kk = min(k, n_rows)
    seqs = torch.as_tensor(np.asarray(row_seq, dtype=np.int64))
    poss = torch.as_tensor(np.asarray(row_pos, dtype=np.int64))
    tok = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    # next token after each row (0 = none: the last position of its window or padding after it)
    nxt_pos = (poss + 1).clamp_max(tok.shape[1] - 1)
    nxt = torch.where(poss + 1 < tok.shape[1], tok[seqs, nxt_pos], torch.zeros_like(seqs))
    has_next = (poss + 1 < tok.shape[1]) & (nxt != 0)
    # logit tokens are ranked among the tokens of the corpus (see the module docstring)
    vocab = torch.unique(tok[tok > 0])
    u_all = torch.as_tensor(np.asarray(unembed, dtype=np.float32))
    u = u_all[vocab]  # (V', d)
    nl = min(n_logits, int(vocab.numel()))
    out: dict[str, np.ndarray] = {
        "activations": np.zeros((d_sae, k), np.float32),
        "seq_ids": np.full((d_sae, k), -1, np.int64),
        "positions": np.full((d_sae, k), -1, np.int32),
        "logit_effects": np.zeros((d_sae, k), np.float32),
        "top_tokens": np.full((d_sae, n_logits), -1, np.int32),
        "top_logits": np.zeros((d_sae, n_logits), np.float32),
        "bottom_tokens": np.full((d_sae, n_logits), -1, np.int32),
        "bottom_logits": np.zeros((d_sae, n_logits), np.float32),
        "feature_frequencies": np.zeros(d_sae, np.float64),
        "tokens": np.asarray(tokens, dtype=np.int32),
    }
    for a in range(0, d_sae, BLOCK):
        b = min(d_sae, a + BLOCK)
        pre = xs @ w_enc[:, a:b] + b_enc[a:b]
        acts = torch.relu(pre) * (pre > thr[a:b])  # (R, B)
        out["feature_frequencies"][a:b] = (acts > 0).double().mean(0).numpy()
        vals, idx = acts.topk(kk, dim=0)  # (kk, B), strongest first
        vals, idx = vals.T, idx.T  # (B, kk)
        real = vals > 0
        dec = w_dec[a:b]  # (B, d)
        eff = (dec.unsqueeze(1) * u_all[nxt[idx]]).sum(-1) * vals  # direct effect on the next token
        eff = torch.where(real & has_next[idx], eff, torch.zeros_like(eff))
        out["activations"][a:b, :kk] = torch.where(real, vals, torch.zeros_like(vals)).numpy()
        out["seq_ids"][a:b, :kk] = torch.where(real, seqs[idx], torch.full_like(idx, -1)).numpy()
        out["positions"][a:b, :kk] = torch.where(real, poss[idx], torch.full_like(idx, -1)).numpy()
        out["logit_effects"][a:b, :kk] = eff.numpy()
        logits = dec @ u.T  # (B, V')
        tv, ti = logits.topk(nl, dim=1)
        bv, bi = logits.topk(nl, dim=1, largest=False)
        out["top_tokens"][a:b, :nl] = vocab[ti].numpy()
        out["top_logits"][a:b, :nl] = tv.numpy()
        out["bottom_tokens"][a:b, :nl] = vocab[bi].numpy()
        out["bottom_logits"][a:b, :nl] = bv.numpy()
    return out
