"""Every single-layer family loads offline and computes exactly what the raw files say (float64 reference)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_lens_gemmascope import load, load_with_cfg_and_sparsity, registry
from sae_lens_gemmascope.hooks import hook_for
from sae_lens_gemmascope.offline.synthetic import jumprelu_params, put_file, write_entry

D_SAE = 48

# (release, sae_id or None = first id): canonical alias, embedding, 9b-it, GS1 transcoder, GS1 att,
# GS2 plain / affine transcoders, attn_out, 27b, IT mlp.
SAMPLE = [
    ("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical"),
    ("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6"),
    ("gemma-scope-9b-it-res", None),
    ("gemma-scope-2b-pt-transcoders", None),
    ("gemma-scope-2b-pt-att", None),
    ("gemma-scope-2b-pt-mlp-canonical", None),
    ("gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_262k_l0_medium"),
    ("gemma-scope-2-270m-pt-transcoders", "transcoder/layer_9_width_16k_l0_small_affine"),
    ("gemma-scope-2-1b-pt-att", "layer_7_width_16k_l0_small"),
    ("gemma-scope-2-27b-pt-res", None),
    ("gemma-scope-2-4b-it-mlp-all", None),
]


def _entry(release: str, sae_id: str | None):
    return registry.get(release, sae_id) if sae_id else registry.entries(release)[0]


def _raw(entry, path: Path) -> dict[str, np.ndarray]:
    """The file's arrays as float64, read independently of the package."""
    if entry.format == "gs1_npz":
        with np.load(path, allow_pickle=False) as z:
            return {k.lower(): z[k].astype(np.float64) for k in z.files}
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}


def _reference(entry, raw: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 Gemma Scope formula, in the space of the hook the SAE is attached to."""
    scale = math.sqrt(entry.d_in) if entry.site == "embedding" else 1.0
    e = x / scale  # the embedding SAE was trained on raw embedding rows; hook_embed = sqrt(d) * rows
    pre = e @ raw["w_enc"] + raw["b_enc"]
    f = np.maximum(pre, 0) * (pre > raw["threshold"])
    out = f @ raw["w_dec"] + raw["b_dec"]
    if "affine_skip_connection" in raw:
        out = out + e @ raw["affine_skip_connection"]
    return f, out * scale


@pytest.mark.parametrize("release,sae_id", SAMPLE, ids=[r for r, _ in SAMPLE])
def test_family_matches_float64_reference(release, sae_id, hf_cache, no_network):
    entry = _entry(release, sae_id)
    path = write_entry(entry, hf_cache, d_sae=D_SAE, seed=7)[0]
    sae = load(entry.release, entry.sae_id, check_shapes=False)

    arch = {
        "sae": "JumpReLUSAE",
        "transcoder": "JumpReLUTranscoder",
        "skip_transcoder": "JumpReLUSkipTranscoder",
    }
    assert type(sae).__name__ == arch[entry.kind]
    md = sae.cfg.metadata
    ht = hook_for(entry.model, entry.hook_site_in, entry.layer)
    assert md.hook_name == ht.hook_name and sae.cfg.reshape_activations == ht.reshape
    assert md.model_name == entry.saelens_model_name and md.neuronpedia_id == entry.neuronpedia_id
    assert sae.cfg.d_in == entry.d_in and sae.cfg.d_sae == D_SAE and not sae.cfg.apply_b_dec_to_input
    # dataset_path is not invented; context_size is SAELens' 1024 for Gemma Scope 1 (ActivationsStore needs it)
    assert md.dataset_path is None and md.context_size == (1024 if entry.generation == 1 else None)
    if entry.kind != "sae":
        assert md.hook_name_out == hook_for(entry.model, entry.hook_site_out, entry.layer).hook_name
        assert sae.cfg.d_out == entry.d_out

    raw = _raw(entry, path)
    g = np.random.default_rng(0)
    x = g.standard_normal((5, entry.d_in)) * (math.sqrt(entry.d_in) if entry.site == "embedding" else 1.0)
    f_ref, out_ref = _reference(entry, raw, x)
    xt = torch.tensor(x, dtype=torch.float32)
    if sae.cfg.reshape_activations == "hook_z":  # HookedTransformer hook_z: [..., n_heads, d_head]
        m = entry.model_facts
        xt = xt.reshape(5, m.n_heads, m.d_head)
    with torch.no_grad():
        f = sae.encode(xt)
        out = sae(xt) if entry.kind != "sae" else sae.decode(f)
    assert (f > 0).sum() > 0 and (f == 0).sum() > 0  # the test exercises the threshold
    np.testing.assert_allclose(f.double().numpy(), f_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        out.double().reshape(5, -1).numpy(), out_ref, rtol=1e-4, atol=1e-4 * max(1, x.std())
    )


def test_embedding_rescale_includes_b_dec(hf_cache, no_network):
    entry = registry.get("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6")
    path = write_entry(entry, hf_cache, d_sae=8)[0]
    raw = _raw(entry, path)
    sae = load(entry.release, entry.sae_id, check_shapes=False)
    s = math.sqrt(2304)
    np.testing.assert_allclose(sae.W_enc.detach().double().numpy(), raw["w_enc"] / s, rtol=1e-6)
    np.testing.assert_allclose(sae.W_dec.detach().double().numpy(), raw["w_dec"] * s, rtol=1e-6)
    np.testing.assert_allclose(sae.b_dec.detach().double().numpy(), raw["b_dec"] * s, rtol=1e-6)
    np.testing.assert_array_equal(sae.threshold.detach().double().numpy(), raw["threshold"])  # not rescaled
    assert sae.cfg.metadata.hook_name == "hook_embed"


def test_bfloat16_keeps_threshold_float32(hf_cache, no_network):
    entry = registry.get("gemma-scope-2-270m-pt-transcoders", "transcoder/layer_9_width_16k_l0_small_affine")
    path = write_entry(entry, hf_cache, d_sae=D_SAE)[0]
    raw = _raw(entry, path)
    sae = load(entry.release, entry.sae_id, dtype="bfloat16", check_shapes=False)
    assert sae.W_enc.dtype == torch.bfloat16 and sae.W_skip.dtype == torch.bfloat16
    assert sae.threshold.dtype == torch.float32
    np.testing.assert_array_equal(sae.threshold.detach().double().numpy(), raw["threshold"])
    assert torch.equal(sae.W_enc, torch.tensor(raw["w_enc"], dtype=torch.float32).bfloat16())
    # W_skip is (d_out, d_in), the transpose of the stored affine_skip_connection
    assert torch.equal(
        sae.W_skip, torch.tensor(raw["affine_skip_connection"].T, dtype=torch.float32).bfloat16()
    )
    sae.to(torch.bfloat16)
    assert sae.threshold.dtype == torch.float32  # stays float32 through later casts too
    # JumpReLU with the fp32 threshold = the formula on the bf16 pre-activations
    x = torch.randn(7, entry.d_in).bfloat16()
    with torch.no_grad():
        pre = x @ sae.W_enc + sae.b_enc
        f = sae.encode(x)
    expected = torch.relu(pre) * (pre.double() > torch.tensor(raw["threshold"]))
    assert torch.equal(f, expected.to(f.dtype))


def test_gs1_compressed_npz_streams(hf_cache, no_network):
    entry = registry.get("gemma-scope-2b-pt-mlp", registry.sae_ids("gemma-scope-2b-pt-mlp")[0])
    p = jumprelu_params(entry.d_in, 16, seed=3)
    buf = io.BytesIO()
    np.savez_compressed(
        buf, W_enc=p["w_enc"], W_dec=p["w_dec"], b_enc=p["b_enc"], b_dec=p["b_dec"], threshold=p["threshold"]
    )
    put_file(hf_cache, entry.repo_id, f"{entry.path}/params.npz", buf.getvalue())
    sae = load(entry.release, entry.sae_id, check_shapes=False)
    assert torch.equal(sae.W_dec, torch.from_numpy(p["w_dec"]))
    assert torch.equal(sae.threshold.detach(), torch.from_numpy(p["threshold"]))


def test_real_shapes_pass_the_registry_check(hf_cache, no_network):
    entry = registry.get("gemma-scope-9b-pt-res", "embedding/width_4k/average_l0_7")
    write_entry(entry, hf_cache)  # real shapes (3584 x 4096)
    sae = load(entry.release, entry.sae_id)
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (3584, 4096)


def test_sparsity_from_cached_examples(hf_cache, no_network):
    from safetensors.numpy import save

    entry = registry.get("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_medium")
    write_entry(entry, hf_cache, d_sae=D_SAE)
    _, _, none = load_with_cfg_and_sparsity(entry.release, entry.sae_id, check_shapes=False)
    assert none is None  # not cached: never downloaded implicitly
    freq = np.random.default_rng(1).uniform(1e-6, 0.1, D_SAE)
    freq[3] = 0.0
    put_file(
        hf_cache, entry.repo_id, f"{entry.path}/examples.safetensors", save({"feature_frequencies": freq})
    )
    _, _, sp = load_with_cfg_and_sparsity(entry.release, entry.sae_id, check_shapes=False)
    assert sp.dtype == torch.float64 and sp.shape == (D_SAE,)
    np.testing.assert_allclose(sp.numpy()[freq > 0], np.log10(freq[freq > 0]), rtol=1e-13)
    assert sp[3] == -math.inf
    sae, sp2 = load(entry.release, entry.sae_id, check_shapes=False, with_sparsity=True)
    assert torch.equal(sp, sp2)
