"""The offline sandbox's closed-form fits: the Gemma Scope 2 file format, the L0 they aim at, the CLT's
causal structure, and that the decoder really is a fit (not noise). No model needed: inputs are
correlated Gaussians with a few dominant directions, like a residual stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_lens_gemmascope.offline.fitting import fit_jumprelu, fit_multilayer


def _acts(n: int = 1500, d: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, d, generator=g, dtype=torch.float64)
    scales = torch.logspace(1.5, -0.5, d, dtype=torch.float64)  # a few large directions
    return 5.0 + (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ basis


def _jumprelu(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    pre = x @ p["w_enc"].astype(np.float64) + p["b_enc"]
    return np.maximum(pre, 0) * (pre > p["threshold"])


@pytest.mark.parametrize("affine", [False, True])
def test_single_layer_format_l0_and_fit(affine: bool) -> None:
    x = _acts()
    y = x @ torch.randn(32, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = fit_jumprelu(x, y, d_sae=200, l0=20, affine=affine, seed=0)
    want = {"w_enc": (32, 200), "b_enc": (200,), "threshold": (200,), "w_dec": (200, 24), "b_dec": (24,)}
    if affine:
        want["affine_skip_connection"] = (32, 24)
    assert {k: v.shape for k, v in p.items()} == want
    assert all(v.dtype == np.float32 for v in p.values()) and (p["threshold"] > 0).all()

    xn, yn = x.numpy(), y.numpy()
    f = _jumprelu(xn, p)
    assert 16 <= (f > 0).sum(1).mean() <= 24  # the L0 it was asked for, on its own corpus
    out = f @ p["w_dec"] + p["b_dec"] + (xn @ p["affine_skip_connection"] if affine else 0)
    fvu = ((yn - out) ** 2).sum() / ((yn - yn.mean(0)) ** 2).sum()
    assert fvu < (0.2 if affine else 0.8)  # a real fit; the skip path of a linear target is exact-ish


def test_more_latents_per_token_reconstruct_better() -> None:
    x = _acts()
    xn = x.numpy()
    fvus = []
    for l0 in (5, 20, 60):
        p = fit_jumprelu(x, d_sae=256, l0=l0, seed=0)
        r = _jumprelu(xn, p) @ p["w_dec"] + p["b_dec"]
        fvus.append(((xn - r) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum())
    assert fvus[0] > fvus[1] > fvus[2]


@pytest.mark.parametrize("causal", [True, False])
def test_multilayer_blocks(causal: bool) -> None:
    n = 4
    xs = [_acts(800, 16, seed=i) for i in range(n)]
    ys = [x * (i + 1) for i, x in enumerate(xs)]
    blocks = fit_multilayer(xs, ys, d_per_block=40, l0=40, causal=causal, affine=causal, seed=3)
    assert len(blocks) == n
    for i, p in enumerate(blocks):
        assert p["w_dec"].shape == (40, n, 16) and p["w_enc"].shape == (16, 40)
        below = np.abs(p["w_dec"][:, :i, :]).max() if i else 0.0
        if causal:  # a CLT block never writes to earlier layers; the files hold exact zeros there
            assert below == 0.0 and "affine_skip_connection" in p
        else:  # a crosscoder block writes to every layer
            assert all(np.abs(p["w_dec"][:, j, :]).max() > 0 for j in range(n))
