"""Hook plumbing shared by every module that reads or writes Gemma Scope sites in a running model.

One place knows how to reach a site on each backend (TransformerLens ``HookedTransformer``,
``TransformerBridge``, a plain Hugging Face Gemma model) and which positions Gemma Scope was not
trained on. :mod:`~sae_lens_gemmascope.attach`, :mod:`~sae_lens_gemmascope.replace`, extraction and
the circuit-tracer integration build on it:

* :func:`backend_of` - which of the three backends a model is;
* :func:`is_folded` / :func:`check_processing` - refuse sites whose tensor ``fold_ln`` destroyed;
* :func:`install` - put ``(site, layer, fn)`` hooks on a model for the duration of a ``with`` block
  (``fn`` sees the activation flattened to 3-D and may return a replacement);
* :func:`record` - capture the activations at sites during forward passes;
* :func:`track_tokens`, :func:`bos_token_id`, :func:`untrained_positions`, :class:`Untrained` - the
  ``<bos>`` and IT chat-prefix positions of the current pass.

Example:
    >>> import torch
    >>> from sae_lens_gemmascope.offline.tiny import tiny_gemma, tiny_tokens
    >>> hf, facts = tiny_gemma("gemma3_text")
    >>> backend_of(hf)
    'hf'
    >>> with torch.no_grad(), record(hf, facts.model_key, [("resid_post", 2)]) as acts:
    ...     _ = hf(tiny_tokens())
    >>> tuple(acts[("resid_post", 2)].shape)
    (2, 16, 64)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .errors import HookMappingError
from .hooks import GAIN_SITES, HOOK_TABLES, SiteRow, ensure_mlp_hook_in, hook_for
from .models import get_model

__all__ = [
    "Fn",
    "Untrained",
    "backend_of",
    "bos_token_id",
    "check_processing",
    "install",
    "is_folded",
    "record",
    "track_tokens",
    "untrained_positions",
]


def backend_of(model: Any) -> str:
    """``"hooked_transformer"``, ``"bridge"`` or ``"hf"`` (a Hugging Face ``PreTrainedModel``)."""
    from transformer_lens import HookedTransformer

    if isinstance(model, HookedTransformer):
        return "hooked_transformer"
    try:
        from transformer_lens.model_bridge import TransformerBridge

        if isinstance(model, TransformerBridge):
            return "bridge"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        return "hf"
    raise HookMappingError(
        f"Cannot attach to a {type(model).__name__}: expected a TransformerLens HookedTransformer, a "
        "TransformerBridge, or a Hugging Face Gemma model."
    )


def _hf_family(model: Any) -> str:
    name = type(model).__name__
    if name.startswith("Gemma2"):
        return "gemma2"
    if name == "Gemma3ForConditionalGeneration" or name == "Gemma3Model":
        return "gemma3_multimodal"
    if name.startswith("Gemma3"):
        return "gemma3_text"
    raise HookMappingError(f"{name} is not a Gemma 2 / Gemma 3 Hugging Face model.")


def is_folded(model: Any) -> bool:
    """True when the pre-MLP norm gains were folded into the MLP weights (``fold_ln``).

    HookedTransformer: ``cfg.normalization_type`` ``RMSPre`` / ``ln2`` is ``RMSNormPre``.
    TransformerBridge: compatibility mode processed the weights with ``fold_ln`` (the HF norm gains
    are then exactly 0, i.e. a gain of 1, in every layer).
    """
    backend = backend_of(model)
    if backend == "hf":
        return False
    if backend == "hooked_transformer":
        norm = getattr(model.cfg, "normalization_type", None)
        ln2 = type(getattr(model.blocks[0], "ln2", None)).__name__
        return norm in ("RMSPre", "LNPre") or ln2 in ("RMSNormPre", "LayerNormPre")
    processed = bool(getattr(model, "_weights_processed", False))
    fold_req = bool(getattr(getattr(model, "adapter", None), "_fold_ln_requested", False))
    if processed and fold_req:
        return True
    try:
        ws = [b.ln2.original_component.weight for b in model.blocks]
    except AttributeError:
        return False
    return all(bool((w == 0).all()) for w in ws)


def check_processing(model: Any, sites: tuple[str, ...] | list[str] | str) -> None:
    """Raise :class:`HookMappingError` if a site needs the pre-MLP norm gain that ``model`` folded away.

    The GS2 transcoder / CLT input is ``pre_feedforward_layernorm`` output *with* its gain; under
    ``fold_ln`` no hook carries that tensor any more, and encoding the gain-less tensor silently
    gives wrong features.
    """
    sites = (sites,) if isinstance(sites, str) else tuple(sites)
    bad = [s for s in sites if s in GAIN_SITES]
    if bad and is_folded(model):
        raise HookMappingError(
            f"{type(model).__name__} was loaded with folded norms (fold_ln), which removes the tensor the "
            f"{bad[0]} site needs (pre_feedforward_layernorm output including its gain). Reload it with "
            "HookedTransformer.from_pretrained_no_processing(...) (or HookedSAETransformer."
            "from_pretrained_no_processing), or use TransformerBridge.boot_transformers(...) without "
            "enable_compatibility_mode() (or enable_compatibility_mode(no_processing=True))."
        )


Fn = Callable[[torch.Tensor], torch.Tensor | None]


def _row(model: Any, key: str, site: str) -> SiteRow:
    fam = _hf_family(model) if backend_of(model) == "hf" else get_model(key).family
    return HOOK_TABLES[fam][site]  # type: ignore[index]


def _rms_no_gain(x: torch.Tensor, eps: float) -> torch.Tensor:
    x64 = x.double()
    return (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _module(model: Any, path: str) -> torch.nn.Module:
    try:
        mod: torch.nn.Module = model.get_submodule(path)
        return mod
    except AttributeError as e:
        raise HookMappingError(
            f"{type(model).__name__} has no module {path!r}: is this the Gemma family the SAE was trained on?"
        ) from e


@contextlib.contextmanager
def install(model: Any, key: str, hooks: list[tuple[str, int | None, Fn]]) -> Iterator[None]:
    """Install ``(site, layer, fn)`` hooks: ``fn(act)`` sees the activation (flattened to 3-D) and returns
    a replacement (same 3-D shape) or None to leave it unchanged."""
    backend = backend_of(model)
    if backend == "hf":
        handles = []
        eps = float(getattr(model.config.get_text_config(), "rms_norm_eps", 1e-6))
        for site, layer, fn in hooks:
            row = _row(model, key, site)
            mod = _module(model, row.hf_module.replace("{L}", str(layer)))
            if row.hf_transform == "rms_normalize_no_gain":

                def pre(m: Any, args: tuple[Any, ...], _fn: Fn = fn) -> None:
                    _fn(_rms_no_gain(args[0], eps))  # read-only site

                handles.append(mod.register_forward_pre_hook(pre))
            elif row.hf_io == "input":

                def pre2(m: Any, args: tuple[Any, ...], _fn: Fn = fn) -> Any:
                    new = _fn(args[0])
                    return None if new is None else (new, *args[1:])

                handles.append(mod.register_forward_pre_hook(pre2))
            else:

                def post(m: Any, args: Any, out: Any, _fn: Fn = fn) -> Any:
                    t = out[0] if isinstance(out, tuple) else out
                    new = _fn(t)
                    if new is None:
                        return None
                    return (new, *out[1:]) if isinstance(out, tuple) else new

                handles.append(mod.register_forward_hook(post))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
        return
    fwd = []
    for site, layer, fn in hooks:
        spec = hook_for(key, site, layer, backend)
        if spec.extra_hooks:
            ensure_mlp_hook_in(model)
        name = str(spec.hook_name)
        if name not in model.hook_dict:
            raise HookMappingError(
                f"{type(model).__name__} has no hook {name!r} (site {site}, layer {layer})."
            )

        def tl(act: torch.Tensor, hook: Any, _fn: Fn = fn) -> Any:
            shape = act.shape
            flat = act.flatten(-2) if act.ndim == 4 else act
            new = _fn(flat)
            return None if new is None else new.reshape(shape)

        fwd.append((name, tl))
    with model.hooks(fwd_hooks=fwd):
        yield


@contextlib.contextmanager
def record(
    model: Any, model_key: str, points: list[tuple[str, int | None]]
) -> Iterator[dict[tuple[str, int | None], torch.Tensor]]:
    """Record the activations at Gemma Scope sites during the forward passes inside the block.

    ``points`` are ``(site, layer)`` pairs (sites of :data:`sae_lens_gemmascope.hooks.SITES`); the
    yielded dict maps each pair to its detached tensor ``[batch, pos, d]`` of the last pass (attention
    ``hook_z`` flattened to ``n_heads * d_head``). Works on all three backends; the model is unchanged.

    Example:
        >>> import torch
        >>> from sae_lens_gemmascope.offline.tiny import tiny_gemma, tiny_tokens
        >>> hf, facts = tiny_gemma("gemma3_text")
        >>> with torch.no_grad(), record(hf, facts.model_key, [("gs2_transcoder_in", 1)]) as acts:
        ...     _ = hf(tiny_tokens())
        >>> tuple(acts[("gs2_transcoder_in", 1)].shape)
        (2, 16, 64)
    """
    out: dict[tuple[str, int | None], torch.Tensor] = {}

    def grab(point: tuple[str, int | None]) -> Fn:
        def fn(x: torch.Tensor) -> None:
            out[point] = x.detach()

        return fn

    with install(model, model_key, [(s, layer, grab((s, layer))) for s, layer in points]):
        yield out


def _embedding_module(model: Any) -> torch.nn.Module | None:
    backend = backend_of(model)
    emb: torch.nn.Module | None
    if backend == "hooked_transformer":
        emb = model.embed
    elif backend == "bridge":
        emb = getattr(model, "embed", None)
    else:
        emb = model.get_input_embeddings()
    return emb


@contextlib.contextmanager
def track_tokens(model: Any, on_tokens: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Call ``on_tokens(ids)`` with the token ids of every forward pass (a pre-hook on the embedding),
    before any other hook of that pass fires. Passes given embeddings instead of ids are not seen."""
    emb = _embedding_module(model)
    if emb is None:
        yield
        return

    def pre(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = args[0] if args else kwargs.get("input_ids", kwargs.get("input"))
        if isinstance(ids, torch.Tensor) and not ids.is_floating_point():
            on_tokens(ids if ids.ndim == 2 else ids[None])

    h = emb.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        h.remove()


def untrained_positions(
    act: torch.Tensor,
    tokens: torch.Tensor | None,
    *,
    bos_token_id: int | None,
    skip_bos: bool = True,
    prefix_len: int = 0,
) -> torch.Tensor | None:
    """``[batch, pos]`` mask of the positions of ``act`` ``[batch, pos, d]`` that Gemma Scope was not
    trained on, or None when there are none.

    ``<bos>`` tokens (if ``skip_bos``), and the first ``prefix_len`` positions (the chat prefix of IT
    transcoders) of every sequence that starts with ``<bos>``. ``tokens`` are the ids of the pass
    (:func:`track_tokens`); without them only the prefix rule applies, to the first positions.
    A one-token KV-cache generation step (no ``<bos>``) has none.

    >>> import torch
    >>> act = torch.zeros(1, 6, 3)
    >>> untrained_positions(act, torch.tensor([[2, 105, 2364, 107, 9, 9]]), bos_token_id=2, prefix_len=4)
    tensor([[ True,  True,  True,  True, False, False]])
    >>> untrained_positions(act[:, :1], torch.tensor([[9]]), bos_token_id=2, prefix_len=4) is None
    True
    """
    if act.ndim != 3:
        return None
    b, p = act.shape[0], act.shape[1]
    t = tokens if tokens is not None and tuple(tokens.shape) == (b, p) else None
    mask = torch.zeros(b, p, dtype=torch.bool, device=act.device)
    if t is not None and skip_bos and bos_token_id is not None:
        mask |= t.to(act.device) == bos_token_id
    if prefix_len:
        if t is None:
            mask[:, :prefix_len] = True
        elif bos_token_id is not None:
            starts = (t[:, 0] == bos_token_id).to(act.device)
            mask[:, :prefix_len] |= starts[:, None]
    return mask if bool(mask.any()) else None


def bos_token_id(model: Any) -> int | None:
    """The ``<bos>`` id of the model's tokenizer / config (Gemma: 2), or None if it has none."""
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None)
    if bos is None and hasattr(model, "config"):
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        bos = getattr(cfg, "bos_token_id", None) or getattr(model.config, "bos_token_id", None)
    return int(bos) if bos is not None else None


class Untrained:
    """The positions of the current pass Gemma Scope was not trained on: every ``<bos>`` token (unless
    ``skip_bos=False``) and the first ``prefix_len`` positions (the chat prefix of IT models) of each
    sequence that starts with ``<bos>``. Feed it the pass's token ids with :func:`track_tokens`
    (``with track_tokens(model, u.see)``)."""

    def __init__(self, model: Any, prefix_len: int, skip_bos: bool = True) -> None:
        self.bos = bos_token_id(model)
        self.prefix_len, self.skip_bos = int(prefix_len), skip_bos
        self.tokens: torch.Tensor | None = None

    def see(self, ids: torch.Tensor) -> None:
        self.tokens = ids

    def mask(self, act: torch.Tensor) -> torch.Tensor | None:
        return untrained_positions(
            act, self.tokens, bos_token_id=self.bos, skip_bos=self.skip_bos, prefix_len=self.prefix_len
        )

    def zero(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` with zeros at the untrained positions (features there read 0)."""
        m = self.mask(t)
        return t if m is None else t.masked_fill(m[..., None], 0)

    def keep(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """``new`` with the model's own ``old`` activation at the untrained positions."""
        m = self.mask(new)
        return new if m is None else torch.where(m[..., None], old, new)
