"""Reference solutions of the Gemma Scope 2 exercises (see ``exercises.py`` for the tasks).

Written plainly with torch and the SAELens ``encode`` / ``decode`` methods; none of the package's
``attach`` / ``multilayer`` helpers is used for the thing being taught. ``checks/`` runs your
functions and these on the same real inputs and explains the first difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

HookFn = Callable[[torch.Tensor, Any], torch.Tensor]


# --------------------------------------------------------------------------------------- exercise 1


def jumprelu_encode(x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """GS2 JumpReLU features: ``relu(pre) * (pre > threshold)`` with ``pre = x @ w_enc + b_enc``."""
    pre = x @ params["w_enc"] + params["b_enc"]
    return torch.relu(pre) * (pre > params["threshold"]).to(pre.dtype)


def jumprelu_decode(f: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """GS2 reconstruction ``f @ w_dec + b_dec``."""
    return f @ params["w_dec"] + params["b_dec"]


# --------------------------------------------------------------------------------------- exercise 2

_SITE_HOOKS = {
    "resid_post": "blocks.{L}.hook_resid_post",
    "mlp_out": "blocks.{L}.hook_mlp_out",
    "attn_out": "blocks.{L}.attn.hook_z",
    "transcoder_in": "blocks.{L}.mlp.hook_in",
    "transcoder_out": "blocks.{L}.hook_mlp_out",
}


def hook_name_for(site: str, layer: int) -> str:
    """The HookedTransformer hook of a Gemma Scope 2 site on Gemma 3 270M."""
    return _SITE_HOOKS[site].format(L=layer)


# --------------------------------------------------------------------------------------- exercise 3


def splice_hook(sae: Any, use_error_term: bool = False) -> HookFn:
    """A hook replacing the activation by ``sae.decode(sae.encode(act))`` (+ the detached error)."""

    def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
        recon = sae.decode(sae.encode(act)).to(act.dtype)
        if use_error_term:
            return recon + (act - recon).detach()
        return recon

    return hook_fn


# --------------------------------------------------------------------------------------- exercise 4


def steering_hook(direction: torch.Tensor, alpha: float, positions: slice) -> HookFn:
    """A hook adding ``alpha * direction`` at ``act[:, positions, :]`` only."""

    def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = act.clone()
        out[:, positions, :] = out[:, positions, :] + alpha * direction.to(act.dtype)
        return out

    return hook_fn


# --------------------------------------------------------------------------------------- exercise 5


def transcoder_attribution(
    model: Any, transcoder: Any, tokens: torch.Tensor, target_token: int
) -> torch.Tensor:
    """Activation x gradient of ``logits[0, -1, target_token]`` for every feature at every position."""
    layer = int(transcoder.cfg.metadata.hook_name.split(".")[1])
    held: dict[str, torch.Tensor] = {}

    def encode_hook(x: torch.Tensor, hook: Any) -> None:
        # A leaf of its own: the gradient w.r.t. f is the same, since everything downstream of the
        # MLP input reaches the logits only through f (the error term below is detached).
        held["f"] = transcoder.encode(x).detach().requires_grad_(True)

    def decode_hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        recon = transcoder.decode(held["f"]).to(act.dtype)
        return recon + (act - recon).detach()

    with torch.enable_grad():
        logits = model.run_with_hooks(
            tokens,
            fwd_hooks=[
                (f"blocks.{layer}.mlp.hook_in", encode_hook),
                (f"blocks.{layer}.hook_mlp_out", decode_hook),
            ],
        )
        (grad,) = torch.autograd.grad(logits[0, -1, target_token], held["f"])
    return (held["f"] * grad)[0].detach()


# --------------------------------------------------------------------------------------- exercise 6


def clt_reconstruct(
    blocks: Sequence[Mapping[str, torch.Tensor]], xs: Sequence[torch.Tensor], j: int
) -> torch.Tensor:
    """CLT reconstruction of layer ``j``: ``sum_{i<=j} f_i @ w_dec_i[:, j, :] + b_dec_j (+ x_j @ skip_j)``."""
    out = blocks[j]["b_dec"].expand(xs[j].shape[0], -1).clone()
    for i in range(j + 1):
        b = blocks[i]
        pre = xs[i] @ b["w_enc"] + b["b_enc"]
        f = torch.relu(pre) * (pre > b["threshold"]).to(pre.dtype)
        out = out + f @ b["w_dec"][:, j, :]
    skip = blocks[j].get("affine_skip_connection")
    if skip is not None:
        out = out + xs[j] @ skip
    return out
