"""Sparse encode and decode: the top features of each token without a dense ``[tokens, d_sae]`` tensor.

A dense ``sae.encode(x)`` of 4,096 tokens through a 1m-wide SAE makes a 16 GiB tensor for a result
with ~100 non-zeros per token. These functions walk the latents in chunks (and the tokens in chunks)
so that no dense block larger than ``token_chunk x latent_chunk`` ever exists:

* :func:`encode_topk` -> ``(values, indices)`` like ``torch.topk`` over the latent axis;
* :func:`encode_sparse` -> a ``torch.sparse_coo_tensor`` of every non-zero feature;
* :func:`encode_codes` -> both at once, from one pass (what ``gemmascope extract`` stores);
* :func:`decode_sparse` -> ``f @ W_dec + b_dec`` from sparse features, through
  ``torch.nn.functional.embedding_bag`` (a weighted sum of the active decoder rows).

The JumpReLU is computed exactly as the dense SAELens ``encode``: ``pre = x @ W_enc + b_enc`` in the
SAE's dtype, ``f = relu(pre) * (pre > threshold)`` with the float32 threshold. Works on SAELens
SAEs / transcoders and on :class:`~sae_lens_gemmascope.partial.SAEEncoder` /
:class:`~sae_lens_gemmascope.partial.SAEDecoder`.

Example:
    >>> import torch
    >>> from sae_lens_gemmascope.partial import SAEEncoder, SAEDecoder
    >>> enc = SAEEncoder(torch.eye(3), torch.zeros(3), torch.full((3,), 0.1), cfg=None)
    >>> vals, idx = encode_topk(enc, torch.tensor([[0.5, 0.05, 2.0]]), k=2)
    >>> vals.tolist(), idx.tolist()
    ([[2.0, 0.5]], [[2, 0]])
    >>> dec = SAEDecoder(torch.eye(3), torch.zeros(3), cfg=None)
    >>> decode_sparse(dec, vals, idx).tolist()
    [[0.5, 0.0, 2.0]]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .errors import InvalidArgumentError

#: Default number of latents per chunk; with ``token_chunk`` tokens a chunk holds token_chunk x this.
LATENT_CHUNK = 8192
#: Default tokens per chunk.
TOKEN_CHUNK = 4096


def _encoder_parts(sae: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        return sae.W_enc, sae.b_enc, sae.threshold
    except AttributeError as err:
        raise InvalidArgumentError(
            f"{type(sae).__name__} has no JumpReLU encoder (W_enc, b_enc, threshold): pass a Gemma Scope SAE, "
            "transcoder or sae_lens_gemmascope.load(..., parts='encoder')."
        ) from err


def _flat_input(sae: Any, x: torch.Tensor, d_in: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    if x.ndim >= 2 and x.shape[-1] != d_in and x.ndim >= 3 and x.shape[-2] * x.shape[-1] == d_in:
        x = x.flatten(-2)  # attention hook_z [..., n_heads, d_head]
    if x.shape[-1] != d_in:
        raise InvalidArgumentError(
            f"The SAE reads vectors of size {d_in}; got an input of shape {tuple(x.shape)}."
        )
    lead = tuple(x.shape[:-1])
    return x.reshape(-1, d_in), lead


def _chunk_features(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, thr: torch.Tensor, a: int, z: int
) -> torch.Tensor:
    pre = x @ w[:, a:z]
    pre += b[a:z]  # as SAELens: x @ W_enc + b_enc (not a fused addmm, which rounds differently)
    # relu(pre) * (pre > threshold), in place (one T x C buffer instead of four)
    return pre.masked_fill_(~(pre > thr[a:z]), 0).relu_()


class Codes(NamedTuple):
    """Features of ``n`` input vectors from one pass over the latents (:func:`encode_codes`).

    ``values`` / ``indices`` ``[n, k]``: each vector's top ``k``, as :func:`encode_topk`;
    ``nz_row`` / ``nz_feature`` / ``nz_value`` ``[nnz]``: every non-zero activation (vector, latent,
    value), ordered by latent chunk, then vector, then latent.
    """

    values: torch.Tensor
    indices: torch.Tensor
    nz_row: torch.Tensor
    nz_feature: torch.Tensor
    nz_value: torch.Tensor


def _scan(
    sae: Any, x: torch.Tensor, k: int | None, nonzeros: bool, latent_chunk: int, token_chunk: int
) -> tuple[Codes, tuple[int, ...], int]:
    """The one chunked JumpReLU pass behind :func:`encode_topk`, :func:`encode_sparse` and
    :func:`encode_codes`: ``(codes over the flattened input, leading shape, d_sae)``."""
    w, b, thr = _encoder_parts(sae)
    d_in, d_sae = int(w.shape[0]), int(w.shape[1])
    if k is not None and not 0 < k <= d_sae:
        raise InvalidArgumentError(f"k={k} must be in 1..{d_sae} (the SAE's number of latents).")
    if latent_chunk < 1 or token_chunk < 1:
        raise InvalidArgumentError(
            f"latent_chunk={latent_chunk} and token_chunk={token_chunk} must both be at least 1."
        )
    xf, lead = _flat_input(sae, x, d_in)
    xf = xf.to(device=w.device, dtype=w.dtype)
    n, kk = xf.shape[0], k or 0
    out_v = torch.empty((n, kk), dtype=w.dtype, device=w.device)
    out_i = torch.empty((n, kk), dtype=torch.long, device=w.device)
    rows: list[torch.Tensor] = []
    cols: list[torch.Tensor] = []
    vals: list[torch.Tensor] = []
    for t0 in range(0, n, token_chunk):
        xt = xf[t0 : t0 + token_chunk]
        best_v: torch.Tensor | None = None
        best_i: torch.Tensor | None = None
        for a in range(0, d_sae, latent_chunk):
            z = min(d_sae, a + latent_chunk)
            f = _chunk_features(xt, w, b, thr, a, z)
            if nonzeros:
                r, c = torch.nonzero(f, as_tuple=True)
                rows.append(r + t0)
                cols.append(c + a)
                vals.append(f[r, c])
            if not kk:
                continue
            v, i = torch.topk(f, min(kk, z - a), dim=-1)
            i = i + a
            if best_v is None or best_i is None:
                best_v, best_i = v, i
            else:  # keep the running top k (ties: lower id first, as in one dense topk)
                cat_v, cat_i = torch.cat([best_v, v], -1), torch.cat([best_i, i], -1)
                sel = torch.topk(cat_v, min(kk, cat_v.shape[-1]), dim=-1).indices
                best_v, best_i = cat_v.gather(-1, sel), cat_i.gather(-1, sel)
        if best_v is not None and best_i is not None:
            out_v[t0 : t0 + xt.shape[0]] = best_v
            out_i[t0 : t0 + xt.shape[0]] = best_i

    def cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.empty(0, dtype=dtype, device=w.device)

    codes = Codes(out_v, out_i, cat(rows, torch.long), cat(cols, torch.long), cat(vals, w.dtype))
    return codes, lead, d_sae


@torch.no_grad()
def encode_topk(
    sae: Any,
    x: torch.Tensor,
    k: int,
    *,
    latent_chunk: int = LATENT_CHUNK,
    token_chunk: int = TOKEN_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest feature activations of each input vector and their latent ids.

    Returns ``(values, indices)`` of shape ``[..., k]`` (``x`` is ``[..., d_in]``), sorted by value
    like ``torch.topk(sae.encode(x), k)``. Where fewer than ``k`` features fire the rest are zeros
    with valid but meaningless ids (filter with ``values > 0``). Memory beyond the weights:
    ``token_chunk x (latent_chunk + k)`` values.
    """
    codes, lead, _ = _scan(sae, x, k, False, latent_chunk, token_chunk)
    return codes.values.reshape(*lead, k), codes.indices.reshape(*lead, k)


@torch.no_grad()
def encode_sparse(
    sae: Any,
    x: torch.Tensor,
    *,
    latent_chunk: int = LATENT_CHUNK,
    token_chunk: int = TOKEN_CHUNK,
) -> torch.Tensor:
    """Every non-zero feature of ``x`` (``[..., d_in]``) as a coalesced ``torch.sparse_coo_tensor``
    of shape ``[..., d_sae]``; ``.to_dense()`` equals ``sae.encode(x)``."""
    codes, lead, d_sae = _scan(sae, x, None, True, latent_chunk, token_chunk)
    r_all, c_all = codes.nz_row, codes.nz_feature
    idx = torch.stack([*torch.unravel_index(r_all, lead), c_all]) if lead else c_all[None]
    # indices are in range by construction: no invariant check (and no warning about skipping it)
    return torch.sparse_coo_tensor(idx, codes.nz_value, (*lead, d_sae), check_invariants=False).coalesce()


@torch.no_grad()
def encode_codes(
    sae: Any,
    x: torch.Tensor,
    k: int,
    *,
    latent_chunk: int = LATENT_CHUNK,
    token_chunk: int = TOKEN_CHUNK,
) -> Codes:
    """Each vector's top ``k`` features *and* every non-zero one, from a single encoder pass.

    ``x`` is ``[n, d_in]`` (or ``[..., d_in]``, flattened: ``nz_row`` indexes the flattened rows).
    ``values`` / ``indices`` equal :func:`encode_topk`'s; the non-zeros equal :func:`encode_sparse`'s
    (unsorted). This is what ``gemmascope extract`` stores: top-``k`` rows and exact statistics.

    Example:
        >>> import torch
        >>> from sae_lens_gemmascope.partial import SAEEncoder
        >>> enc = SAEEncoder(torch.eye(3), torch.zeros(3), torch.full((3,), 0.1), cfg=None)
        >>> c = encode_codes(enc, torch.tensor([[0.5, 0.05, 2.0]]), k=1)
        >>> c.values.tolist(), c.indices.tolist(), c.nz_feature.tolist(), c.nz_value.tolist()
        ([[2.0]], [[2]], [0, 2], [0.5, 2.0])
    """
    codes, _, _ = _scan(sae, x, k, True, latent_chunk, token_chunk)
    return codes


@torch.no_grad()
def decode_sparse(
    sae: Any,
    values: torch.Tensor,
    indices: torch.Tensor | None = None,
    *,
    x: torch.Tensor | None = None,
) -> torch.Tensor:
    """``f @ W_dec + b_dec`` (``+ x @ W_skip.T`` for skip transcoders when ``x`` is given) from sparse
    features: ``(values, indices)`` as returned by :func:`encode_topk`, or one sparse tensor from
    :func:`encode_sparse`. Only the active decoder rows are read (``embedding_bag`` with weights)."""
    w_dec, b_dec = sae.W_dec, sae.b_dec
    if indices is None:
        if not values.is_sparse:
            raise InvalidArgumentError(
                "decode_sparse(sae, values) needs a sparse tensor, or (values, indices)."
            )
        sp = values.coalesce()
        lead = tuple(sp.shape[:-1])
        ids = sp.indices()
        n = 1
        for s in lead:
            n *= s
        row = torch.zeros(ids.shape[1], dtype=torch.long, device=ids.device)
        for dim, s in enumerate(lead):
            row = row * s + ids[dim]
        out = torch.zeros((n, w_dec.shape[1]), dtype=w_dec.dtype, device=w_dec.device)
        out.index_add_(
            0, row.to(w_dec.device), sp.values().to(w_dec.dtype)[:, None] * w_dec[ids[-1].to(w_dec.device)]
        )
        out = out.reshape(*lead, w_dec.shape[1])
    else:
        lead = tuple(values.shape[:-1])
        k = values.shape[-1]
        flat_i = indices.reshape(-1, k).to(w_dec.device)
        flat_v = values.reshape(-1, k).to(device=w_dec.device, dtype=w_dec.dtype)
        out = torch.nn.functional.embedding_bag(flat_i, w_dec, per_sample_weights=flat_v, mode="sum")
        out = out.reshape(*lead, w_dec.shape[1])
    out = out + b_dec
    w_skip = getattr(sae, "W_skip", None)
    if w_skip is not None and x is not None:
        out = out + x.to(w_skip.dtype) @ w_skip.T
    result: torch.Tensor = out
    return result
