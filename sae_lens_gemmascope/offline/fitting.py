"""Fit synthetic JumpReLU weights to real activations in one closed-form step (no training loop).

The offline sandbox (:mod:`sae_lens_gemmascope.offline.sandbox`) writes Gemma-Scope-format files whose weights
are **synthetic**, but not pure noise: they are fitted to the real Gemma 3 270M's activations on a
small built-in corpus, so that reconstructions, L0 / width trade-offs, steering and ablation behave
plausibly in tutorials. They are not Gemma Scope weights and their features mean nothing in particular.

The recipe, for inputs ``x`` (N, d_in) and targets ``y`` (N, d_out):

1. encoder columns are centred activation vectors of random corpus tokens plus a little noise, drawn
   in a partially whitened space (so that large-norm tokens do not fire every latent);
   ``b_enc = -mean(x) @ w_enc`` (so the encoder sees centred inputs);
2. each latent's JumpReLU threshold is the corpus quantile of its pre-activation at which it fires on a
   fraction ``l0 / d_sae`` of the tokens (so the mean L0 on the corpus is about ``l0``);
3. the decoder (and, for affine transcoders, the skip matrix) is a ridge regression of ``y`` on the
   latents, solved in its dual (N x N) form, which stays cheap for wide dictionaries; it is strongly
   regularised (:data:`RIDGE_DEC`), so wide dictionaries do not simply memorise the corpus.

Multi-layer models fit every target block jointly on the latents of the blocks that may write to it
(CLT: blocks ``i <= j``; crosscoder: all four).

Example:
    >>> import torch
    >>> from sae_lens_gemmascope.offline.fitting import fit_jumprelu
    >>> x = torch.randn(400, 16, dtype=torch.float64)
    >>> p = fit_jumprelu(x, d_sae=64, l0=8, seed=0)
    >>> sorted(p), p["w_enc"].shape, p["w_dec"].shape
    (['b_dec', 'b_enc', 'threshold', 'w_dec', 'w_enc'], (16, 64), (64, 16))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Covariance shrinkage of the partial whitening of encoder directions (0 = full whitening, 1 = none).
SHRINKAGE = 0.6
#: Ridge strength of the skip matrix, relative to the mean diagonal of the input Gram matrix.
RIDGE = 1e-2
#: Decoder ridge strength relative to the mean diagonal of the latent Gram matrix (the value that
#: leave-one-out cross-validation picked on every 270M site tried).
RIDGE_DEC = 0.3


def _encoder(x: torch.Tensor, d_sae: int, l0: float, g: torch.Generator) -> dict[str, torch.Tensor]:
    n, d_in = x.shape
    mu = x.mean(0)
    xc = x - mu
    # Partial whitening: the residual stream has a few dominant directions, and encoder directions
    # that share them fire on every large-norm token. Directions are drawn in the space whitened by a
    # shrunk covariance, so a latent responds to where a token points rather than to how long it is.
    cov = xc.T @ xc / n
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * float(cov.diagonal().mean()) * torch.eye(d_in, dtype=x.dtype)
    evals, q = torch.linalg.eigh(cov)
    white = q @ torch.diag(evals.clamp_min(1e-12).rsqrt()) @ q.T  # cov^-1/2
    idx = torch.randint(n, (d_sae,), generator=g)
    seeds = xc[idx] @ white
    seeds = seeds / seeds.norm(dim=1, keepdim=True).clamp_min(1e-12)
    noise = torch.randn(d_sae, d_in, generator=g, dtype=x.dtype) / d_in**0.5
    u = seeds + 0.5 * noise
    w = (white @ (u / u.norm(dim=1, keepdim=True)).T).contiguous()  # (d_in, d_sae)
    fires = max(1, min(n - 1, round(n * min(0.5, float(l0) / d_sae))))
    thr = torch.empty(d_sae, dtype=x.dtype)
    step = max(1, (1 << 24) // n)
    for a in range(0, d_sae, step):  # the (n - fires)-th smallest pre-activation of each latent
        pre = xc @ w[:, a : a + step]
        thr[a : a + step] = torch.kthvalue(pre, n - fires, dim=0).values
    return {"w_enc": w, "b_enc": -(mu @ w), "threshold": thr.clamp_min(1e-6)}


def encode(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """JumpReLU latents ``relu(pre) * (pre > threshold)`` of ``x`` under fitted params ``p``."""
    pre = x @ p["w_enc"] + p["b_enc"]
    return torch.relu(pre) * (pre > p["threshold"])


def _dual_ridge(f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``W`` minimising ``|f W - r|^2 + lam |W|^2``, as ``f.T (f f.T + lam I)^-1 r`` (N x N system).

    ``lam`` is :data:`RIDGE_DEC` times the mean diagonal of ``f f.T``."""
    f32 = f.float()
    k = (f32 @ f32.T).double()
    k.diagonal().add_(RIDGE_DEC * float(k.diagonal().mean()) + 1e-9)
    alpha = torch.linalg.solve(k, r.double())
    return f.T.double() @ alpha


def _skip(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Primal ridge of ``r`` on centred ``x``: the affine skip matrix (d_in, d_out), input-major."""
    xc = x - x.mean(0)
    a = xc.T @ xc
    a.diagonal().add_(RIDGE * float(a.diagonal().mean()) + 1e-9)
    return torch.linalg.solve(a, xc.T @ r)


def _as_numpy(p: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v.detach().cpu().numpy().astype(np.float32)) for k, v in p.items()}


def fit_jumprelu(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    d_sae: int,
    l0: float,
    affine: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Single-layer SAE (``y`` = ``x``) or transcoder weights in the Gemma Scope 2 naming (float32).

    ``x``, ``y``: (N, d) activations (BOS rows removed). Returns ``w_enc`` (d_in, d_sae), ``b_enc``,
    ``threshold``, ``w_dec`` (d_sae, d_out), ``b_dec`` and, if ``affine``, ``affine_skip_connection``.
    """
    x = x.double()
    y = x if y is None else y.double()
    g = torch.Generator().manual_seed(seed)
    p = _encoder(x, d_sae, l0, g)
    f = encode(x, p)
    r = y - y.mean(0)
    if affine:
        skip = _skip(x, r)
        r = r - (x - x.mean(0)) @ skip
        p["affine_skip_connection"] = skip
    p["w_dec"] = _dual_ridge(f, r)
    resid = y - f @ p["w_dec"]
    if affine:
        resid = resid - x @ p["affine_skip_connection"]
    p["b_dec"] = resid.mean(0)
    return _as_numpy(p)


def fit_multilayer(
    xs: Sequence[torch.Tensor],
    ys: Sequence[torch.Tensor],
    *,
    d_per_block: int,
    l0: float,
    causal: bool,
    affine: bool = False,
    seed: int = 0,
    max_rows: int = 2048,
) -> list[dict[str, np.ndarray]]:
    """Per-block files of a CLT (``causal=True``) or crosscoder, each with ``w_dec`` (d, n_blocks, d_out).

    Block ``i`` encodes ``xs[i]``; target ``j`` is fitted on the latents of blocks ``i <= j`` (CLT) or of
    every block (crosscoder); decoder slices of blocks that may not write to ``j`` are exactly zero, as
    in the released CLT files. ``l0`` is the total over blocks (each block fires ``l0 / n`` per token).
    The decoders are fitted on at most ``max_rows`` evenly spaced tokens (the encoders on all).
    """
    n = len(xs)
    g = torch.Generator().manual_seed(seed)
    xs = [x.double() for x in xs]
    ys = [y.double() for y in ys]
    enc = [_encoder(x, d_per_block, max(1.0, l0 / n), g) for x in xs]
    rows = torch.linspace(0, xs[0].shape[0] - 1, min(max_rows, xs[0].shape[0])).round().long()
    feats = [encode(x[rows], p) for x, p in zip(xs, enc, strict=True)]
    grams = [(f.float() @ f.float().T).double() for f in feats]  # one N x N Gram matrix per block
    d_out = ys[0].shape[1]
    w_dec = [torch.zeros(d_per_block, n, d_out, dtype=torch.float64) for _ in range(n)]
    b_dec, skips = [], []
    k = torch.zeros_like(grams[0])
    for j in range(n):
        src = list(range(j + 1)) if causal else list(range(n))
        if causal:
            k = k + grams[j]  # the Gram matrix of the concatenated latents of blocks 0..j
        elif j == 0:
            k = sum(grams, torch.zeros_like(grams[0]))
        xj, yj = xs[j][rows], ys[j][rows]
        r = yj - yj.mean(0)
        if affine:
            skip = _skip(xj, r)
            r = r - (xj - xj.mean(0)) @ skip
            skips.append(skip)
        a = k.clone()
        a.diagonal().add_(RIDGE_DEC * float(k.diagonal().mean()) + 1e-9)
        alpha = torch.linalg.solve(a, r)
        resid = yj.clone()
        for i in src:
            w_dec[i][:, j, :] = feats[i].T @ alpha
            resid -= feats[i] @ w_dec[i][:, j, :]
        if affine:
            resid -= xj @ skips[j]
        b_dec.append(resid.mean(0))
    out = []
    for i in range(n):
        p = {**enc[i], "w_dec": w_dec[i], "b_dec": b_dec[i]}
        if affine:
            p["affine_skip_connection"] = skips[i]
        out.append(_as_numpy(p))
    return out
