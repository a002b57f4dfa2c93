"""What a feature writes, read through the unembedding: the logit columns of ``examples.safetensors``.

For feature ``f`` of an SAE whose decoder writes ``W_dec[f]`` at its output site, the **direct logit
direction** is

    ``logit_dir[f] = (r[f] * g_final) @ W_U.T``   (a ``vocab``-long vector)

* ``r[f]`` is ``W_dec[f]`` moved into the residual stream: as is for sites that are added to it
  (``resid_post``, ``mlp_out`` / transcoder output, i.e. the post-feed-forward-norm output,
  ``embedding``); for ``attn_out`` (the ``o_proj`` input) ``o_proj(W_dec[f])`` times the gain of the
  post-attention norm.
* ``g_final`` is the gain of the final RMSNorm, measured by the module itself on unit-RMS basis
  vectors (Gemma's ``1 + weight``). The RMS scale of a real activation is not known here and is taken
  as 1, and Gemma 2's final logit soft-capping is left out: this is the linear, per-unit-activation
  effect, as in ``W_dec @ W_U`` with the norm gains folded in.
* ``W_U`` is the model's output embedding (tied to the input embedding in Gemma).

``top_tokens`` / ``top_logits`` are the 10 largest entries of ``logit_dir[f]`` (descending),
``bottom_tokens`` / ``bottom_logits`` the 10 smallest (ascending). ``logit_effects[f, r]`` of example
``r`` at ``(seq, pos)`` is ``activation * logit_dir[f][tokens[seq, pos + 1]]``: the direct effect of
that activation on the logit of the token that came next; 0 at a document's last token (no next token).

Example:
    >>> import torch
    >>> from sae_lens_gemmascope.extract.logits import norm_gain
    >>> norm = torch.nn.RMSNorm(4, eps=0.0)
    >>> with torch.no_grad():
    ...     _ = norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    >>> norm_gain(norm, 4).tolist()
    [1.0, 2.0, 3.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..models import get_model

N_LOGITS = 10
#: Floats per ``[features, vocab]`` logits chunk (128 features of a 262k vocabulary).
CHUNK_FLOATS = 1 << 25


def norm_gain(norm: torch.nn.Module, d: int) -> torch.Tensor:
    """The per-dimension gain of an RMSNorm-like module: its output on ``sqrt(d) * e_i`` (RMS 1) / sqrt(d)."""
    p = next(norm.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    x = torch.eye(d, dtype=dtype, device=p.device if p is not None else "cpu") * d**0.5
    with torch.no_grad():
        y = norm(x)
    g: torch.Tensor = (torch.diagonal(y) / d**0.5).float()
    return g


def _decoder(hf: Any, model_key: str) -> Any:
    path = get_model(model_key).hf_layers_path.rsplit(".", 1)[0]
    return hf.get_submodule(path)


def residual_directions(
    hf: Any, model_key: str, site_out: str, layer: int | None, w: torch.Tensor
) -> torch.Tensor:
    """``W_dec`` rows ``w`` ``[n, d_out]`` as residual-stream vectors ``[n, d_model]`` (see the module)."""
    if site_out != "attn_out":
        return w
    blk = _decoder(hf, model_key).layers[layer]
    o = blk.self_attn.o_proj
    with torch.no_grad():
        r: torch.Tensor = o(w.to(o.weight.dtype)).float()
    return r * norm_gain(blk.post_attention_layernorm, r.shape[-1])


def logit_chunks(
    hf: Any, model_key: str, site_out: str, layer: int | None, w_dec: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first feature, logit_dir [chunk, vocab])`` over all rows of ``w_dec``, in float32."""
    dec = _decoder(hf, model_key)
    w_u = hf.get_output_embeddings().weight
    gain = norm_gain(dec.norm, w_u.shape[1]).to(w_u.device)
    chunk = max(1, CHUNK_FLOATS // w_u.shape[0])
    with torch.no_grad():
        for a in range(0, w_dec.shape[0], chunk):
            r = residual_directions(
                hf, model_key, site_out, layer, w_dec[a : a + chunk].to(w_u.device).float()
            )
            yield a, (r * gain) @ w_u.float().T
