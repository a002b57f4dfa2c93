"""Fit synthetic JumpReLU weights to real activations in one closed-form step (no training loop).

The offline sandbox (:mod:`sae_lens_gemmascope.sandbox`) writes Gemma-Scope-format files whose weights
are **synthetic**, but not pure noise: they are fitted to the real Gemma 3 270M's activations on a
small built-in corpus, so that reconstructions, L0 / width trade-offs, steering and ablation behave
plausibly in tutorials. They are not Gemma Scope weights and their features mean nothing in particular.

The recipe, for inputs ``x`` (N, d_in) and targets ``y`` (N, d_out):

1. encoder columns are centred activation vectors of random corpus tokens plus a little noise, unit
   norm; ``b_enc = -mean(x) @ w_enc`` (so the encoder sees centred inputs);
2. each latent's JumpReLU threshold is the corpus quantile of its pre-activation at which it fires on a
   fraction ``l0 / d_sae`` of the tokens (so the mean L0 on the corpus is about ``l0``);
3. the decoder (and, for affine transcoders, the skip matrix) is a ridge regression of ``y`` on the
   latents, solved in its dual (N x N) form, which stays cheap for wide dictionaries; its strength is
   the one with the lowest leave-one-out error, so wide dictionaries do not simply memorise the corpus.

Multi-layer models fit every target block jointly on the latents of the blocks that may write to it
(CLT: blocks ``i <= j``; crosscoder: all four).

Example:
    >>> import torch
    >>> from sae_lens_gemmascope.fitting import fit_jumprelu
    >>> x = torch.randn(400, 16, dtype=torch.float64)
    >>> p = fit_jumprelu(x, d_sae=64, l0=8, seed=0)
    >>> sorted(p), p["w_enc"].shape, p["w_dec"].shape
    (['b_dec', 'b_enc', 'threshold', 'w_dec', 'w_enc'], (16, 64), (64, 16))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Ridge strength of the skip matrix, relative to the mean diagonal of the input Gram matrix.
RIDGE = 1e-2
#: Decoder ridge strengths tried (relative to the mean eigenvalue of the latent Gram matrix).
RIDGE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


def _encoder(x: torch.Tensor, d_sae: int, l0: float, g: torch.Generator) -> dict[str, torch.Tensor]:
    n, d_in = x.shape
    mu = x.mean(0)
    xc = x - mu
    idx = torch.randint(n, (d_sae,), generator=g)
    seeds = xc[idx]
    seeds = seeds / seeds.norm(dim=1, keepdim=True).clamp_min(1e-12)
    noise = torch.randn(d_sae, d_in, generator=g, dtype=x.dtype) / d_in**0.5
    w = seeds + 0.5 * noise
    w = (w / w.norm(dim=1, keepdim=True)).T.contiguous()  # (d_in, d_sae)
    fires = max(1, min(n - 1, round(n * min(0.5, float(l0) / d_sae))))
    thr = torch.empty(d_sae, dtype=x.dtype)
    step = max(1, (1 << 24) // n)
    for a in range(0, d_sae, step):  # the (n - fires)-th smallest pre-activation of each latent
        pre = xc @ w[:, a : a + step]
        thr[a : a + step] = torch.kthvalue(pre, n - fires, dim=0).values
    scale = float(xc.norm(dim=1).mean()) or 1.0
    return {"w_enc": w, "b_enc": -(mu @ w), "threshold": thr.clamp_min(1e-3 * scale)}


def encode(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """JumpReLU latents ``relu(pre) * (pre > threshold)`` of ``x`` under fitted params ``p``."""
    pre = x @ p["w_enc"] + p["b_enc"]
    return torch.relu(pre) * (pre > p["threshold"])


def _loo_lambda(k: torch.Tensor, r: torch.Tensor) -> float:
    """The ridge strength of :data:`RIDGE_GRID` (times the mean eigenvalue of ``k``) with the lowest
    leave-one-out error of the kernel ridge fit of ``r`` (closed form from one eigendecomposition)."""
    evals, q = torch.linalg.eigh(k.float())  # float32 is plenty to rank a coarse grid
    evals, q, r = evals.clamp_min(0).double(), q.double(), r.double()
    qr = q.T @ r
    q2 = q * q
    scale = float(evals.mean()) + 1e-12
    best, best_err = RIDGE_GRID[0] * scale, float("inf")
    for g in RIDGE_GRID:
        lam = g * scale
        inv = 1.0 / (evals + lam)
        alpha = q @ (inv[:, None] * qr)
        dinv = q2 @ inv  # diagonal of (K + lam I)^-1
        err = float(((alpha / dinv[:, None]) ** 2).sum())
        if err < best_err:
            best, best_err = lam, err
    return best


def _dual_ridge(f: torch.Tensor, r: torch.Tensor, lam: float | None = None) -> tuple[torch.Tensor, float]:
    """``(W, lam)`` with ``W`` minimising ``|f W - r|^2 + lam |W|^2``, as ``f.T (f f.T + lam I)^-1 r``.

    ``lam=None`` picks it by leave-one-out error (:func:`_loo_lambda`)."""
    k = f.double() @ f.double().T
    r = r.double()
    if lam is None:
        lam = _loo_lambda(k, r)
    k.diagonal().add_(lam + 1e-9)
    alpha = torch.linalg.solve(k, r)
    return f.T.double() @ alpha, lam


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
    p["w_dec"] = _dual_ridge(f, r)[0]
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
) -> list[dict[str, np.ndarray]]:
    """Per-block files of a CLT (``causal=True``) or crosscoder, each with ``w_dec`` (d, n_blocks, d_out).

    Block ``i`` encodes ``xs[i]``; target ``j`` is fitted on the latents of blocks ``i <= j`` (CLT) or of
    every block (crosscoder); decoder slices of blocks that may not write to ``j`` are exactly zero, as
    in the released CLT files. ``l0`` is the total over blocks (each block fires ``l0 / n`` per token).
    """
    n = len(xs)
    g = torch.Generator().manual_seed(seed)
    xs = [x.double() for x in xs]
    ys = [y.double() for y in ys]
    enc = [_encoder(x, d_per_block, max(1.0, l0 / n), g) for x in xs]
    feats = [encode(x, p) for x, p in zip(xs, enc, strict=True)]
    d_out = ys[0].shape[1]
    w_dec = [torch.zeros(d_per_block, n, d_out, dtype=torch.float64) for _ in range(n)]
    b_dec, skips = [], []
    lam: float | None = None  # chosen by leave-one-out on the first target, then kept
    for j in range(n):
        src = list(range(j + 1)) if causal else list(range(n))
        r = ys[j] - ys[j].mean(0)
        if affine:
            skip = _skip(xs[j], r)
            r = r - (xs[j] - xs[j].mean(0)) @ skip
            skips.append(skip)
        w, lam = _dual_ridge(torch.cat([feats[i] for i in src], dim=1), r, lam)
        resid = ys[j].clone()
        for k, i in enumerate(src):
            w_dec[i][:, j, :] = w[k * d_per_block : (k + 1) * d_per_block]
            resid -= feats[i] @ w_dec[i][:, j, :]
        if affine:
            resid -= xs[j] @ skips[j]
        b_dec.append(resid.mean(0))
    out = []
    for i in range(n):
        p = {**enc[i], "w_dec": w_dec[i], "b_dec": b_dec[i]}
        if affine:
            p["affine_skip_connection"] = skips[i]
        out.append(_as_numpy(p))
    return out
