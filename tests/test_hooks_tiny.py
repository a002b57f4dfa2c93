"""Every Gemma Scope site, on every backend, equals the Hugging Face tensor (tiny random Gemma 2 / 3 / 3-MM).

The reference tensors are read straight from the HF modules with torch hooks (module paths written out
here, not taken from ``hooks.py``); the GS1 transcoder input is x / rms(x) of the pre-feed-forward
norm input, computed in float64. The models have random RMSNorm gains, so a gain bug cannot hide.
Run with ``-s`` to print the measured max-abs differences.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from sae_lens_gemmascope.attach import check_processing, is_folded
from sae_lens_gemmascope.errors import HookMappingError
from sae_lens_gemmascope.hooks import SITES, hook_for, site_of_hook
from sae_lens_gemmascope.offline.tiny import FAMILIES, tiny_gemma, tiny_tokens, to_bridge, to_hooked

WRAPPERS = ("ht_noproc", "ht_default", "bridge_raw", "bridge_compat")

# site -> (module under the decoder layer, or "EMBED"; input/output); written out independently of hooks.py
HF_REF: dict[str, tuple[str, str]] = {
    "resid_post": ("", "output"),
    "attn_out": ("self_attn.o_proj", "input"),
    "mlp_out": ("post_feedforward_layernorm", "output"),
    "transcoder_out": ("post_feedforward_layernorm", "output"),
    "clt_out": ("post_feedforward_layernorm", "output"),
    "crosscoder": ("", "output"),
    "gs2_transcoder_in": ("pre_feedforward_layernorm", "output"),
    "clt_in": ("pre_feedforward_layernorm", "output"),
    "gs1_transcoder_in": ("pre_feedforward_layernorm", "input"),  # then x / rms(x) in float64
    "embedding": ("EMBED", "output"),
}
LAYERS_PATH = {
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "gemma3_multimodal": "model.language_model.layers",
}
EMBED_PATH = {
    "gemma2": "model.embed_tokens",
    "gemma3_text": "model.embed_tokens",
    "gemma3_multimodal": "model.language_model.embed_tokens",
}
RESULTS: dict[tuple[str, str, str], float] = {}


def hf_reference(
    hf: Any, family: str, n_layers: int, eps: float, toks: torch.Tensor
) -> dict[Any, torch.Tensor]:
    mods = dict(hf.named_modules())
    out: dict[Any, torch.Tensor] = {}
    handles = []

    def grab(path: str, io: str, key: Any) -> None:
        m = mods[path]
        if io == "output":
            handles.append(
                m.register_forward_hook(
                    lambda mod, a, o: out.__setitem__(
                        key, (o[0] if isinstance(o, tuple) else o).detach().clone()
                    )
                )
            )
        else:
            handles.append(
                m.register_forward_pre_hook(lambda mod, a: out.__setitem__(key, a[0].detach().clone()))
            )

    for site, (sub, io) in HF_REF.items():
        if sub == "EMBED":
            grab(EMBED_PATH[family], io, (site, None))
            continue
        for layer in range(n_layers):
            path = f"{LAYERS_PATH[family]}.{layer}" + (f".{sub}" if sub else "")
            grab(path, io, (site, layer))
    with torch.no_grad():
        out["logits"] = hf(toks).logits
    for h in handles:
        h.remove()
    for layer in range(n_layers):
        x = out[("gs1_transcoder_in", layer)].double()
        out[("gs1_transcoder_in", layer)] = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return out


@pytest.fixture(scope="module", params=FAMILIES)
def family_setup(request: pytest.FixtureRequest) -> dict[str, Any]:
    family = request.param
    hf, facts = tiny_gemma(family, seed=0)
    toks = tiny_tokens(batch=2, seq=16)
    ref = hf_reference(hf, family, facts.n_layers, facts.eps, toks)
    return {"family": family, "hf": hf, "facts": facts, "toks": toks, "ref": ref}


def wrap(setup: dict[str, Any], wrapper: str) -> Any:
    hf, family = setup["hf"], setup["family"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if wrapper.startswith("ht"):
            return to_hooked(hf, family, processing=wrapper == "ht_default")
        return to_bridge(hf, compat=wrapper == "bridge_compat")


def test_hf_column_is_the_module_written_here() -> None:
    for family, key in (
        ("gemma2", "gemma-2-2b"),
        ("gemma3_text", "gemma-3-270m"),
        ("gemma3_multimodal", "gemma-3-4b-it"),
    ):
        for site in SITES:
            sub, io = HF_REF[site]
            spec = hook_for(key, site, 3, backend="hf")
            want = (
                EMBED_PATH[family]
                if sub == "EMBED"
                else f"{LAYERS_PATH[family]}.3" + (f".{sub}" if sub else "")
            )
            assert (spec.hf_module, spec.hf_io) == (want, io), (family, site)
            assert spec.hf_transform == ("rms_normalize_no_gain" if site == "gs1_transcoder_in" else "none")


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_every_site_matches_hf(family_setup: dict[str, Any], wrapper: str) -> None:
    family, facts, toks, ref = (
        family_setup["family"],
        family_setup["facts"],
        family_setup["toks"],
        family_setup["ref"],
    )
    model = wrap(family_setup, wrapper)
    backend = "hooked_transformer" if wrapper.startswith("ht") else "bridge"
    folded = wrapper in ("ht_default", "bridge_compat")
    assert is_folded(model) == folded
    specs = {}
    for site in SITES:
        for layer in [None] if site == "embedding" else range(facts.n_layers):
            specs[(site, layer)] = hook_for(facts.model_key, site, layer, backend=backend)
    names = {s.hook_name for s in specs.values()}
    store: dict[str, torch.Tensor] = {}

    def saver(name: str) -> Any:
        return lambda t, hook: store.__setitem__(name, t.detach().clone())

    fwd = [(n, saver(n)) for n in names if n in model.hook_dict]
    with torch.no_grad():
        model.run_with_hooks(toks, fwd_hooks=fwd)
    for site in SITES:
        worst = 0.0
        for (s, layer), spec in specs.items():
            if s != site:
                continue
            if site in ("gs2_transcoder_in", "clt_in") and folded:
                with pytest.raises(HookMappingError, match="from_pretrained_no_processing"):
                    check_processing(model, site)
                worst = float("nan")
                continue
            assert spec.hook_name in store, f"{wrapper}: {spec.hook_name} did not fire"
            got = store[spec.hook_name]
            if spec.reshape == "hook_z":
                assert got.ndim == 4 and got.shape[-2:] == (facts.n_heads, facts.d_head)
                got = got.flatten(-2)
            want = ref[(site, layer)]
            diff = (got.double() - want.double()).abs().max().item()
            scale = max(1.0, want.abs().max().item())
            assert diff <= 1e-5 * scale, (
                f"{family}/{wrapper}/{site}/L{layer}: {diff:.2e} (|x|max {scale:.1f})"
            )
            worst = max(worst, diff)
        RESULTS[(family, wrapper, site)] = worst
    print(
        f"\n{family:18s} {wrapper:14s} " + " ".join(f"{s}={RESULTS[(family, wrapper, s)]:.1e}" for s in SITES)
    )


def test_site_of_hook_round_trip() -> None:
    for backend in ("hooked_transformer", "bridge"):
        for site in (
            "resid_post",
            "attn_out",
            "mlp_out",
            "gs1_transcoder_in",
            "gs2_transcoder_in",
            "embedding",
        ):
            layer = None if site == "embedding" else 4
            name = hook_for("gemma-3-1b-pt", site, layer, backend=backend).hook_name
            assert site_of_hook("gemma-3-1b-pt", str(name), backend) == (site, layer)
    with pytest.raises(HookMappingError, match="pre-norm residual"):
        site_of_hook("gemma-3-1b-pt", "blocks.3.hook_mlp_in")


def test_hf_backend_every_site_matches_hf(family_setup: dict[str, Any]) -> None:
    """The plain Hugging Face backend of the attach helpers (``attach.record`` / torch hooks from the
    ``hf`` column) reads the same tensors as the independent references, for every site."""
    from sae_lens_gemmascope.attach import record

    facts, toks, ref = family_setup["facts"], family_setup["toks"], family_setup["ref"]
    points = [
        (site, layer)
        for site in SITES
        for layer in ([None] if site == "embedding" else range(facts.n_layers))
    ]
    with torch.no_grad(), record(family_setup["hf"], facts.model_key, points) as got:
        logits = family_setup["hf"](toks).logits
    assert torch.equal(logits, ref["logits"])  # the model is unchanged
    worst: dict[str, float] = {}
    for site, layer in points:
        diff = (got[(site, layer)].double() - ref[(site, layer)].double()).abs().max().item()
        assert diff <= 1e-6 * max(1.0, ref[(site, layer)].abs().max().item()), (site, layer, diff)
        worst[site] = max(worst.get(site, 0.0), diff)
    print(f"\n{family_setup['family']:18s} hf             " + " ".join(f"{s}={worst[s]:.1e}" for s in SITES))


def test_multimodal_bridge_never_installs_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """TransformerLens' boot_transformers pip-installs torchvision when a multimodal processor cannot
    be loaded (always, offline); our wrappers make such a run fail at once instead of installing."""
    import importlib.metadata
    import os
    import subprocess

    calls: list[tuple[list[str], str | None]] = []
    real = subprocess.check_call

    def spy(cmd: Any, *a: Any, **k: Any) -> Any:
        calls.append((list(cmd), os.environ.get("PIP_NO_INDEX")))
        return real(cmd, *a, **k)

    monkeypatch.setattr(subprocess, "check_call", spy)
    before = importlib.metadata.version("torch")
    hf, _ = tiny_gemma("gemma3_multimodal", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to_bridge(hf)
    assert importlib.metadata.version("torch") == before
    assert all(no_index == "1" for _, no_index in calls), calls
