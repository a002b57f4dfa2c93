"""Half an SAE: the encoder alone (to find which features fire) or the decoder alone.

SAELens' classes always hold both halves (``encode`` even reads ``b_dec``), so a 1m-wide Gemma Scope
2 SAE would need its 21 GiB decoder in memory just to find active features. These small modules
hold one half, keep the SAELens config (``.cfg``, with the same hook metadata) and compute exactly
what the SAELens class computes:

* :class:`SAEEncoder` ``.encode(x) = relu(pre) * (pre > threshold)``, ``pre = x @ W_enc + b_enc``,
  the comparison in float32 against the float32 threshold;
* :class:`SAEDecoder` ``.decode(f, x=None) = f @ W_dec + b_dec (+ x @ W_skip.T)``.

Made by :func:`sae_lens_gemmascope.load` with ``parts="encoder"`` / ``parts="decoder"``.

Example:
    >>> import torch
    >>> enc = SAEEncoder(torch.eye(2), torch.zeros(2), torch.tensor([0.5, 0.5]), cfg=None)
    >>> enc.encode(torch.tensor([[1.0, 0.2]]))
    tensor([[1., 0.]])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .artifacts import THRESHOLD_DTYPE, Fp32Parameter
from .errors import InvalidArgumentError


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``relu(pre) * (pre > threshold)`` as SAELens computes it (mask compared in float32)."""
    return torch.relu(pre) * (pre > threshold).to(pre.dtype)


class SAEEncoder(nn.Module):
    """The encoder half of a JumpReLU SAE or transcoder (``W_enc``, ``b_enc``, float32 ``threshold``).

    ``cfg`` is the SAELens config of the artifact (``cfg.d_sae`` = the latents held; with a
    ``latents=`` selection, ``cfg.metadata.gemmascope_latents`` lists their ids in order).
    """

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, threshold: torch.Tensor, cfg: Any) -> None:  # noqa: N803
        super().__init__()
        self.W_enc = nn.Parameter(W_enc, requires_grad=False)
        self.b_enc = nn.Parameter(b_enc, requires_grad=False)
        self.threshold = Fp32Parameter(
            torch.Tensor(threshold.detach()).to(THRESHOLD_DTYPE), requires_grad=False
        )
        self.cfg = cfg

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def latents(self) -> list[int] | None:
        """The latent ids held, in order (None: all of them, in stored order)."""
        md = getattr(self.cfg, "metadata", None)
        return getattr(md, "gemmascope_latents", None) if md is not None else None

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and getattr(self.cfg, "reshape_activations", "none") == "hook_z":
            x = x.flatten(-2)
        return x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` (dense)."""
        return jumprelu(self.pre_activations(x), self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


class SAEDecoder(nn.Module):
    """The decoder half: ``W_dec``, ``b_dec`` and, for skip transcoders, ``W_skip`` (SAELens layout)."""

    def __init__(
        self,
        W_dec: torch.Tensor,  # noqa: N803
        b_dec: torch.Tensor,
        cfg: Any,
        W_skip: torch.Tensor | None = None,  # noqa: N803
    ) -> None:
        super().__init__()
        self.W_dec = nn.Parameter(W_dec, requires_grad=False)
        self.b_dec = nn.Parameter(b_dec, requires_grad=False)
        self.W_skip = None if W_skip is None else nn.Parameter(W_skip, requires_grad=False)
        self.cfg = cfg

    @property
    def d_sae(self) -> int:
        return int(self.W_dec.shape[0])

    def decode(self, feature_acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``f @ W_dec + b_dec``, plus ``x @ W_skip.T`` when the artifact has a skip and ``x`` is given."""
        out = feature_acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise InvalidArgumentError(
                    "This transcoder has an affine skip connection: decode(f, x) needs its input x for the "
                    "x @ W_skip.T term."
                )
            out = out + x.to(self.W_skip.dtype) @ self.W_skip.T
        return out

    def forward(self, feature_acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(feature_acts, x)
