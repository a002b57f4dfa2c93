"""Checks of exercises 4-6: steering, transcoder attribution, CLT reconstruction.

Part of the exercise checker; see :mod:`tutorials.exercises.checks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import torch

from .basics import _expect_downstream
from .context import Context
from .core import (
    ATTR_TARGET,
    ATTR_TEXT,
    CLT,
    DOWNSTREAM,
    N_LAYERS,
    RES,
    TRANSCODER,
    Mismatch,
    Variant,
    _call,
    _reference_agrees,
    expect,
    jumprelu,
)

# ================================================================================== exercise 4


def check_4(ctx: Context, mod: ModuleType, ref: ModuleType) -> None:
    sae, ht = ctx.sae, ctx.ht
    name = sae.cfg.metadata.hook_name
    tokens = ctx.tokens2
    act = ctx.ht_act(name, tokens)
    hook = ht.hook_dict[name]
    with torch.no_grad():
        feature = int(sae.encode(act[0, -1]).argmax())
    d = sae.W_dec[feature].detach().clone()
    alpha = 150.0
    for positions in (slice(1, None), slice(2, 5)):
        case = (
            f"case: direction = W_dec[{feature}] of {RES[0]}/{RES[1]} (norm {float(d.norm()):.3g}), "
            f"alpha = {alpha}, positions = {positions}; act = real {name} {list(act.shape)} (2 prompts)",
        )
        fn = _call(mod.steering_hook, d.clone(), alpha, positions)
        if not callable(fn):
            raise Mismatch(*case, f"steering_hook returned a {type(fn).__name__}, not a hook function.")
        got = _call(fn, act.clone(), hook)
        if got is None:
            raise Mismatch(
                *case,
                "your hook returned None: return the steered activation (TransformerLens uses a hook's return "
                "value as the activation from then on).",
            )
        want_fn = ref.steering_hook(d, alpha, positions)
        want = want_fn(act.clone(), hook)

        def with_(fn_edit: Callable[[torch.Tensor], None]) -> Callable[[], torch.Tensor]:
            def make() -> torch.Tensor:
                out = act.clone()
                fn_edit(out)
                return out

            return make

        def at(index: Any, vec: torch.Tensor) -> Callable[[torch.Tensor], None]:
            def edit(out: torch.Tensor) -> None:
                out[index] = out[index] + vec

            return edit

        p = positions
        stop = p.stop
        variants: list[Variant] = [
            (
                with_(at((slice(None), slice(None)), alpha * d)),
                "you steered every position, BOS included: only act[:, positions, :] may change.",
            ),
            (
                with_(at((slice(None), 0), alpha * d)),
                "you steered BOS (position 0) only; steer act[:, positions, :].",
            ),
            (
                with_(at((p,), alpha * d)),
                "you applied the slice to the batch axis (act[positions]); positions index the sequence "
                "axis: act[:, positions, :].",
            ),
            (
                with_(at((slice(None), p), -alpha * d)),
                "wrong sign: add alpha * direction.",
            ),
            (
                with_(at((slice(None), p), alpha * d / d.norm())),
                "you normalised the direction. Gemma Scope 2 decoder rows are not unit norm; add alpha * "
                "direction as given.",
            ),
            (with_(at((slice(None), p), d)), "you added the direction without multiplying it by alpha."),
            (lambda: act, "your hook returned the activation unchanged."),
        ]
        if stop is not None:
            variants.append(
                (
                    with_(at((slice(None), slice(p.start, stop + 1)), alpha * d)),
                    "you steered one position too many: a slice excludes its stop.",
                )
            )
        variants.append(
            (
                with_(at((slice(None), slice(0, stop)), alpha * d)),
                "you also steered BOS (position 0): only the positions of the slice change.",
            )
        )
        expect("hook output", got, want, variants, context=case, atol_rel=1e-5)
        want_down = ctx.memo(
            ("steer_downstream", str(positions)), lambda f=want_fn: ctx.downstream(tokens, [(name, f)])
        )
        if f"4-{positions}" not in ctx.verified:
            from sae_lens_gemmascope.attach import steer

            with torch.no_grad(), steer(ht, sae, feature, alpha, positions=positions, skip_bos=False):
                _reference_agrees(
                    "attach.steer", want_down, ht(tokens, stop_at_layer=DOWNSTREAM).detach(), atol_rel=1e-4
                )
            ctx.verified.add(f"4-{positions}")
        _expect_downstream(ctx, tokens, name, fn, want_down, case)


# ================================================================================== exercise 5


def attribution_variant(
    ctx: Context,
    tokens: torch.Tensor,
    target: int,
    *,
    read: str = "mlp.hook_in",
    error: str = "detached",
    objective: str = "logit",
    times_act: bool = True,
) -> torch.Tensor:
    """Attribution computed one (possibly wrong) way, for hints: ``read`` is the hook encoded,
    ``error`` is ``detached`` / ``none`` / ``attached``, ``objective`` is ``logit`` / ``logprob`` /
    ``all_positions``."""
    tc, ht = ctx.transcoder, ctx.ht
    L = int(tc.cfg.metadata.hook_name.split(".")[1])
    held: dict[str, torch.Tensor] = {}

    def enc(x: torch.Tensor, hook: Any) -> None:
        held["f"] = tc.encode(x).detach().requires_grad_(True)

    def dec(act: torch.Tensor, hook: Any) -> torch.Tensor:
        recon = tc.decode(held["f"])
        if error == "none":
            return recon
        if error == "attached":
            return recon + (act - recon)
        return recon + (act - recon).detach()

    with torch.enable_grad():
        logits = ht.run_with_hooks(
            tokens, fwd_hooks=[(f"blocks.{L}.{read}", enc), (f"blocks.{L}.hook_mlp_out", dec)]
        )
        if objective == "logprob":
            y = logits[0, -1].log_softmax(-1)[target]
        elif objective == "all_positions":
            y = logits[0, :, target].sum()
        else:
            y = logits[0, -1, target]
        (grad,) = torch.autograd.grad(y, held["f"])
    return ((held["f"] * grad) if times_act else grad)[0].detach()


def _left_hooks(ht: Any) -> list[str]:
    return [n for n, hp in ht.hook_dict.items() if hp.fwd_hooks or hp.bwd_hooks]


def check_5(ctx: Context, mod: ModuleType, ref: ModuleType) -> None:
    tc, ht = ctx.transcoder, ctx.ht
    tokens = ctx.tokens(ATTR_TEXT)
    target = int(ctx.tok(ATTR_TARGET, add_special_tokens=False).input_ids[0])
    L = int(tc.cfg.metadata.hook_name.split(".")[1])
    case = (
        f"case: transcoder {TRANSCODER[0]}/{TRANSCODER[1]} (d_sae {tc.cfg.d_sae}) at layer {L}; tokens = "
        f"{ATTR_TEXT!r} ({tokens.shape[1]} tokens); target {ATTR_TARGET!r} (id {target})",
    )
    want = ctx.memo("attr_ref", lambda: ref.transcoder_attribution(ht, tc, tokens, target))
    if "5" not in ctx.verified:
        from sae_lens_gemmascope.attach import splice

        with torch.enable_grad(), splice(ht, tc, use_error_term=True, skip_bos=False) as st:
            logits = ht(tokens)
            (gr,) = torch.autograd.grad(logits[0, -1, target], st.features)
            pkg = (st.features * gr)[0].detach()
        _reference_agrees("attribution through attach.splice", want, pkg, atol_rel=1e-4, rtol=1e-3)
        _reference_agrees("logits with the error term", logits.detach(), ctx.logits(tokens), atol_rel=1e-4)
        ctx.verified.add("5")
    ht.reset_hooks()
    try:
        got = _call(mod.transcoder_attribution, ht, tc, tokens, target)
        left = _left_hooks(ht)
    finally:
        ht.reset_hooks()
        for prm in tc.parameters():
            prm.grad = None
    if left:
        raise Mismatch(
            *case,
            f"your function left hooks on the model ({', '.join(left)}): use model.run_with_hooks(...) or "
            "`with model.hooks(...)` so they are removed.",
        )
    if isinstance(got, torch.Tensor) and got.ndim == 3 and tuple(got.shape[1:]) == tuple(want.shape):
        raise Mismatch(
            *case,
            f"shape {tuple(got.shape)}: drop the batch axis and return [pos, d_sae] = {tuple(want.shape)}.",
        )

    def v(**kw: Any) -> Callable[[], torch.Tensor]:
        return lambda: ctx.memo(
            ("attr_variant", tuple(sorted(kw.items()))),
            lambda: attribution_variant(ctx, tokens, target, **kw),
        )

    variants: list[Variant] = [
        (
            v(error="none"),
            "you spliced the transcoder in WITHOUT the error term, so the model's logits changed; add "
            "(act - recon).detach() at hook_mlp_out.",
        ),
        (
            v(error="attached"),
            "the error term is not detached: recon + (act - recon) cancels the reconstruction in the "
            "gradient. Use (act - recon).detach().",
        ),
        (
            v(times_act=False),
            "you returned the gradient only; attribution is activation x gradient (f * grad).",
        ),
        (
            v(read="hook_resid_mid"),
            "you encoded the pre-norm residual (blocks.L.hook_mlp_in / hook_resid_mid). The GS2 transcoder "
            "reads the pre_feedforward_layernorm OUTPUT: blocks.L.mlp.hook_in.",
        ),
        (
            v(read="ln2.hook_normalized"),
            "you encoded blocks.L.ln2.hook_normalized, which lacks the norm gain (1 + w); GS2 reads "
            "blocks.L.mlp.hook_in.",
        ),
        (
            v(objective="logprob"),
            "you differentiated the log-probability; use the raw logit logits[0, -1, target].",
        ),
        (
            v(objective="all_positions"),
            "you summed the target logit over all positions; use the last position only: logits[0, -1, target].",
        ),
        (lambda: torch.zeros_like(want), "your attribution is all zeros: does the gradient reach f?"),
    ]
    expect("attribution [pos, d_sae]", got, want, variants, context=case, atol_rel=1e-3, rtol=1e-3)


# ================================================================================== exercise 6


def _clt_parts(blocks: Sequence[dict[str, torch.Tensor]], xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [jumprelu(xs[i] @ b["w_enc"] + b["b_enc"], b["threshold"]) for i, b in enumerate(blocks)]


def _clt_variants(
    blocks: Sequence[dict[str, torch.Tensor]], xs: Sequence[torch.Tensor], j: int
) -> list[Variant]:
    fs = _clt_parts(blocks, xs)
    n = len(blocks)
    skip_j = blocks[j].get("affine_skip_connection")

    def skip(kind: str = "j") -> torch.Tensor:
        if skip_j is None or kind == "none":
            return torch.zeros(())
        if kind == "sum":
            return sum(xs[i] @ blocks[i]["affine_skip_connection"] for i in range(j + 1))  # type: ignore[return-value]
        if kind == "first":
            return xs[j] @ blocks[0]["affine_skip_connection"]
        if kind == "T":
            return xs[j] @ skip_j.T
        return xs[j] @ skip_j

    def dec(srcs: Iterable[int], slice_of: Callable[[int], torch.Tensor]) -> torch.Tensor:
        return sum(fs[i] @ slice_of(i) for i in srcs)  # type: ignore[return-value]

    def own(i: int) -> torch.Tensor:
        return blocks[i]["w_dec"][:, j, :]

    upto = range(j + 1)
    bj = blocks[j]["b_dec"]
    out = [
        (
            lambda: dec(upto, lambda i: blocks[i]["w_dec"].sum(1)) + bj + skip(),
            "you summed the decoders over the target axis (w_dec_i.sum(1)): that reconstructs nothing. "
            "Source i writes to target j through its own slice w_dec_i[:, j, :].",
        ),
        (
            lambda: dec([j], own) + bj + skip(),
            "you used only the same-layer decoder (source j). A CLT target j receives writes from every "
            "source i <= j: sum_{i<=j} f_i @ w_dec_i[:, j, :].",
        ),
        (
            lambda: dec(range(j), own) + bj + skip(),
            "off by one: you summed sources i < j. Source j itself also writes to target j (i <= j).",
        ),
        (
            lambda: dec(range(min(j + 2, n)), own) + bj + skip(),
            "off by one: you summed sources i <= j + 1; a CLT is causal, sources i <= j only.",
        ),
        (
            lambda: dec(range(n), own) + bj + skip(),
            "you summed over every source layer; a CLT is causal: only sources i <= j write to target j "
            "(w_dec_i[:, j, :] for i > j is not used).",
        ),
        (
            lambda: dec(upto, lambda i: blocks[i]["w_dec"][:, i, :]) + bj + skip(),
            "you decoded each source to its own layer (w_dec_i[:, i, :]); for target j use w_dec_i[:, j, :].",
        ),
        (
            lambda: dec(upto, own) + sum(blocks[i]["b_dec"] for i in upto) + skip(),
            "you added the bias of every source; b_dec of file i is the output bias of layer i, so add "
            "blocks[j]['b_dec'] once.",
        ),
        (
            lambda: dec(upto, own) + blocks[0]["b_dec"] + skip(),
            "you added layer 0's b_dec; use blocks[j]['b_dec'].",
        ),
        (lambda: dec(upto, own) + skip(), "you left out the bias blocks[j]['b_dec']."),
    ]
    if skip_j is not None:
        out += [
            (
                lambda: dec(upto, own) + bj,
                "you left out the affine skip term: + xs[j] @ blocks[j]['affine_skip_connection'].",
            ),
            (
                lambda: dec(upto, own) + bj + skip("sum"),
                "you added the skip term of every source; the skip connection maps layer j's own input to "
                "its output: xs[j] @ blocks[j]['affine_skip_connection'] only.",
            ),
            (lambda: dec(upto, own) + bj + skip("first"), "you used layer 0's skip matrix; use blocks[j]'s."),
            (
                lambda: dec(upto, own) + bj + skip("T"),
                "you transposed the skip matrix: it is input-major, xs[j] @ affine_skip_connection.",
            ),
        ]
    return out


def _with_skip(
    blocks: Sequence[dict[str, torch.Tensor]], xs: Sequence[torch.Tensor]
) -> list[dict[str, torch.Tensor]]:
    """The CLT blocks with a (seeded, random) ``affine_skip_connection`` per layer, as in ``_affine`` CLTs,
    scaled so that each layer's skip term is as large (RMS) as that layer's output bias."""
    g = torch.Generator().manual_seed(1)
    d = blocks[0]["w_enc"].shape[0]
    out = []
    for b, x in zip(blocks, xs, strict=True):
        s = torch.randn(d, d, generator=g)
        s *= float(b["b_dec"].pow(2).mean().sqrt()) / float((x @ s).pow(2).mean().sqrt())
        out.append(dict(b, affine_skip_connection=s))
    return out


def check_6(ctx: Context, mod: ModuleType, ref: ModuleType) -> None:
    blocks = ctx.clt_blocks
    xs = [ctx.hf_acts[("mlp_in", i)][0] for i in range(N_LAYERS)]
    # tokens where some source has a pre-activation within float32 noise of its threshold: a feature
    # there may flip on or off with the order of summation, so those rows are not compared
    border = torch.zeros(xs[0].shape[0], dtype=torch.bool)
    for b, x in zip(blocks, xs, strict=True):
        pre = x.double() @ b["w_enc"].double() + b["b_enc"].double()
        border |= ((pre - b["threshold"].double()).abs() < 1e-4 * (1 + pre.abs())).any(-1)
    ignore = border[:, None].expand(-1, xs[0].shape[1])
    if "6" not in ctx.verified:
        clt = ctx.clt
        for j in (6, 17):
            feats = {i: clt.encode(i, xs[i]) for i in range(j + 1)}
            _reference_agrees(
                f"CrossLayerTranscoder.decode_to({j})",
                ref.clt_reconstruct(blocks, xs, j),
                clt.decode_to(j, feats).detach(),
                ignore=ignore,
                atol_rel=1e-4,
            )
        ctx.verified.add("6")
    shapes = (
        f"w_enc {list(blocks[0]['w_enc'].shape)}, w_dec {list(blocks[0]['w_dec'].shape)}; xs = {N_LAYERS} x "
        f"{list(xs[0].shape)} (pre_feedforward_layernorm outputs of {xs[0].shape[0]} tokens)"
    )
    cases: list[tuple[str, list[dict[str, torch.Tensor]], int]] = [
        (f"case: target j=6; blocks = the {N_LAYERS} files of {CLT[0]}/{CLT[1]} ({shapes})", blocks, 6),
        (f"case: target j=17 (the last layer); same blocks ({shapes})", blocks, 17),
        (f"case: target j=0; same blocks ({shapes})", blocks, 0),
        (
            "case: target j=6, an _affine CLT (the same blocks, each with an affine_skip_connection "
            "(640, 640) added)",
            _with_skip(blocks, xs),
            6,
        ),
    ]
    for text, bl, j in cases:
        want = ref.clt_reconstruct(bl, xs, j)
        copies = [{k: v.clone() for k, v in b.items()} for b in bl]
        got = _call(mod.clt_reconstruct, copies, [x.clone() for x in xs], j)
        expect(
            f"clt_reconstruct(blocks, xs, {j})",
            got,
            want,
            _clt_variants(bl, xs, j),
            context=(text,),
            ignore=ignore if isinstance(got, torch.Tensor) and got.shape == want.shape else None,
            atol_rel=1e-4,
        )
