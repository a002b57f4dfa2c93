"""splice / cache_features / steer / ablate on tiny random Gemma models, three backends.

References are independent of ``attach.py``: HF module tensors read with torch hooks, and JumpReLU
encode/decode recomputed in float64 from the SAE's raw parameters.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from sae_lens_gemmascope.attach import (
    ModelMismatchWarning,
    PromptWarning,
    ablate,
    cache_features,
    splice,
    steer,
)
from sae_lens_gemmascope.errors import HookMappingError
from sae_lens_gemmascope.offline.tiny import random_sae, tiny_gemma, tiny_tokens, to_bridge, to_hooked

FAM, KEY = "gemma3_text", "gemma-3-270m"
L = 5
BACKENDS = ("hf", "ht", "bridge")
# site -> (HF module under model.layers.L, io)
HF_AT = {
    "resid_post": ("", "output"),
    "attn_out": (".self_attn.o_proj", "input"),
    "mlp_out": (".post_feedforward_layernorm", "output"),
    "gs2_transcoder_in": (".pre_feedforward_layernorm", "output"),
    "gs1_transcoder_in": (".pre_feedforward_layernorm", "input"),
}


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return tiny_gemma(FAM, seed=0)


@pytest.fixture(scope="module")
def models(tiny: tuple[Any, Any]) -> dict[str, Any]:
    hf, _ = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"hf": hf, "ht": to_hooked(hf, FAM), "bridge": to_bridge(hf)}


@pytest.fixture(scope="module")
def toks() -> torch.Tensor:
    return tiny_tokens(batch=2, seq=12, seed=1)


def saes(facts: Any) -> dict[str, Any]:
    d, a = facts.d_model, facts.n_heads * facts.d_head
    return {
        "resid": random_sae(KEY, "resid_post", L, d_in=d, d_sae=48, seed=1),
        "attn": random_sae(KEY, "attn_out", L, d_in=a, d_sae=48, seed=2),
        "mlp": random_sae(KEY, "mlp_out", L, d_in=d, d_sae=48, seed=3),
        "tc": random_sae(
            KEY, "gs2_transcoder_in", L, d_in=d, d_sae=48, site_out="transcoder_out", skip=True, seed=4
        ),
    }


def hf_capture(
    hf: Any, site: str, toks: torch.Tensor, layer: int = L, replace: Any = None
) -> tuple[Any, Any]:
    """(tensor at the HF module point, logits); ``replace(t)`` substitutes an output tensor."""
    sub, io = HF_AT[site]
    base = (
        "model.language_model.layers"
        if type(hf).__name__ == "Gemma3ForConditionalGeneration"
        else "model.layers"
    )
    mod = hf.get_submodule(f"{base}.{layer}{sub}")
    got: dict[str, torch.Tensor] = {}
    if io == "input":
        h = mod.register_forward_pre_hook(lambda m, a: got.__setitem__("t", a[0].detach().clone()))
    else:

        def post(m: Any, a: Any, o: Any) -> Any:
            t = o[0] if isinstance(o, tuple) else o
            got["t"] = t.detach().clone()
            if replace is not None:
                new = replace(t)
                return (new, *o[1:]) if isinstance(o, tuple) else new
            return None

        h = mod.register_forward_hook(post)
    with torch.no_grad():
        logits = hf(toks).logits
    h.remove()
    return got["t"], logits


def run(model: Any, toks: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(toks)
    return out if isinstance(out, torch.Tensor) else out.logits


def f64(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, pre-activations) in float64 from the raw parameters."""
    pre = x.double() @ sae.W_enc.double() + sae.b_enc.double()
    return pre * (pre > sae.threshold.double()), pre


def dec64(sae: Any, f: torch.Tensor, x_in: torch.Tensor | None = None) -> torch.Tensor:
    out = f @ sae.W_dec.double() + sae.b_dec.double()
    if x_in is not None and hasattr(sae, "W_skip"):
        out = out + x_in.double() @ sae.W_skip.double().T
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["resid", "attn", "mlp", "tc"])
def test_splice_with_error_term_keeps_logits(
    models: Any, tiny: Any, toks: Any, backend: str, kind: str
) -> None:
    model, sae = models[backend], saes(tiny[1])[kind]
    ref = run(model, toks)
    with splice(model, sae, use_error_term=True) as st:
        out = run(model, toks)
    assert (out - ref).abs().max().item() <= 1e-5
    assert st.features.shape == (2, 12, 48) and (st.features > 0).any()
    assert (run(model, toks) - ref).abs().max().item() == 0.0  # hooks removed


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["attn", "tc"])
def test_splice_writes_the_float64_reconstruction(
    models: Any, tiny: Any, toks: Any, backend: str, kind: str
) -> None:
    hf = tiny[0]
    sae = saes(tiny[1])[kind]
    site_in = "attn_out" if kind == "attn" else "gs2_transcoder_in"
    x_in, _ = hf_capture(hf, site_in, toks)
    f, pre = f64(sae, x_in)
    f[:, 0] = 0  # <bos> (every row starts with it): not a trained position
    recon = dec64(sae, f, x_in if kind == "tc" else None).float()
    orig_out = x_in if kind == "attn" else hf_capture(hf, "mlp_out", toks)[0]
    recon[:, 0] = orig_out[:, 0]  # the model's own activation is kept at <bos>
    if kind == "attn":  # o_proj input replaced: compare logits with HF where o_proj sees recon
        mod = hf.get_submodule(f"model.layers.{L}.self_attn.o_proj")
        h = mod.register_forward_pre_hook(lambda m, a: (recon,))
        want = run(hf, toks)
        h.remove()
    else:
        _, want = hf_capture(hf, "mlp_out", toks, replace=lambda t: recon)
    with cache_features(models[backend], sae) as cache:
        run(models[backend], toks)
    safe = (pre - sae.threshold.double()).abs() > 1e-4  # skip latents within rounding of the threshold
    assert ((cache.features.double() - f).abs() * safe).max().item() <= 1e-4
    with splice(models[backend], sae) as st:
        got = run(models[backend], toks)
    assert (got - want).abs().max().item() <= 1e-4
    assert st.error is not None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["resid", "attn", "tc"])
def test_steer_moves_the_output_site_by_alpha_d(
    models: Any, tiny: Any, toks: Any, backend: str, kind: str
) -> None:
    hf, facts = tiny
    model, sae = models[backend], saes(tiny[1])[kind]
    site = {"resid": "resid_post", "attn": "attn_out", "tc": "mlp_out"}[kind]
    feature, alpha = 7, 3.5
    if backend == "hf":
        before, _ = hf_capture(hf, site, toks)
        with steer(hf, sae, feature, alpha):
            after, _ = hf_capture(hf, site, toks)
    else:
        from sae_lens_gemmascope.hooks import hook_for

        name = str(hook_for(KEY, site, L, "hooked_transformer" if backend == "ht" else "bridge").hook_name)

        def grab() -> torch.Tensor:
            with torch.no_grad():
                _, cache = model.run_with_cache(toks, names_filter=lambda n: n == name)
            t = cache[name]
            return t.flatten(-2) if t.ndim == 4 else t

        before = grab()
        with steer(model, sae, feature, alpha):
            after = grab()
    d = sae.W_dec[feature].detach()
    assert (after[:, 1:] - before[:, 1:] - alpha * d).abs().max().item() <= 1e-5
    assert (after[:, 0] - before[:, 0]).abs().max().item() == 0.0  # <bos> is never steered
    assert (toks[:, 0] == 2).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ablate_removes_exactly_one_feature(models: Any, tiny: Any, toks: Any, backend: str) -> None:
    hf = tiny[0]
    sae = saes(tiny[1])["tc"]
    model = models[backend]
    x_in, _ = hf_capture(hf, "gs2_transcoder_in", toks)
    f, _ = f64(sae, x_in)
    f[:, 0] = 0  # <bos> reads no features
    counts = (f > 0).sum(dim=(0, 1))
    active, dead = int(counts.argmax()), int(counts.argmin())
    out0, ref_logits = hf_capture(hf, "mlp_out", toks)
    got: dict[int, torch.Tensor] = {}
    for feature in (active, dead):
        # reference: the HF model's own MLP output minus this feature's float64 contribution
        want = out0.double() - f[..., feature : feature + 1] * sae.W_dec[feature].double()
        _, want_logits = hf_capture(hf, "mlp_out", toks, replace=lambda t, w=want: w.float())
        with ablate(model, sae, feature):
            got[feature] = run(model, toks)
        assert (got[feature] - want_logits).abs().max().item() <= 1e-4, feature
    assert (got[active] - ref_logits).abs().max().item() > 1e-3  # it did something
    if counts[dead] == 0:  # a feature that never fires: ablating it leaves the HF model's logits
        assert (got[dead] - ref_logits).abs().max().item() <= 1e-4


def test_processing_guard(tiny: Any, toks: Any) -> None:
    hf, facts = tiny
    tc, resid = saes(facts)["tc"], saes(facts)["resid"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folded = [to_hooked(hf, FAM, processing=True), to_bridge(hf, compat=True)]
    for m in folded:
        for ctx in (splice(m, tc, use_error_term=True), cache_features(m, tc)):
            with pytest.raises(HookMappingError, match="from_pretrained_no_processing"):
                with ctx:
                    pass
        with cache_features(m, resid) as c:  # residual SAEs are unaffected by fold_ln
            run(m, toks)
        assert c.features.shape[-1] == 48


def test_pt_sae_on_it_model_warns(models: Any, tiny: Any) -> None:
    sae = random_sae("gemma-3-270m-it", "resid_post", L, d_in=tiny[1].d_model)
    for backend in BACKENDS:
        with pytest.warns(ModelMismatchWarning, match="gemma-scope-\\*-pt-"):
            with cache_features(models[backend], sae):
                pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_it_transcoder_zeroes_the_chat_prefix(models: Any, tiny: Any, backend: str) -> None:
    facts = tiny[1]
    sae = random_sae(
        "gemma-3-270m-it", "gs2_transcoder_in", L, d_in=facts.d_model, site_out="transcoder_out", seed=5
    )
    model = models[backend]
    plain = tiny_tokens(batch=1, seq=10, seed=3)
    chat = plain.clone()
    chat[0, :4] = torch.tensor([2, 105, 2364, 107])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelMismatchWarning)
        with pytest.warns(PromptWarning, match="start_of_turn"):
            with splice(model, sae) as st:
                run(model, plain)
        with warnings.catch_warnings():
            warnings.simplefilter("error", PromptWarning)
            out_ref, _ = hf_capture(tiny[0], "mlp_out", chat)
            with splice(model, sae) as st:
                run(model, chat)
    assert (st.features[..., :4, :] == 0).all() and (st.features[..., 4:, :] > 0).any()
    if backend == "hf":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with splice(model, sae):
                got, _ = hf_capture(tiny[0], "mlp_out", chat)
        assert (got[:, :4] - out_ref[:, :4]).abs().max().item() == 0.0  # original activation kept
        assert (got[:, 4:] - out_ref[:, 4:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_gemma2_gs1_transcoder(backend: str) -> None:
    hf, facts = tiny_gemma("gemma2", seed=0)
    toks = tiny_tokens(batch=2, seq=12, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = {"hf": lambda: hf, "ht": lambda: to_hooked(hf, "gemma2"), "bridge": lambda: to_bridge(hf)}[
            backend
        ]()
    sae = random_sae(
        "gemma-2-2b", "gs1_transcoder_in", L, d_in=facts.d_model, site_out="transcoder_out", seed=6
    )
    x, _ = hf_capture(hf, "gs1_transcoder_in", toks)
    x = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + facts.eps)
    f, pre = f64(sae, x)
    f[:, 0] = 0  # <bos>
    ref = run(model, toks)
    with splice(model, sae, use_error_term=True) as st:
        out = run(model, toks)
    assert (out - ref).abs().max().item() <= 1e-5
    safe = (pre - sae.threshold.double()).abs() > 1e-4
    assert ((st.features.double() - f).abs() * safe).max().item() <= 1e-4


@pytest.mark.parametrize("backend", ["hf", "bridge"])
def test_multimodal_language_model_path(backend: str) -> None:
    hf, facts = tiny_gemma("gemma3_multimodal", seed=0)
    toks = tiny_tokens(batch=1, seq=10)
    model = hf if backend == "hf" else to_bridge(hf)
    sae = random_sae("gemma-3-4b-pt", "mlp_out", L, d_in=facts.d_model)
    ref = run(model, toks)
    with splice(model, sae, use_error_term=True) as st:
        out = run(model, toks)
    assert (out - ref).abs().max().item() <= 1e-5 and st.features.shape[-1] == 32
    x, _ = hf_capture(hf, "mlp_out", toks)
    f, pre = f64(sae, x)
    f[:, 0] = 0  # <bos>
    safe = (pre - sae.threshold.double()).abs() > 1e-4
    assert ((st.features.double() - f).abs() * safe).max().item() <= 1e-4


def test_loaded_sae_and_entry(hf_cache: Any, models: Any, tiny: Any, toks: Any) -> None:
    """An SAE written in the real GS2 format and loaded through the normal loader attaches by its metadata."""
    import sae_lens_gemmascope
    from sae_lens_gemmascope import registry
    from sae_lens_gemmascope.offline.synthetic import write_entry

    d = tiny[1].d_model
    e = registry.get("gemma-scope-2-270m-pt-transcoders", "transcoder/layer_5_width_16k_l0_small_affine")
    write_entry(e, hf_cache, d_sae=24, d_in=d, d_out=d)
    sae = sae_lens_gemmascope.load(e.release, e.sae_id, check_shapes=False)
    for backend in BACKENDS:
        ref = run(models[backend], toks)
        for kw in ({}, {"entry": e}):
            with splice(models[backend], sae, use_error_term=True, **kw) as st:
                out = run(models[backend], toks)
            assert (out - ref).abs().max().item() <= 1e-5
            assert st.sites.site_in == "gs2_transcoder_in" and st.sites.is_transcoder


@pytest.mark.parametrize("backend", BACKENDS)
def test_bos_is_left_alone_unless_asked(models: Any, tiny: Any, toks: Any, backend: str) -> None:
    """Gemma Scope was not trained on <bos>: no features there, no write there; skip_bos=False opts in.
    A continuation chunk without <bos> (a KV-cache generation step) is spliced at every position."""
    hf = tiny[0]
    sae = saes(tiny[1])["resid"]
    model = models[backend]
    x, _ = hf_capture(hf, "resid_post", toks)
    f_all, _ = f64(sae, x)
    with cache_features(model, sae) as c:
        run(model, toks)
    assert (c.features[:, 0] == 0).all() and (c.features[:, 1:] > 0).any()
    with cache_features(model, sae, skip_bos=False) as c_all:
        run(model, toks)
    assert ((c_all.features[:, 0].double() - f_all[:, 0]).abs().max().item()) <= 1e-4
    no_bos = toks[:, 1:]
    with cache_features(model, sae) as c2:
        run(model, no_bos)
    assert (c2.features[:, 0] > 0).any()  # position 0 is not <bos> here


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_sae_lands_on_the_dtype_of_the_hooked_module_threshold_stays_fp32(
    tiny: Any, toks: Any, dtype: torch.dtype
) -> None:
    import copy

    hf = copy.deepcopy(tiny[0]).to(dtype)
    sae = saes(tiny[1])["tc"]
    ref = run(hf, toks)
    with splice(hf, sae, use_error_term=True) as st:
        out = run(hf, toks)
    assert sae.W_enc.dtype == dtype and sae.W_skip.dtype == dtype and st.features.dtype == dtype
    assert sae.threshold.dtype == torch.float32  # a bf16 threshold would move the firing boundary
    tol = 1e-8 if dtype == torch.float64 else 0.05 * ref.abs().max().item()
    assert (out.double() - ref.double()).abs().max().item() <= tol
    # the features follow the fp32 threshold on the pre-activations of the hooked dtype
    x_in, _ = hf_capture(hf, "gs2_transcoder_in", toks)
    pre = x_in @ sae.W_enc + sae.b_enc
    want = torch.relu(pre) * (pre.float() > sae.threshold).to(pre.dtype)
    want[:, 0] = 0  # <bos>
    assert torch.equal(st.features, want)
