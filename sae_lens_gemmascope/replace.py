"""Splice CLTs and crosscoders into TransformerLens models (HookedTransformer or TransformerBridge).

**CLT replacement** (:func:`clt_replacement`): in one forward pass, block ``i`` is encoded at the
Gemma Scope 2 transcoder input ``blocks.i.mlp.hook_in`` (``pre_feedforward_layernorm`` output, so a
HookedTransformer must be loaded *without* ``fold_ln``: ``from_pretrained_no_processing``), and every
covered ``blocks.j.hook_mlp_out`` is replaced by ``decode_to(j, latents of blocks <= j, x_j)``. This works
in a single pass because the MLP input of layer ``i`` is computed before the MLP output of any layer
``j >= i`` is needed. With ``use_error_term=True`` the written value is ``recon + (mlp_out - recon).detach()``,
so the logits are unchanged while gradients flow through the latents.

**Crosscoders** decode acausally (block ``k`` writes to layers before ``layers[k]``), so a single pass
cannot replace ``blocks.L.hook_resid_post``: :func:`crosscoder_encoding` records the latents of the four
residual hooks in one pass (no change to the model), and :func:`run_with_crosscoder` runs two passes
(encode, then write ``x̂_j`` (+ error) at the four hooks).

Untrained positions: Gemma Scope was not trained on ``<bos>``, and Gemma Scope 2 IT models were not
trained on the chat prefix ``<bos><start_of_turn>user\\n``. Their latents are zeroed and the original
activations are kept there: every ``<bos>`` token (``skip_bos=False`` to include it) and, on IT models,
the first ``len(chat_prefix_tokens)`` (= 4) positions of each sequence (``zero_positions`` overrides
the count; PT models have none).

Example (tiny random Gemma 3; see tests/test_replace.py):
    >>> import torch
    >>> from sae_lens_gemmascope.offline.tiny import tiny_gemma, to_hooked, tiny_tokens  # doctest: +SKIP
    >>> hf, facts = tiny_gemma("gemma3_text")  # doctest: +SKIP
    >>> model = to_hooked(hf, "gemma3_text")  # doctest: +SKIP
    >>> with clt_replacement(model, clt, use_error_term=True) as state:  # doctest: +SKIP
    ...     logits = model(tiny_tokens())
    >>> state.features[3].shape  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import HookMappingError
from .hooking import Untrained, backend_of, check_processing, track_tokens
from .hooks import hook_for
from .multilayer import Crosscoder, CrossLayerTranscoder, MultiLayerModule

__all__ = [
    "CLTReplacementState",
    "CrosscoderState",
    "clt_replacement",
    "crosscoder_encoding",
    "run_with_crosscoder",
]


def _tl_backend(model: Any) -> str:
    """``"hooked_transformer"`` or ``"bridge"``: the replacements need a TransformerLens model."""
    backend = backend_of(model)
    if backend == "hf":
        raise HookMappingError(
            f"Expected a TransformerLens HookedTransformer or TransformerBridge, got {type(model).__name__}: "
            "wrap it with HookedTransformer.from_pretrained_no_processing(..., hf_model=model) or "
            "TransformerBridge.boot_transformers(..., hf_model=model)."
        )
    norm = getattr(getattr(model, "cfg", None), "normalization_type", None)
    if norm in ("RMSPre", "LNPre"):
        raise HookMappingError(
            f"This {type(model).__name__} has folded layer norms (normalization_type={norm!r}), so "
            "blocks.L.mlp.hook_in no longer carries the pre-MLP norm gain that Gemma Scope 2 CLTs read. "
            "Load it with HookedTransformer.from_pretrained_no_processing(...) or a TransformerBridge "
            "without compatibility-mode folding."
        )
    return backend


def _model_key(module: MultiLayerModule, model_key: str | None) -> str:
    key = model_key or module.model
    if key is None:
        raise HookMappingError(
            f"This {type(module).__name__} does not know its model; pass model_key= (e.g. 'gemma-3-1b-pt') "
            "so the hooks can be resolved."
        )
    return key


def _input_hook(
    model: Any, key: str, layer: int, backend: str, site: str
) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Hook name and transform that give the GS2 transcoder input at ``layer``.

    A plain HookedTransformer has no ``blocks.L.mlp.hook_in`` (HookedSAETransformer and the Bridge
    do); there the input is read at ``blocks.L.ln2.hook_normalized`` (x / rms(x)) and multiplied by
    the unfolded norm gain ``blocks[L].ln2.w`` (= 1 + HF weight), which is exactly what the MLP receives.
    """
    name = str(hook_for(key, site, layer, backend).hook_name)
    hook_dict = getattr(model, "hook_dict", {})
    if name in hook_dict or backend != "hooked_transformer" or site != "gs2_transcoder_in":
        return name, lambda x: x
    alt = f"blocks.{layer}.ln2.hook_normalized"
    ln2 = getattr(model.blocks[layer], "ln2", None)
    gain = getattr(ln2, "w", None)
    if alt not in hook_dict or gain is None:
        raise HookMappingError(f"{type(model).__name__} has neither {name} nor {alt} with a gain ln2.w.")
    return alt, lambda x: x.to(gain.dtype) * gain


def _n_zero(module: MultiLayerModule, zero_positions: int | None) -> int:
    return len(module.chat_prefix_tokens) if zero_positions is None else int(zero_positions)


@dataclass
class CLTReplacementState:
    """What a :func:`clt_replacement` pass saw and wrote, per block (filled during the forward pass)."""

    inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    features: dict[int, torch.Tensor] = field(default_factory=dict)
    reconstructions: dict[int, torch.Tensor] = field(default_factory=dict)
    originals: dict[int, torch.Tensor] = field(default_factory=dict)
    errors: dict[int, torch.Tensor] = field(default_factory=dict)
    hook_names: dict[str, tuple[str, str]] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget the tensors of the previous forward pass."""
        for d in (self.inputs, self.features, self.reconstructions, self.originals, self.errors):
            d.clear()


@contextlib.contextmanager
def clt_replacement(
    model: Any,
    clt: CrossLayerTranscoder,
    *,
    targets: list[int] | None = None,
    use_error_term: bool = False,
    zero_positions: int | None = None,
    model_key: str | None = None,
    skip_bos: bool = True,
) -> Iterator[CLTReplacementState]:
    """Replace the MLP outputs of ``targets`` (default: every block) by the CLT reconstruction.

    Inside the ``with`` block every forward pass of ``model`` encodes block ``i`` at
    ``blocks.i.mlp.hook_in`` and writes ``decode_to(j, ...)`` at ``blocks.j.hook_mlp_out`` for each
    target ``j``. ``use_error_term=True`` adds ``(mlp_out - recon).detach()`` so the logits are the
    model's own. The yielded state holds the inputs, latents, reconstructions and errors of the last pass.
    """
    backend = _tl_backend(model)
    check_processing(model, (clt.input_site,))  # e.g. a TransformerBridge in compatibility mode
    key = _model_key(clt, model_key)
    tg = list(range(clt.n_blocks)) if targets is None else sorted({int(t) for t in targets})
    sources = sorted({i for j in tg for i in clt.sources_of(j)})
    clt.load(tg)
    untrained = Untrained(model, _n_zero(clt, zero_positions), skip_bos)
    state = CLTReplacementState()

    def encode_hook(
        i: int, transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> Callable[[torch.Tensor, Any], None]:
        def fn(act: torch.Tensor, hook: Any) -> None:
            if i == sources[0]:
                state.clear()
            x = transform(act)
            state.inputs[i] = x
            state.features[i] = untrained.zero(clt.encode(i, x))

        return fn

    def write_hook(j: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            recon = clt.decode_to(j, state.features, state.inputs.get(j)).to(act.device, act.dtype)
            state.reconstructions[j] = recon
            state.originals[j] = act
            if use_error_term:
                err = (act - recon).detach()
                state.errors[j] = err
                out = recon + err
            else:
                out = recon
            return untrained.keep(out, act)

        return fn

    fwd: list[tuple[str, Callable[..., Any]]] = []
    in_names = {}
    for i in sources:
        name, transform = _input_hook(model, key, clt.layers[i], backend, clt.input_site)
        in_names[i] = name
        fwd.append((name, encode_hook(i, transform)))
    for j in tg:
        name = str(hook_for(key, clt.output_site, clt.layers[j], backend).hook_name)
        fwd.append((name, write_hook(j)))
        state.hook_names[str(j)] = (in_names[j], name)
    with model.hooks(fwd_hooks=fwd), track_tokens(model, untrained.see):
        yield state


@dataclass
class CrosscoderState:
    """Latents of a crosscoder's four blocks from one pass, and (after :meth:`reconstruct`) x̂ and errors."""

    crosscoder: Crosscoder
    untrained: Untrained | None = None
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    features: dict[int, torch.Tensor] = field(default_factory=dict)
    reconstructions: dict[int, torch.Tensor] = field(default_factory=dict)
    errors: dict[int, torch.Tensor] = field(default_factory=dict)

    def reconstruct(self) -> dict[int, torch.Tensor]:
        """``x̂_j`` for all four blocks from the recorded latents; also fills :attr:`errors` (x_j - x̂_j)."""
        cc = self.crosscoder
        for j in range(cc.n_blocks):
            x = self.inputs[j]
            r = cc.decode_to(j, self.features).to(x.device, x.dtype)
            if self.untrained is not None:
                r = self.untrained.keep(r, x)
            self.reconstructions[j] = r
            self.errors[j] = (x - r).detach()
        return self.reconstructions


@contextlib.contextmanager
def crosscoder_encoding(
    model: Any,
    crosscoder: Crosscoder,
    *,
    zero_positions: int | None = None,
    model_key: str | None = None,
    skip_bos: bool = True,
) -> Iterator[CrosscoderState]:
    """Record the crosscoder latents at its four ``blocks.L.hook_resid_post`` hooks (model unchanged).

    After the forward pass, ``state.features[k]`` holds block ``k``'s latents and
    ``state.reconstruct()`` gives ``x̂_j`` for every block.
    """
    backend = _tl_backend(model)
    key = _model_key(crosscoder, model_key)
    crosscoder.load()
    untrained = Untrained(model, _n_zero(crosscoder, zero_positions), skip_bos)
    state = CrosscoderState(crosscoder, untrained=untrained)

    def hook(k: int) -> Callable[[torch.Tensor, Any], None]:
        def fn(act: torch.Tensor, hook: Any) -> None:
            state.inputs[k] = act
            state.features[k] = untrained.zero(crosscoder.encode(k, act))

        return fn

    fwd = [
        (str(hook_for(key, crosscoder.input_site, layer, backend).hook_name), hook(k))
        for k, layer in enumerate(crosscoder.layers)
    ]
    with model.hooks(fwd_hooks=fwd), track_tokens(model, untrained.see):
        yield state


def run_with_crosscoder(
    model: Any,
    crosscoder: Crosscoder,
    model_input: Any,
    *,
    use_error_term: bool = True,
    zero_positions: int | None = None,
    model_key: str | None = None,
    skip_bos: bool = True,
    **forward_kwargs: Any,
) -> tuple[Any, CrosscoderState]:
    """Two passes: encode the four layers on a clean run, then write ``x̂_j`` (+ ``error_j``) at each hook.

    Returns ``(output of the second pass, state of the first)``. With ``use_error_term=True`` the
    written values equal the clean activations, so the output equals the clean output; with
    ``False`` each ``blocks.layers[j].hook_resid_post`` is overwritten by the crosscoder's ``x̂_j``.
    """
    with crosscoder_encoding(
        model, crosscoder, zero_positions=zero_positions, model_key=model_key, skip_bos=skip_bos
    ) as st:
        model(model_input, **forward_kwargs)
    st.reconstruct()
    backend = _tl_backend(model)
    key = _model_key(crosscoder, model_key)

    def hook(j: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            r = st.reconstructions[j]
            return r + st.errors[j] if use_error_term else r

        return fn

    fwd = [
        (str(hook_for(key, crosscoder.output_site, layer, backend).hook_name), hook(j))
        for j, layer in enumerate(crosscoder.layers)
    ]
    with model.hooks(fwd_hooks=fwd):
        out = model(model_input, **forward_kwargs)
    return out, st
