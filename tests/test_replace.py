"""CLT / crosscoder replacement on a tiny random Gemma 3 (TransformerLens HookedTransformer and Bridge)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from sae_lens_gemmascope.errors import HookMappingError
from sae_lens_gemmascope.multilayer import Crosscoder, CrossLayerTranscoder
from sae_lens_gemmascope.offline.tiny import tiny_gemma, tiny_tokens, to_bridge, to_hooked
from sae_lens_gemmascope.replace import clt_replacement, crosscoder_encoding, run_with_crosscoder

FAMILY = "gemma3_text"
WIDTH = 32


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return tiny_gemma(FAMILY, seed=0)


@pytest.fixture(scope="module")
def hooked(tiny: tuple[Any, Any]) -> Any:
    return to_hooked(tiny[0], FAMILY, processing=False)


def _raw_blocks(
    n: int, d: int, *, causal: bool, affine: bool = False, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w = (g.standard_normal((WIDTH, n, d)) * 0.3).astype(np.float32)
        if causal:
            w[:, :i] = 0
        p = {
            "w_enc": (g.standard_normal((d, WIDTH)) / np.sqrt(d)).astype(np.float32),
            "b_enc": (g.standard_normal(WIDTH) * 0.1).astype(np.float32),
            "threshold": (np.abs(g.standard_normal(WIDTH)) * 0.3 + 0.05).astype(np.float32),
            "w_dec": w,
            "b_dec": (g.standard_normal(d) * 0.1).astype(np.float32),
        }
        if affine:
            p["affine_skip_connection"] = (g.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        out.append(p)
    return out


def _jumprelu64(x: np.ndarray, p: dict[str, np.ndarray], bos: np.ndarray | None = None) -> np.ndarray:
    pre = x @ p["w_enc"].astype(np.float64) + p["b_enc"]
    f = np.maximum(pre, 0) * (pre > p["threshold"].astype(np.float64))
    if bos is not None:
        f[bos] = 0  # Gemma Scope was not trained on <bos>: no latents there
    return f


def _ref_clt_target(
    raw: list[dict[str, np.ndarray]], xs: dict[int, torch.Tensor], j: int, bos: np.ndarray | None = None
) -> np.ndarray:
    """float64 y_j from the raw arrays and the inputs the model actually produced."""
    y = raw[j]["b_dec"].astype(np.float64)
    for i in range(j + 1):
        f = _jumprelu64(xs[i].detach().double().numpy(), raw[i], bos)
        y = y + f @ raw[i]["w_dec"][:, j, :].astype(np.float64)
    if "affine_skip_connection" in raw[j]:
        y = y + xs[j].detach().double().numpy() @ raw[j]["affine_skip_connection"].astype(np.float64)
    return y


def _capture(names: list[str]) -> tuple[dict[str, torch.Tensor], list[tuple[str, Any]]]:
    got: dict[str, torch.Tensor] = {}

    def fn(act: torch.Tensor, hook: Any) -> None:
        got[hook.name] = act.detach().clone()

    return got, [(n, fn) for n in names]


@pytest.mark.parametrize("affine", [False, True])
def test_clt_error_term_keeps_logits_and_plain_replacement_is_exact(
    hooked: Any, tiny: Any, affine: bool
) -> None:
    facts = tiny[1]
    n, d = facts.n_layers, facts.d_model
    raw = _raw_blocks(n, d, causal=True, affine=affine)
    clt = CrossLayerTranscoder.from_tensors(raw, model=facts.model_key)
    toks = tiny_tokens(batch=2, seq=12)
    with torch.no_grad():
        clean = hooked(toks)
        with clt_replacement(hooked, clt, use_error_term=True) as st:
            with_err = hooked(toks)
        assert (with_err - clean).abs().max().item() <= 1e-5
        fired = np.mean([(st.features[i] > 0).float().mean().item() for i in range(n)])
        assert 0.02 < fired < 0.98

        names = [f"blocks.{j}.hook_resid_mid" for j in range(n)] + [
            f"blocks.{j}.hook_resid_post" for j in range(n)
        ]
        got, cap = _capture(names)
        with clt_replacement(hooked, clt) as st, hooked.hooks(fwd_hooks=cap):
            replaced = hooked(toks)
    assert (replaced - clean).abs().max().item() > 1e-3  # the replacement really changed the model
    bos = (toks == 2).numpy()
    assert bos[:, 0].all() and not bos[:, 1:].any()
    for j in range(n):  # every layer, including the last
        ref = _ref_clt_target(raw, st.inputs, j, bos)
        flowed = (got[f"blocks.{j}.hook_resid_post"] - got[f"blocks.{j}.hook_resid_mid"]).double().numpy()
        np.testing.assert_allclose(flowed[:, 1:], ref[:, 1:], rtol=1e-4, atol=1e-4, err_msg=f"layer {j}")
        orig = st.originals[j][:, 0].double().numpy()  # <bos>: the model's own MLP output is kept
        np.testing.assert_allclose(flowed[:, 0], orig, rtol=1e-4, atol=1e-4, err_msg=f"layer {j} <bos>")
        np.testing.assert_allclose(st.reconstructions[j].double().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_clt_inputs_are_the_hf_pre_feedforward_norm_output(hooked: Any, tiny: Any) -> None:
    hf, facts = tiny
    raw = _raw_blocks(facts.n_layers, facts.d_model, causal=True)
    clt = CrossLayerTranscoder.from_tensors(raw, model=facts.model_key)
    toks = tiny_tokens(batch=1, seq=9)
    seen: dict[int, torch.Tensor] = {}
    handles = [
        layer.pre_feedforward_layernorm.register_forward_hook(
            lambda m, a, out, i=i: seen.__setitem__(i, out.detach().clone())
        )
        for i, layer in enumerate(hf.model.layers)
    ]
    try:
        with torch.no_grad():
            hf(toks)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad(), clt_replacement(hooked, clt, use_error_term=True) as st:
        hooked(toks)
    for i in range(facts.n_layers):
        torch.testing.assert_close(st.inputs[i], seen[i], rtol=1e-4, atol=1e-5)


def test_bridge_error_term_keeps_logits(tiny: Any) -> None:
    hf, facts = tiny
    bridge = to_bridge(hf)
    raw = _raw_blocks(facts.n_layers, facts.d_model, causal=True)
    clt = CrossLayerTranscoder.from_tensors(raw, model=facts.model_key)
    toks = tiny_tokens(batch=1, seq=10)
    with torch.no_grad():
        clean = bridge(toks)
        with clt_replacement(bridge, clt, use_error_term=True) as st:
            out = bridge(toks)
        assert (out - clean).abs().max().item() <= 1e-5
        with clt_replacement(bridge, clt, targets=[2]) as st:
            bridge(toks)
    bos = (toks == 2).numpy()
    np.testing.assert_allclose(
        st.reconstructions[2].double().numpy(), _ref_clt_target(raw, st.inputs, 2, bos), rtol=1e-5, atol=1e-5
    )
    assert sorted(st.reconstructions) == [2]


def test_folded_models_refused(tiny: Any) -> None:
    hf, facts = tiny
    clt = CrossLayerTranscoder.from_tensors(
        _raw_blocks(facts.n_layers, facts.d_model, causal=True), model=facts.model_key
    )
    for folded in (to_hooked(hf, FAMILY, processing=True), to_bridge(hf, compat=True)):
        with pytest.raises(HookMappingError, match="from_pretrained_no_processing"):
            with clt_replacement(folded, clt):
                pass


def test_it_chat_prefix_positions_are_zeroed(hooked: Any, tiny: Any) -> None:
    facts = tiny[1]
    raw = _raw_blocks(facts.n_layers, facts.d_model, causal=True)
    # an IT model key: same hook names, chat prefix of 4 tokens
    clt = CrossLayerTranscoder.from_tensors(raw, model="gemma-3-1b-it")
    assert len(clt.chat_prefix_tokens) == 4
    toks = tiny_tokens(batch=2, seq=10)
    with torch.no_grad(), clt_replacement(hooked, clt) as st:
        hooked(toks)
    for i in range(facts.n_layers):
        assert not st.features[i][:, :4].any()
        assert st.features[i][:, 4:].any()
    got, cap = _capture([f"blocks.{j}.hook_mlp_out" for j in range(facts.n_layers)])
    with torch.no_grad(), clt_replacement(hooked, clt) as st, hooked.hooks(fwd_hooks=cap):
        hooked(toks)
    for j in range(facts.n_layers):
        torch.testing.assert_close(got[f"blocks.{j}.hook_mlp_out"][:, :4], st.originals[j][:, :4])
        torch.testing.assert_close(got[f"blocks.{j}.hook_mlp_out"][:, 4:], st.reconstructions[j][:, 4:])


def test_crosscoder_encode_decode_on_residual_hooks(hooked: Any, tiny: Any) -> None:
    facts = tiny[1]
    layers = (1, 2, 3, 4)
    raw = _raw_blocks(4, facts.d_model, causal=False, seed=5)
    cc = Crosscoder.from_tensors(raw, layers=layers, model=facts.model_key)
    toks = tiny_tokens(batch=2, seq=8)
    with torch.no_grad():
        clean, cache = hooked.run_with_cache(toks)
        with crosscoder_encoding(hooked, cc) as st:
            hooked(toks)
    xs = [cache[f"blocks.{L}.hook_resid_post"].double().numpy() for L in layers]
    bos = (toks == 2).numpy()
    fs = []
    for k in range(4):
        fs.append(_jumprelu64(xs[k], raw[k], bos))
        np.testing.assert_allclose(st.features[k].double().numpy(), fs[k], rtol=1e-4, atol=1e-5)
    rec = st.reconstruct()
    for j in range(4):
        ref = sum(fs[k] @ raw[k]["w_dec"][:, j, :].astype(np.float64) for k in range(4)) + raw[j]["b_dec"]
        ref[bos] = xs[j][bos]  # <bos> keeps the model's own residual
        np.testing.assert_allclose(rec[j].double().numpy(), ref, rtol=1e-4, atol=1e-4)

    with torch.no_grad():
        same, _ = run_with_crosscoder(hooked, cc, toks, use_error_term=True)
        spliced, st2 = run_with_crosscoder(hooked, cc, toks, use_error_term=False)
        # resid_post of layer 4 (the last hooked layer) overrides all upstream writes
        expected = hooked(st2.reconstructions[3], start_at_layer=5)
    assert (same - clean).abs().max().item() <= 1e-5
    assert (spliced - clean).abs().max().item() > 1e-3
    torch.testing.assert_close(spliced, expected, rtol=1e-5, atol=1e-5)
