"""Partial loading (encoder-only, decoder-only, latent selections), mmap loads, value checks, and the
sparse encode/decode paths, each against a float64 re-implementation computed from the raw file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_lens_gemmascope import (
    SAEDecoder,
    SAEEncoder,
    decode_sparse,
    encode_sparse,
    encode_topk,
    load,
    registry,
)
from sae_lens_gemmascope.errors import CorruptArtifactError
from sae_lens_gemmascope.offline.synthetic import jumprelu_params, npz_bytes, put_file, safetensors_bytes

GS2_TC = ("gemma-scope-2-270m-pt-transcoders", "transcoder/layer_9_width_16k_l0_small_affine")
GS2_SAE = ("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
GS1 = ("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
D_SAE = 96


def _write(
    hf_cache: Path, key: tuple[str, str], seed: int = 0, **overrides: np.ndarray
) -> dict[str, np.ndarray]:
    """Write one artifact with known random contents; return its arrays as float64."""
    e = registry.get(*key)
    p = jumprelu_params(e.d_in, D_SAE, e.d_out, affine=e.affine, seed=seed)
    p["threshold"] = np.abs(p["threshold"]) * 0.3  # some latents fire on unit-scale inputs
    p.update(overrides)
    if e.format == "gs1_npz":
        put_file(hf_cache, e.repo_id, f"{e.path}/params.npz", npz_bytes(p))
    else:
        put_file(hf_cache, e.repo_id, f"{e.path}/params.safetensors", safetensors_bytes(p))
    return {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}


def _ref_features(raw: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pre = x @ raw["w_enc"] + raw["b_enc"]
    return np.maximum(pre, 0) * (pre > raw["threshold"]), pre


def _ref_decode(raw: dict[str, np.ndarray], f: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    out = f @ raw["w_dec"] + raw["b_dec"]
    if "affine_skip_connection" in raw and x is not None:
        out = out + x @ raw["affine_skip_connection"]
    return out


def _x(d: int, n: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def _assert_features(
    got: torch.Tensor, ref: np.ndarray, pre: np.ndarray, thr: np.ndarray, tol: float
) -> None:
    """Equal to the float64 reference except where pre is within rounding of the threshold."""
    border = np.abs(pre - thr) < 50 * tol * (1 + np.abs(pre))
    g = got.detach().double().numpy()
    assert np.abs(np.where(border, 0, g - ref)).max() < tol * max(1.0, np.abs(ref).max())
    assert ((g > 0) == (ref > 0))[~border].all()


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_encoder_only_matches_float64(hf_cache, no_network, dtype, tol):
    raw = _write(hf_cache, GS2_TC)
    enc = load(*GS2_TC, parts="encoder", dtype=dtype, check_shapes=False)
    assert isinstance(enc, SAEEncoder)
    assert not hasattr(enc, "W_dec") and enc.threshold.dtype == torch.float32
    assert enc.W_enc.dtype == getattr(torch, dtype)
    assert enc.cfg.metadata.hook_name == "blocks.9.mlp.hook_in" and enc.cfg.d_sae == D_SAE
    x = _x(640)
    ref, pre = _ref_features(raw, x)
    _assert_features(enc.encode(torch.tensor(x, dtype=torch.float32)), ref, pre, raw["threshold"], tol)


@pytest.mark.parametrize("latents", [[50, 3, 17, 95], slice(10, 40, 3)])
def test_latent_selection_encodes_exactly_those_latents_in_order(hf_cache, no_network, latents):
    raw = _write(hf_cache, GS2_TC)
    ids = list(range(D_SAE))[latents] if isinstance(latents, slice) else latents
    enc = load(*GS2_TC, parts="encoder", latents=latents, check_shapes=False)
    assert enc.cfg.d_sae == len(ids) and enc.latents == ids
    x = _x(640)
    ref, pre = _ref_features(raw, x)
    _assert_features(
        enc.encode(torch.tensor(x, dtype=torch.float32)),
        ref[:, ids],
        pre[:, ids],
        raw["threshold"][ids],
        1e-5,
    )
    sae = load(*GS2_TC, latents=latents, check_shapes=False)  # the whole SAELens object, restricted
    assert sae.cfg.d_sae == len(ids) and sae.cfg.metadata.gemmascope_latents == ids
    np.testing.assert_allclose(sae.W_dec.detach().double().numpy(), raw["w_dec"][ids], rtol=0, atol=0)
    np.testing.assert_allclose(
        sae.W_skip.detach().double().numpy(), raw["affine_skip_connection"].T, rtol=0, atol=0
    )


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_decoder_only_with_skip_matches_float64(hf_cache, no_network, dtype, tol):
    raw = _write(hf_cache, GS2_TC)
    dec = load(*GS2_TC, parts="decoder", dtype=dtype, check_shapes=False)
    assert isinstance(dec, SAEDecoder) and not hasattr(dec, "W_enc")
    x = _x(640)
    f, _ = _ref_features(raw, x)
    got = (
        dec.decode(torch.tensor(f, dtype=torch.float32), torch.tensor(x, dtype=torch.float32))
        .double()
        .numpy()
    )
    ref = _ref_decode(raw, f, x)
    assert np.abs(got - ref).max() < tol * np.abs(ref).max()
    with pytest.raises(ValueError, match="skip"):
        dec.decode(torch.tensor(f, dtype=torch.float32))


def test_gs1_npz_latents_and_mmap(hf_cache, no_network):
    raw = _write(hf_cache, GS1)
    enc = load(*GS1, parts="encoder", latents=[7, 1], check_shapes=False)
    np.testing.assert_array_equal(enc.W_enc.detach().double().numpy(), raw["w_enc"][:, [7, 1]])
    sae = load(*GS1, mmap=True, check_shapes=False)
    np.testing.assert_array_equal(sae.W_dec.detach().double().numpy(), raw["w_dec"])


def test_mmap_is_zero_copy_and_copy_on_write(hf_cache, no_network):
    raw = _write(hf_cache, GS2_SAE)
    e = registry.get(*GS2_SAE)
    sae = load(*GS2_SAE, mmap=True, check_shapes=False)
    np.testing.assert_array_equal(sae.W_enc.detach().double().numpy(), raw["w_enc"])
    blob = next(hf_cache.rglob("params.safetensors")).resolve()
    before = blob.read_bytes()
    with torch.no_grad():
        sae.W_enc.add_(1.0)  # copy-on-write: the cached file must not change
    assert blob.read_bytes() == before
    assert sae.threshold.dtype == torch.float32 and e.d_in == sae.cfg.d_in
    with pytest.raises(Exception, match="mmap=True"):
        load(*GS2_SAE, mmap=True, dtype="bfloat16", check_shapes=False)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_encode_topk_matches_float64_topk(hf_cache, no_network, dtype, tol):
    raw = _write(hf_cache, GS2_TC)
    enc = load(*GS2_TC, parts="encoder", dtype=dtype, check_shapes=False)
    x = _x(640, n=9).reshape(3, 3, 640)
    ref, pre = _ref_features(raw, x.reshape(9, 640))
    k = 6
    vals, idx = encode_topk(enc, torch.tensor(x, dtype=torch.float32), k, latent_chunk=7, token_chunk=4)
    assert vals.shape == idx.shape == (3, 3, k)
    vals, idx = vals.reshape(9, k).double().numpy(), idx.reshape(9, k).numpy()
    for t in range(9):
        order = np.sort(ref[t])[::-1][:k]
        assert np.abs(vals[t] - order).max() < tol * max(1.0, order.max())
        clear = order > 0
        gap = np.diff(np.sort(ref[t])[::-1][: k + 1])
        if (np.abs(gap) > 1e-2).all():  # no near-tie: the ids are determined
            assert set(idx[t][clear]) == set(np.argsort(-ref[t])[:k][clear])
        np.testing.assert_allclose(vals[t], ref[t][idx[t]], atol=tol * max(1.0, order.max()))


def test_encode_sparse_equals_saelens_dense_encode(hf_cache, no_network):
    raw = _write(hf_cache, GS2_SAE)
    sae = load(*GS2_SAE, check_shapes=False)
    x = torch.tensor(_x(640, n=10), dtype=torch.float32).reshape(2, 5, 640)
    sp = encode_sparse(sae, x, latent_chunk=13, token_chunk=3)
    assert sp.is_sparse and sp.shape == (2, 5, D_SAE)
    with torch.no_grad():
        dense = sae.encode(x)
    torch.testing.assert_close(sp.to_dense(), dense, rtol=0, atol=0)
    ref, pre = _ref_features(raw, x.reshape(10, 640).double().numpy())
    _assert_features(sp.to_dense().reshape(10, D_SAE), ref, pre, raw["threshold"], 1e-5)


def test_encode_codes_top_k_and_every_nonzero_match_float64(hf_cache, no_network):
    from sae_lens_gemmascope.sparse import encode_codes

    raw = _write(hf_cache, GS2_SAE, seed=3)
    enc = load(*GS2_SAE, parts="encoder", check_shapes=False)
    x = _x(640, n=11, seed=5)
    ref, pre = _ref_features(raw, x)
    k = 4
    c = encode_codes(enc, torch.tensor(x, dtype=torch.float32), k, latent_chunk=10, token_chunk=3)
    assert c.values.shape == c.indices.shape == (11, k)
    # every non-zero exactly once, at its (row, latent), with the float64 value
    got = np.zeros_like(ref)
    np.add.at(got, (c.nz_row.numpy(), c.nz_feature.numpy()), c.nz_value.double().numpy())
    pairs = c.nz_row.numpy() * D_SAE + c.nz_feature.numpy()
    assert len(np.unique(pairs)) == len(pairs) and (c.nz_value > 0).all()
    _assert_features(torch.from_numpy(got), ref, pre, raw["threshold"], 1e-5)
    # the top k of each row are the k largest of the float64 reference
    vals = c.values.double().numpy()
    for t in range(11):
        order = np.sort(ref[t])[::-1][:k]
        assert np.abs(vals[t] - order).max() < 1e-5 * max(1.0, order.max())
        np.testing.assert_allclose(vals[t], ref[t][c.indices[t].numpy()], atol=1e-5 * max(1.0, order.max()))


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_decode_sparse_matches_float64(hf_cache, no_network, dtype, tol):
    raw = _write(hf_cache, GS2_TC)
    sae = load(*GS2_TC, dtype=dtype, check_shapes=False)
    x = _x(640, n=8)
    xt = torch.tensor(x, dtype=torch.float32)
    vals, idx = encode_topk(sae, xt, 5)
    f = np.zeros((8, D_SAE))
    np.put_along_axis(f, idx.numpy(), vals.detach().double().numpy(), axis=1)
    ref = _ref_decode(raw, f, x)
    got = decode_sparse(sae, vals, idx, x=xt).double().numpy()
    assert np.abs(got - ref).max() < tol * np.abs(ref).max()
    sp = encode_sparse(sae, xt)
    f_all, _ = _ref_features(raw, x)
    got2 = decode_sparse(sae, sp, x=xt).double().numpy()
    ref2 = _ref_decode(raw, sp.to_dense().double().numpy(), x)
    assert np.abs(got2 - ref2).max() < tol * np.abs(ref2).max()


def test_value_checks_default_full_none(hf_cache, no_network):
    e = registry.get(*GS2_SAE)
    p = jumprelu_params(e.d_in, 8)
    p["w_enc"][0, 0] = np.nan
    put_file(hf_cache, e.repo_id, f"{e.path}/params.safetensors", safetensors_bytes(p))
    load(*GS2_SAE, check_shapes=False)  # the default does not scan the matrices
    with pytest.raises(CorruptArtifactError, match="NaN or inf"):
        load(*GS2_SAE, check_shapes=False, verify="full")
    p = jumprelu_params(e.d_in, 8)
    p["threshold"][2] = -0.5
    put_file(hf_cache, e.repo_id, f"{e.path}/params.safetensors", safetensors_bytes(p))
    with pytest.raises(CorruptArtifactError, match="negative") as err:
        load(*GS2_SAE, check_shapes=False)
    assert f"{GS2_SAE[0]}/{GS2_SAE[1]}" in str(err.value)
    assert float(load(*GS2_SAE, check_shapes=False, verify="none").threshold[2]) == -0.5


def test_non_float32_file_refused_unless_allowed(hf_cache, no_network):
    e = registry.get(*GS2_SAE)
    p = {k: v.astype(np.float64) for k, v in jumprelu_params(e.d_in, 8).items()}
    put_file(hf_cache, e.repo_id, f"{e.path}/params.safetensors", safetensors_bytes(p))
    with pytest.raises(CorruptArtifactError, match="F64"):
        load(*GS2_SAE, check_shapes=False)
    sae = load(*GS2_SAE, check_shapes=False, check_dtypes=False)
    assert sae.W_enc.dtype == torch.float32
    np.testing.assert_allclose(sae.W_enc.detach().double().numpy(), p["w_enc"], rtol=1e-7)


def test_overlapping_offsets_refused_by_the_library_reader(hf_cache, no_network):
    e = registry.get(*GS2_SAE)
    header = {
        "w_enc": {"dtype": "F32", "shape": [640, 2], "data_offsets": [0, 5120]},
        "b_enc": {"dtype": "F32", "shape": [2], "data_offsets": [5112, 5120]},
    }
    h = json.dumps(header).encode()
    put_file(hf_cache, e.repo_id, f"{e.path}/params.safetensors", struct.pack("<Q", len(h)) + h + bytes(5120))
    with pytest.raises(CorruptArtifactError, match="safetensors library refused"):
        load(*GS2_SAE, check_shapes=False)
