"""A SAELens view of one block of a CLT / crosscoder (a ``MultiLayerModule``): its encoder as a ``JumpReLUSAE``."""

from __future__ import annotations

from typing import Any

import torch

from ..artifacts import Fp32Parameter
from ..errors import GemmaScopeError


def sae_view(self: Any, block: int) -> Any:
    """A SAELens ``JumpReLUSAE`` of ``block``'s **encoder**, for feature activations only.

    ``W_enc``/``b_enc``/``threshold`` are the block's; ``W_dec`` is the same-block decoder slice
    ``w_dec_i[:, i, :]`` and ``b_dec`` that block's bias. Its ``decode``/``forward`` output is **not**
    a reconstruction of the layer (a CLT layer's MLP output also receives writes from every earlier
    layer, and a crosscoder's from all four blocks); use :meth:`decode_to` for that. Decoders are
    never summed over targets.
    """
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    b = self._check_block(block)
    self.load_encoder(b)
    key = f"{b}_{b}"
    if key not in self.W_dec:
        self._put(self.W_dec, key, self._file(b).read_w_dec([b])[b], self._what(b, f"w_dec[:, {b}, :]"))
    if str(b) not in self.b_dec:
        self._put(self.b_dec, str(b), self._file(b).read("b_dec"), self._what(b, "b_dec"))
    from ..hooks import hook_for

    hook_name = None
    if self.model is not None:
        try:
            hook_name = hook_for(self.model, self.input_site, self.layers[b]).hook_name
        except GemmaScopeError:
            hook_name = None
    dtype_name = str(self.dtype).removeprefix("torch.")
    cfg = JumpReLUSAEConfig(
        d_in=self.d_model,
        d_sae=self.block_widths[b],
        dtype=dtype_name,
        device=str(self.device),
        apply_b_dec_to_input=False,
        normalize_activations="none",
    )
    cfg.metadata.hook_name = hook_name
    cfg.metadata.model_name = self.model
    cfg.metadata.note = (
        f"{self.kind} block {b} encoder view: feature activations only; decode() is NOT a reconstruction "
        "of the layer (use the multi-layer module's decode_to)."
    )
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.data = self.W_enc[str(b)].detach().clone()
        sae.b_enc.data = self.b_enc[str(b)].detach().clone()
        sae.threshold = Fp32Parameter(self.threshold[str(b)].detach().clone(), requires_grad=False)
        sae.W_dec.data = self.W_dec[key].detach().clone()
        sae.b_dec.data = self.b_dec[str(b)].detach().clone()
    return sae
