"""Checks of exercises 1-3: JumpReLU encode/decode, hook names, splicing an SAE.

Part of the exercise checker; see :mod:`tutorials.exercises.checks`.
"""

from __future__ import annotations

import difflib
from types import ModuleType
from typing import Any

import torch

from .context import Context
from .core import (
    DOWNSTREAM,
    HOOK_LAYERS,
    LAYER,
    RES,
    SITES,
    TEXT,
    Mismatch,
    Variant,
    _call,
    _reference_agrees,
    _wrap_hook,
    diff,
    expect,
    jumprelu,
)
from .hints import _SITE_HF_TEXT, _SITE_TO_HF, _identify, _name_hint

# ================================================================================== exercise 1


def _encode_variants(x: torch.Tensor, p: dict[str, torch.Tensor]) -> list[Variant]:
    def pre(xx: torch.Tensor = x) -> torch.Tensor:
        return xx @ p["w_enc"] + p["b_enc"]

    thr = p["threshold"]
    return [
        (
            lambda: torch.relu(pre()) * (pre() >= thr).to(x.dtype),
            "you used `pre >= threshold`; the JumpReLU gate is strict: `pre > threshold` "
            "(a feature exactly at its threshold is off).",
        ),
        (
            lambda: pre() * (pre() > thr).to(x.dtype),
            "you dropped the ReLU: f = relu(pre) * (pre > threshold). It matters where a threshold is "
            "negative: pre between the threshold and 0 must give 0, not a negative activation.",
        ),
        (
            lambda: jumprelu(pre(x - p["b_dec"]), thr),
            "you subtracted b_dec from the input. Gemma Scope 2 does not (apply_b_dec_to_input is False): "
            "pre = x @ w_enc + b_enc.",
        ),
        (
            lambda: torch.relu(pre() - thr),
            "you computed relu(pre - threshold) (a shifted ReLU). JumpReLU keeps the full value above "
            "the threshold: relu(pre) * (pre > threshold).",
        ),
        (lambda: torch.relu(pre()), "you returned relu(pre) without the threshold gate (pre > threshold)."),
        (
            lambda: (pre() > thr).to(x.dtype),
            "you returned the 0/1 gate only; multiply it by relu(pre).",
        ),
        (
            lambda: jumprelu(pre(), torch.exp(thr)),
            "you exponentiated the threshold: GS2 stores the threshold itself, not its log.",
        ),
        (lambda: jumprelu(x @ p["w_enc"], thr), "you left out b_enc: pre = x @ w_enc + b_enc."),
    ]


def _edge_case(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x = 0 (so pre = b_enc exactly) and the real params with some biases and thresholds edited:
    features 0-7 have threshold -1 and b_enc -0.5 (off, by the ReLU), 8-15 have b_enc == threshold
    (off, by the strict gate), 16-23 have b_enc = threshold + 1 (on)."""
    q = dict(p)
    thr, b = p["threshold"].clone(), p["b_enc"].clone()
    thr[:8] = -1.0
    b[:8] = -0.5
    b[8:16] = thr[8:16]
    b[16:24] = thr[16:24] + 1.0
    q["threshold"], q["b_enc"] = thr, b
    return torch.zeros(3, p["w_enc"].shape[0]), q


def check_1(ctx: Context, mod: ModuleType, ref: ModuleType) -> None:
    p = ctx.sae_params
    x = ctx.hf_acts[("resid_post", LAYER)]
    # entries whose pre-activation is within float32 noise of the threshold may flip either way
    pre64 = x.double() @ p["w_enc"].double() + p["b_enc"].double()
    borderline = (pre64 - p["threshold"].double()).abs() < 1e-3 * (1 + pre64.abs())
    want_f = ref.jumprelu_encode(x, p)
    if "1" not in ctx.verified:
        _reference_agrees("SAELens JumpReLUSAE.encode", want_f, ctx.sae.encode(x).detach(), ignore=borderline)
        _reference_agrees(
            "SAELens JumpReLUSAE.decode", ref.jumprelu_decode(want_f, p), ctx.sae.decode(want_f).detach()
        )
        ctx.verified.add("1")
    real = (
        f"case 'real': x = resid_post of layer {LAYER} on {x.shape[1]} tokens "
        f"(Hugging Face layer output, {list(x.shape)}); params = {RES[0]}/{RES[1]} "
        f"(w_enc {list(p['w_enc'].shape)})",
    )
    got_f = _call(mod.jumprelu_encode, x.clone(), dict(p))
    expect(
        "jumprelu_encode(x, params)",
        got_f,
        want_f,
        _encode_variants(x, p),
        context=real,
        ignore=borderline,
    )
    x0, q = _edge_case(p)
    edge = (
        "case 'edge': x = 0 (3 rows), so pre = b_enc exactly; features 0-7: threshold -1, b_enc -0.5; "
        "features 8-15: b_enc == threshold; features 16-23: b_enc = threshold + 1",
    )
    expect(
        "jumprelu_encode(x, params)",
        _call(mod.jumprelu_encode, x0.clone(), dict(q)),
        ref.jumprelu_encode(x0, q),
        _encode_variants(x0, q),
        context=edge,
    )
    want_out = ref.jumprelu_decode(want_f, p)
    expect(
        "jumprelu_decode(f, params)",
        _call(mod.jumprelu_decode, want_f.clone(), dict(p)),
        want_out,
        [
            (lambda: want_f @ p["w_dec"], "you left out b_dec: out = f @ w_dec + b_dec."),
            (
                lambda: want_f @ p["w_dec"] - p["b_dec"],
                "you subtracted b_dec; the decoder adds it: out = f @ w_dec + b_dec.",
            ),
            (
                lambda: want_f @ p["w_dec"] + 2 * p["b_dec"],
                "b_dec is added once (it is not also added to the input of the encoder).",
            ),
        ],
        context=("case 'real': f = the expected features of the real case",),
    )


# ================================================================================== exercise 2


#: ``(site or None, hook template)`` -> why that hook is wrong for the site.
def check_2(ctx: Context, mod: ModuleType, ref: ModuleType) -> None:
    pairs = [(site, L) for L in HOOK_LAYERS for site in SITES]
    names: dict[tuple[str, int], Any] = {pt: _call(mod.hook_name_for, *pt) for pt in pairs}
    ht = ctx.ht
    failures: list[list[str]] = []

    def intro(site: str, L: int, name: Any) -> str:
        return f"site {site!r}, layer {L}: you returned {name!r}"

    valid = sorted({n for n in names.values() if isinstance(n, str) and n in ht.hook_dict})
    captured: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook: Any) -> None:
        captured[hook.name] = act.detach().clone()

    # hook_mlp_in only fires with use_hook_mlp_in; switch it on so that a learner who names it sees its tensor
    before = bool(getattr(ht.cfg, "use_hook_mlp_in", False))
    try:
        if any(n.endswith("hook_mlp_in") for n in valid):
            ht.set_use_hook_mlp_in(True)
        with torch.no_grad():
            ht.run_with_hooks(ctx.tokens(TEXT), fwd_hooks=[(n, grab) for n in valid])
    finally:
        ht.set_use_hook_mlp_in(before)
    for site, L in pairs:
        name = names[(site, L)]
        head = intro(site, L, name)
        if not isinstance(name, str):
            failures.append([head, f"expected a str hook name, got a {type(name).__name__}."])
            continue
        if name not in ht.hook_dict:
            near = difflib.get_close_matches(name, list(ht.hook_dict), n=3)
            failures.append(
                [
                    head,
                    f"{name!r} is not a hook of this HookedTransformer"
                    + (f" (close names: {', '.join(near)})." if near else "."),
                    _name_hint(site, L, name),
                ]
            )
            continue
        if name not in captured:
            failures.append(
                [
                    head,
                    f"the hook {name!r} exists but did not fire in a forward pass.",
                    _name_hint(site, L, name),
                ]
            )
            continue
        act = captured[name]
        if act.ndim == 4:
            act = act.flatten(-2)
        want = ctx.hf_acts[(_SITE_TO_HF[site], L)]
        lines = diff(
            f"tensor at {name} vs {_SITE_HF_TEXT[site].replace('.L.', f'.{L}.')}",
            act,
            want,
            atol_rel=1e-4,
            rtol=1e-3,
        )
        if lines:
            failures.append([head, *lines, _name_hint(site, L, name) or _identify(ctx, act, L)])
    if failures:
        more = f"({len(failures)} of {len(pairs)} site/layer pairs are wrong; this is the first.)"
        raise Mismatch(*failures[0], more)


# ================================================================================== exercise 3


def _expect_downstream(
    ctx: Context, tokens: torch.Tensor, name: str, fn: Any, want: torch.Tensor, case: Any
) -> None:
    """The residual stream a few blocks after the learner's hook must match the solution's."""
    expect(
        f"residual stream after block {DOWNSTREAM - 1} with your hook at {name}",
        ctx.downstream(tokens, [(name, _wrap_hook(fn))]),
        want,
        context=case,
        atol_rel=1e-3,
        rtol=1e-3,
    )


def _grad(out: Any, leaf: torch.Tensor, g: torch.Tensor) -> torch.Tensor | None:
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return None
    (grad,) = torch.autograd.grad((out * g).sum(), leaf, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad


def check_3(ctx: Context, mod: ModuleType, ref: ModuleType) -> None:
    sae, ht = ctx.sae, ctx.ht
    name = sae.cfg.metadata.hook_name
    tokens = ctx.tokens2
    act = ctx.ht_act(name, tokens)
    hook = ht.hook_dict[name]
    g = torch.randn(act.shape, generator=torch.Generator().manual_seed(0))
    recon = sae.decode(sae.encode(act)).detach()
    clean = ctx.memo("clean_downstream_2", lambda: ctx.downstream(tokens))
    for use_error_term in (False, True):
        case = (
            f"case: use_error_term={use_error_term}; sae = {RES[0]}/{RES[1]} at {name}; act = its real "
            f"activation {list(act.shape)} (2 prompts)",
        )
        fn = _call(mod.splice_hook, sae, use_error_term)
        if not callable(fn):
            raise Mismatch(*case, f"splice_hook returned a {type(fn).__name__}, not a hook function.")
        leaf = act.clone().requires_grad_(True)
        got = _call(fn, leaf.clone(), hook)  # a non-leaf, as in a forward pass: in-place edits are allowed
        if got is None:
            raise Mismatch(
                *case,
                "your hook returned None: return the new activation (TransformerLens uses a hook's return value as "
                "the activation from then on).",
            )
        want_fn = ref.splice_hook(sae, use_error_term)
        leaf_r = act.clone().requires_grad_(True)
        want = want_fn(leaf_r.clone(), hook)
        if use_error_term:
            variants: list[Variant] = [
                (
                    lambda: recon,
                    "you left out the error term: with use_error_term=True return recon + error.",
                ),
                (
                    lambda: 2 * recon - act,
                    "the error term has the wrong sign: error = act - recon, so recon + error == act.",
                ),
            ]
        else:
            variants = [
                (
                    lambda: act,
                    "you returned the original activation: with use_error_term=False the hook returns the "
                    "reconstruction only (did you add the error term regardless of the flag?).",
                ),
                (
                    lambda: recon - act,
                    "you returned recon - act (minus the error); return the reconstruction.",
                ),
            ]
        expect("hook output", got, want.detach(), variants, context=case, atol_rel=1e-4)
        got_grad = _grad(got, leaf, g)
        want_grad = _grad(want, leaf_r, g)
        assert want_grad is not None
        if got_grad is None:
            raise Mismatch(
                *case,
                "no gradient flows from your hook's output back to the activation (the output does not "
                "require grad).",
                "hint: do not wrap the SAE in torch.no_grad() or detach the reconstruction: only the error term "
                "is detached, so that gradients reach the features.",
            )
        grad_variants: list[Variant] = [
            (
                lambda: g,
                "the gradient bypasses the SAE (it is the identity): detach the error term, "
                "(act - recon).detach(), so gradients flow through the features only.",
            ),
            (
                lambda wg=want_grad: g + wg,
                "you detached recon inside the error term (act - recon.detach()): detach the whole error "
                "term, (act - recon).detach().",
            ),
            (
                lambda: torch.zeros_like(g),
                "no gradient reaches the activation: is the reconstruction detached?",
            ),
        ]
        expect(
            "gradient of sum(output * g) w.r.t. act (g random)",
            got_grad,
            want_grad,
            grad_variants,
            context=case,
            atol_rel=1e-4,
        )
        want_down = ctx.memo(
            ("splice_downstream", use_error_term), lambda f=want_fn: ctx.downstream(tokens, [(name, f)])
        )
        if f"3-{use_error_term}" not in ctx.verified:
            if use_error_term:
                _reference_agrees("the clean model (error term spliced in)", want_down, clean, atol_rel=1e-4)
            else:
                from sae_lens_gemmascope.attach import splice

                with torch.no_grad(), splice(ht, sae, skip_bos=False):  # the task splices <bos> too
                    _reference_agrees(
                        "attach.splice",
                        want_down,
                        ht(tokens, stop_at_layer=DOWNSTREAM).detach(),
                        atol_rel=1e-4,
                    )
            ctx.verified.add(f"3-{use_error_term}")
        _expect_downstream(ctx, tokens, name, fn, want_down, case)
