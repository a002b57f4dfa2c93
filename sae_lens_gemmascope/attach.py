"""Attach a Gemma Scope SAE or transcoder to a model: splice, cache features, steer, ablate.

Works with SAELens SAE objects (``JumpReLUSAE``, ``JumpReLUTranscoder``, ``JumpReLUSkipTranscoder``,
as returned by ``sae_lens_gemmascope.load``) on three backends: a TransformerLens
``HookedTransformer`` (or ``HookedSAETransformer``), a ``TransformerBridge``, or a plain Hugging Face
Gemma model (torch forward hooks). Every helper is a context manager; hooks are removed on exit.

* :func:`splice` replaces the activation at the SAE's *output* site with its reconstruction
  (transcoders: ``decode(encode(input)) (+ skip)`` written over ``mlp_out``). With
  ``use_error_term=True`` the error ``act - recon`` is added back (detached), so the model output
  is unchanged while gradients flow through the features (attribution).
* :func:`cache_features` records the feature activations of the *input* site (no change to the model).
* :func:`steer` adds ``alpha * W_dec[feature]`` at the output site.
* :func:`ablate` removes one feature's contribution and keeps the error term, so nothing else changes.

The sites come from the registry ``entry=`` when given, else from the SAE's
``cfg.metadata.hook_name`` / ``hook_name_out`` and ``model_name`` (see :mod:`sae_lens_gemmascope.hooks`).
Silent mistakes are refused or flagged:

* a GS2 transcoder / CLT input on a model whose norms were folded (``fold_ln``) raises
  :class:`~sae_lens_gemmascope.errors.HookMappingError` (:func:`check_processing`);
* a PT SAE on an IT model, or the reverse, warns (:func:`check_model_match`);
* Gemma Scope was not trained on ``<bos>``: its features read 0 and the model's own activation is kept
  there (``skip_bos=False`` to include it);
* GS2 transcoders of **IT** models were not trained on the chat prefix ``<bos><start_of_turn>user\\n``
  (ids 2, 105, 2364, 107): their features are zeroed on the first 4 positions and the original
  activation is kept there; a prompt that does not start with the prefix warns.

Example (tiny random model; ``tests/test_attach.py`` has the numbers):
    >>> import torch
    >>> from sae_lens_gemmascope.offline.tiny import tiny_gemma, tiny_tokens
    >>> from sae_lens_gemmascope.attach import splice
    >>> from sae_lens_gemmascope.offline.tiny import random_sae
    >>> hf, facts = tiny_gemma("gemma3_text")
    >>> sae = random_sae("gemma-3-270m", "resid_post", 2, d_in=facts.d_model, d_sae=32)
    >>> toks = tiny_tokens()
    >>> with torch.no_grad():
    ...     ref = hf(toks).logits
    ...     with splice(hf, sae, use_error_term=True) as st:
    ...         out = hf(toks).logits
    >>> bool((out - ref).abs().max() < 1e-5), tuple(st.features.shape)
    (True, (2, 16, 32))
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ._args import check_index
from .errors import FeaturesNotRecordedError, GemmaScopeError, HookMappingError
from .hooking import (
    Fn,
    backend_of,
    bos_token_id,
    check_processing,
    install,
    is_folded,
    record,
    track_tokens,
    untrained_positions,
)
from .hooks import hook_for, site_of_hook
from .models import ModelFacts, get_model

__all__ = [
    "AttachState",
    "FeatureCache",
    "PromptWarning",
    "ModelMismatchWarning",
    "ablate",
    "backend_of",
    "bos_token_id",
    "cache_features",
    "check_model_match",
    "check_processing",
    "is_folded",
    "place",
    "record",
    "resolve_sites",
    "splice",
    "steer",
    "track_tokens",
    "untrained_positions",
]


class ModelMismatchWarning(UserWarning):
    """The SAE was trained on a different model variant (PT vs IT, or another size)."""


class PromptWarning(UserWarning):
    """An IT prompt does not start with the chat prefix the IT transcoders expect."""


def _running_model_name(model: Any) -> str | None:
    backend = backend_of(model)
    if backend == "hf":
        return getattr(model.config, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    cfg = getattr(model, "cfg", None)
    for attr in ("model_name", "tokenizer_name"):
        v = getattr(cfg, attr, None)
        if v:
            return str(v)
    return None


def _facts_or_none(name: str | None) -> ModelFacts | None:
    if not name:
        return None
    try:
        return get_model(name)
    except GemmaScopeError:
        return None


def _generation(family: str) -> str:
    return "Gemma 2" if family == "gemma2" else "Gemma 3"


def check_model_match(model: Any, sae_model: str | None) -> None:
    """Warn (:class:`ModelMismatchWarning`) when ``model`` is not the variant the SAE was trained on.

    A Gemma 2 SAE on a Gemma 3 model (or the reverse) raises :class:`HookMappingError`, even when
    the widths agree.

    ``sae_model`` is the SAE's model (``sae.cfg.metadata.model_name`` or ``entry.model``). A PT SAE
    on an IT model (or the reverse) still runs, but its features mean less; another size fails on
    shapes anyway. Unknown model names are not checked.
    """
    want, have = _facts_or_none(sae_model), _facts_or_none(_running_model_name(model))
    if want is None or have is None:
        return
    if _generation(want.family) != _generation(have.family):
        raise HookMappingError(
            f"This SAE was trained on {want.key} ({_generation(want.family)}) but the model is {have.key} "
            f"({_generation(have.family)}). The hook names and even the widths can match, but the "
            f"activations mean something else, so its features would be noise. Load {want.hf_id} "
            f"(or use a Gemma Scope release made for {have.key}: `gemmascope list --model {have.key}`)."
        )
    if want.variant != have.variant:
        warnings.warn(
            f"This SAE was trained on {want.key} ({want.variant.upper()}) but the model is {have.key} "
            f"({have.variant.upper()}). Gemma Scope ships separate PT and IT releases: use the "
            f"gemma-scope-*-{have.variant}-* release for this model, or load {want.hf_id}.",
            ModelMismatchWarning,
            stacklevel=3,
        )
    elif want.base != have.base:
        warnings.warn(
            f"This SAE was trained on {want.key} but the model is {have.key}.",
            ModelMismatchWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- SAE sites


@dataclass(frozen=True)
class Sites:
    """Where one SAE reads and writes, resolved for a model key."""

    model: str
    site_in: str
    site_out: str
    layer: int | None
    is_transcoder: bool
    zero_prefix: int  # leading positions whose features are zeroed (IT GS2 transcoders)
    chat_prefix: tuple[int, ...]


def _meta(sae: Any, key: str) -> Any:
    md = getattr(getattr(sae, "cfg", None), "metadata", None)
    v = getattr(md, key, None) if md is not None else None
    if v is None and isinstance(md, dict):
        v = md.get(key)
    return v


def resolve_sites(sae: Any, entry: Any = None, model: str | None = None) -> Sites:
    """The input/output sites of ``sae``, from the registry ``entry`` or the SAE's own metadata."""
    is_tc = hasattr(sae, "W_dec") and int(getattr(sae.cfg, "d_out", sae.cfg.d_in)) != int(sae.cfg.d_in)
    is_tc = is_tc or _meta(sae, "hook_name_out") is not None or "Transcoder" in type(sae).__name__
    if entry is not None:
        key = model or entry.model
        facts = get_model(key)
        site_in, site_out, layer = entry.hook_site_in, entry.hook_site_out, entry.layer
        it_tc = entry.generation == 2 and entry.kind in ("transcoder", "skip_transcoder", "clt")
    else:
        key = model or _meta(sae, "model_name")
        if not key:
            raise HookMappingError(
                "Cannot tell which model this SAE belongs to: its cfg.metadata.model_name is empty. "
                "Pass entry=registry.get(release, sae_id) (or model='gemma-3-270m')."
            )
        facts = get_model(key)
        hin = _meta(sae, "hook_name")
        if not hin:
            raise HookMappingError("The SAE has no cfg.metadata.hook_name; pass entry=registry.get(...).")
        site_in, layer = site_of_hook(facts.key, hin)
        hout = _meta(sae, "hook_name_out")
        site_out = site_of_hook(facts.key, hout)[0] if hout else site_in
        if site_in in ("gs2_transcoder_in", "gs1_transcoder_in") and site_out == "mlp_out":
            site_out = "transcoder_out"
        it_tc = site_in == "gs2_transcoder_in"
        is_tc = is_tc or site_in != site_out
    zero = len(facts.chat_prefix_tokens) if (it_tc and facts.variant == "it") else 0
    return Sites(
        facts.key, site_in, site_out, layer, is_tc or site_in != site_out, zero, facts.chat_prefix_tokens
    )


# ----------------------------------------------------------------------------- state


class FeatureCache(dict[str, torch.Tensor]):
    """Feature activations ``[batch, pos, d_sae]`` of the last forward pass, keyed like SAELens'
    ``run_with_cache`` (``<hook_name>.hook_sae_acts_post``); ``.features`` is the single tensor."""

    @property
    def features(self) -> torch.Tensor:
        if not self:
            raise FeaturesNotRecordedError(
                "No forward pass has run inside the context yet: run the model (e.g. model(tokens)) "
                "inside the `with` block, then read the features."
            )
        return next(iter(self.values()))


@dataclass
class AttachState:
    """What an attach context saw in its last forward pass."""

    sites: Sites
    cache: FeatureCache = field(default_factory=FeatureCache)
    error: torch.Tensor | None = None  # act_out - recon (detached), at the output site
    recon: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    bos_token_id: int | None = None
    skip_bos: bool = True
    _warned: bool = False

    @property
    def features(self) -> torch.Tensor:
        return self.cache.features

    def untrained(self, act: torch.Tensor) -> torch.Tensor | None:
        """Mask of the positions of ``act`` this SAE was not trained on (:func:`untrained_positions`):
        ``<bos>`` (unless ``skip_bos=False``) and, for Gemma Scope 2 IT transcoders, the chat prefix."""
        return untrained_positions(
            act,
            self.tokens,
            bos_token_id=self.bos_token_id,
            skip_bos=self.skip_bos,
            prefix_len=self.sites.zero_prefix,
        )

    def _see_tokens(self, ids: torch.Tensor) -> None:
        self.tokens = ids
        self._check_prefix()

    def _check_prefix(self) -> None:
        n = self.sites.zero_prefix
        if not n or self.tokens is None or self._warned:
            return
        want = torch.tensor(self.sites.chat_prefix, device=self.tokens.device)
        t = self.tokens if self.tokens.ndim == 2 else self.tokens[None]
        if t.shape[-1] == 1:  # a generation step after a KV cache: not the start of a prompt
            return
        if t.shape[-1] < n or not bool((t[:, :n] == want).all()):
            self._warned = True
            warnings.warn(
                f"{self.sites.model} is instruction-tuned and Gemma Scope 2 IT transcoders were not trained on "
                f"the first {n} tokens {list(self.sites.chat_prefix)} (<bos><start_of_turn>user\\n); this prompt "
                "does not start with them. Format it with the chat template "
                "(tokenizer.apply_chat_template) so that positions 0-3 are the prefix.",
                PromptWarning,
                stacklevel=4,
            )


# ----------------------------------------------------------------------------- the SAE


def place(sae: Any, like: torch.Tensor) -> None:
    """Move ``sae`` to the device and dtype of the activation ``like`` (the tensor of the module it
    hooks), keeping a JumpReLU threshold in float32: a bf16 threshold would move the firing boundary.

    Called on the first forward pass of every attach context, so an SAE hooked into a model spread
    over several devices (accelerate ``device_map``) lands where its layer lives.
    """
    ref = next((t for t in sae.parameters() if t.dtype.is_floating_point), None)
    if ref is not None and ref.device == like.device and ref.dtype == like.dtype:
        return
    thr = getattr(sae, "threshold", None)
    keep32 = isinstance(thr, torch.Tensor) and thr.dtype == torch.float32
    sae.to(device=like.device, dtype=like.dtype)
    thr = getattr(sae, "threshold", None)
    if keep32 and isinstance(thr, torch.Tensor) and thr.dtype != torch.float32:
        thr.data = thr.data.float()


def _prepare_sae(model: Any, sae: Any) -> Callable[[], None]:
    """Switch off SAELens' own hook_z reshaping (activations are flattened here); return a function
    that restores the reshaping mode."""
    if getattr(sae, "hook_z_reshaping_mode", False):
        sae.turn_off_forward_pass_hook_z_reshaping()
        restore: Callable[[], None] = sae.turn_on_forward_pass_hook_z_reshaping
        return restore
    return lambda: None


def _skip(sae: Any, x_in: torch.Tensor) -> torch.Tensor | None:
    w = getattr(sae, "W_skip", None)
    if w is None:
        return None
    s: torch.Tensor = x_in.to(w.dtype) @ w.T
    return s


def _encode(sae: Any, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    f: torch.Tensor = sae.encode(x)
    if mask is not None:
        f = f.masked_fill(mask[..., None], 0)
    return f


def _keep(new: torch.Tensor, act: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``new`` with the model's own ``act`` at the masked (untrained) positions."""
    return new if mask is None else torch.where(mask[..., None], act, new)


def _recon(sae: Any, feats: torch.Tensor, x_in: torch.Tensor | None) -> torch.Tensor:
    r: torch.Tensor = sae.decode(feats)
    if x_in is not None:
        s = _skip(sae, x_in)
        if s is not None:
            r = r + s
    return r


@contextlib.contextmanager
def _attach(
    model: Any,
    sae: Any,
    entry: Any,
    write: Callable[
        [AttachState, torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor | None
    ]
    | None,
    skip_bos: bool = True,
) -> Iterator[AttachState]:
    """Encode at the input site; at the output site call ``write(state, act_out, feats, x_in)``."""
    sites = resolve_sites(sae, entry)
    check_processing(model, (sites.site_in, sites.site_out))
    check_model_match(model, sites.model)
    state = AttachState(sites, bos_token_id=bos_token_id(model), skip_bos=skip_bos)
    restore = _prepare_sae(model, sae)
    hook_in = hook_for(sites.model, sites.site_in, sites.layer).hook_name or sites.site_in
    key = f"{hook_in}.hook_sae_acts_post"
    held: dict[str, torch.Tensor] = {}

    def on_in(x: torch.Tensor) -> torch.Tensor | None:
        place(sae, x)
        f = _encode(sae, x, state.untrained(x))
        held["x_in"] = x
        held["f"] = f
        state.cache[key] = f
        if write is not None and not sites.is_transcoder:
            return write(state, x, f, x)
        return None

    def on_out(act: torch.Tensor) -> torch.Tensor | None:
        if write is None or held.get("f") is None:
            raise HookMappingError(_NO_INPUT.format(site_in=sites.site_in, site_out=sites.site_out))
        return write(state, act, held.get("f"), held.get("x_in"))

    hooks: list[tuple[str, int | None, Fn]] = [(sites.site_in, sites.layer, on_in)]
    if write is not None and sites.is_transcoder:
        hooks.append((sites.site_out, sites.layer, on_out))
    try:
        with install(model, sites.model, hooks), track_tokens(model, state._see_tokens):
            yield state
    finally:
        restore()


@contextlib.contextmanager
def splice(
    model: Any, sae: Any, *, use_error_term: bool = False, entry: Any = None, skip_bos: bool = True
) -> Iterator[AttachState]:
    """Replace the activation at the SAE's output site with its reconstruction.

    SAEs: ``act -> decode(encode(act))``; transcoders: ``mlp_out -> decode(encode(x_in)) (+ x_in @ W_skip.T)``.
    ``use_error_term=True`` adds ``(act - recon).detach()``: outputs are unchanged, gradients reach the
    features. Positions the SAE was not trained on keep the model's own activation and read zero
    features: ``<bos>`` (``skip_bos=False`` splices it too) and the chat prefix of IT transcoders
    (see :meth:`AttachState.untrained`). Yields an :class:`AttachState` (``.features``, ``.recon``, ``.error``).
    """

    def write(
        state: AttachState, act: torch.Tensor, f: torch.Tensor | None, x_in: torch.Tensor | None
    ) -> torch.Tensor:
        if f is None:
            raise HookMappingError(
                _NO_INPUT.format(site_in=state.sites.site_in, site_out=state.sites.site_out)
            )
        r = _recon(sae, f, x_in if state.sites.is_transcoder else None).to(act.device, act.dtype)
        state.recon = r
        state.error = (act - r).detach()
        out = r + state.error if use_error_term else r
        return _keep(out, act, state.untrained(act))

    with _attach(model, sae, entry, write, skip_bos) as st:
        yield st


@contextlib.contextmanager
def cache_features(
    model: Any, sae: Any, *, entry: Any = None, skip_bos: bool = True
) -> Iterator[FeatureCache]:
    """Record the SAE's feature activations ``[batch, pos, d_sae]`` at its input site (model unchanged).

    Features on untrained positions (``<bos>`` unless ``skip_bos=False``; the IT transcoders' chat
    prefix) are reported as 0.
    """
    with _attach(model, sae, entry, None, skip_bos) as st:
        yield st.cache


_NO_INPUT = (
    "The model ran its {site_out} site without first running the SAE's input site {site_in}, so there "
    "are no features to write. Run the full model (not a part of it) inside the context, or attach "
    "with the model the SAE belongs to."
)


def _direction(sae: Any, feature: int) -> torch.Tensor:
    d_sae = int(sae.W_dec.shape[0])
    i = check_index(feature, d_sae, what="feature", owner=f"this SAE (d_sae={d_sae})")
    d: torch.Tensor = sae.W_dec[i].detach()
    return d


@contextlib.contextmanager
def steer(
    model: Any,
    sae: Any,
    feature: int,
    alpha: float,
    *,
    entry: Any = None,
    positions: Any = None,
    skip_bos: bool = True,
) -> Iterator[AttachState]:
    """Add ``alpha * sae.W_dec[feature]`` to the activation at the SAE's output site.

    ``positions`` (an index or slice over the sequence axis) limits the steered positions; ``<bos>``
    (unless ``skip_bos=False``) and an IT transcoder's chat prefix are never steered. Gemma Scope 2
    decoder rows are not unit norm; Neuronpedia's GS2 steering strengths are in the ~1000s.
    """
    d = _direction(sae, feature)
    pos = slice(None) if positions is None else positions

    def write(
        state: AttachState, act: torch.Tensor, f: torch.Tensor | None, x_in: torch.Tensor | None
    ) -> torch.Tensor:
        out = act.clone()
        out[..., pos, :] = out[..., pos, :] + alpha * d.to(act.device, act.dtype)
        return _keep(out, act, state.untrained(act))

    with _attach(model, sae, entry, write, skip_bos) as st:
        yield st


@contextlib.contextmanager
def ablate(
    model: Any, sae: Any, feature: int, *, entry: Any = None, skip_bos: bool = True
) -> Iterator[AttachState]:
    """Zero one feature and keep the error term: only that feature's contribution
    (``f_i * W_dec[i]``) is removed from the output site; everything else is unchanged (untrained
    positions read zero features, so nothing is removed there)."""
    _direction(sae, feature)

    def write(
        state: AttachState, act: torch.Tensor, f: torch.Tensor | None, x_in: torch.Tensor | None
    ) -> torch.Tensor:
        if f is None:
            raise HookMappingError(
                _NO_INPUT.format(site_in=state.sites.site_in, site_out=state.sites.site_out)
            )
        xi = x_in if state.sites.is_transcoder else None
        full = _recon(sae, f, xi).to(act.device, act.dtype)
        f2 = f.clone()
        f2[..., feature] = 0
        part = _recon(sae, f2, xi).to(act.device, act.dtype)
        state.recon, state.error = part, (act - full).detach()
        return part + state.error

    with _attach(model, sae, entry, write, skip_bos) as st:
        yield st
