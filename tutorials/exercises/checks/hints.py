"""The hint catalogue of exercise 2: why a hook name is wrong for a site, and which Hugging Face
module tensor the learner's hook actually returned.

Part of the exercise checker; see :mod:`tutorials.exercises.checks`.
"""

from __future__ import annotations

import re

import torch

from .context import Context
from .core import N_LAYERS, same

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
