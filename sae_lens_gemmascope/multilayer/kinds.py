"""The two multi-layer kinds: :class:`CrossLayerTranscoder` (causal, one block per layer) and
:class:`Crosscoder` (acausal, four residual-stream layers). They differ only in which blocks write to
which (:meth:`sources_of` / :meth:`targets_of`) and in their sites; the maths and loading live in
:class:`~sae_lens_gemmascope.multilayer.module.MultiLayerModule`.
"""

from __future__ import annotations

from typing import ClassVar

from .module import MultiLayerModule


class CrossLayerTranscoder(MultiLayerModule):
    """A Gemma Scope 2 cross-layer transcoder: block ``i`` reads the MLP input of layer ``i`` and writes
    to the MLP outputs of layers ``j >= i`` through ``w_dec_i[:, j, :]``.

    ``decode_to(j, feats, x_j)`` = ``sum_{i<=j} feats[i] @ w_dec_i[:, j, :] + b_dec_j (+ x_j @ skip_j)``.
    Load with :meth:`from_pretrained` (``gemma-scope-2-{270m,1b}-{pt,it}-clt`` releases),
    :meth:`from_files` or :meth:`from_tensors`; see the module docstring for an example.
    """

    kind: ClassVar[str] = "clt"
    input_site: ClassVar[str] = "gs2_transcoder_in"
    output_site: ClassVar[str] = "mlp_out"

    def sources_of(self, target: int) -> range:
        return range(0, int(target) + 1)

    def targets_of(self, source: int) -> range:
        return range(int(source), self.n_blocks)


class Crosscoder(MultiLayerModule):
    """A Gemma Scope 2 crosscoder over 4 residual-stream layers (``blocks.L.hook_resid_post``).

    Block ``k`` (position in :attr:`layers`) encodes layer ``layers[k]``; every block decodes to all
    four: ``decode_to(j, feats) = sum_k feats[k] @ w_dec_k[:, j, :] + b_dec_j``.

    Example:
        >>> import numpy as np, torch
        >>> g = np.random.default_rng(1)
        >>> blocks = [{"w_enc": g.standard_normal((6, 4)), "b_enc": np.zeros(4), "threshold": np.zeros(4),
        ...            "w_dec": g.standard_normal((4, 4, 6)), "b_dec": np.zeros(6)} for _ in range(4)]
        >>> cc = Crosscoder.from_tensors(blocks, layers=(5, 9, 12, 15))
        >>> feats = cc.encode_all([torch.randn(3, 6) for _ in range(4)])
        >>> tuple(cc.decode_to(0, feats).shape), cc.global_latent_id(2, 1)
        ((3, 6), 9)
    """

    kind: ClassVar[str] = "crosscoder"
    input_site: ClassVar[str] = "resid_post"
    output_site: ClassVar[str] = "resid_post"

    def sources_of(self, target: int) -> range:
        return range(self.n_blocks)

    def targets_of(self, source: int) -> range:
        return range(self.n_blocks)
