"""Gemma Scope 2 cross-layer transcoders (CLTs) and crosscoders as exact multi-layer modules.

Both are stored as one ``params_layer_{i}.safetensors`` per *block* ``i`` (a CLT has one block per model
layer, a crosscoder four), each holding ``w_enc`` (d_model, d_i), ``b_enc`` (d_i,), ``threshold``
(d_i,), ``w_dec`` (d_i, n_blocks, d_model), ``b_dec`` (d_model,) and, for ``_affine`` CLTs,
``affine_skip_connection`` (d_model, d_model). Block ``i`` encodes the input of its own layer with a
JumpReLU, ``f_i = relu(pre_i) * (pre_i > threshold_i)`` with ``pre_i = x_i @ w_enc_i + b_enc_i``, and
decodes to every target block ``j`` through its own slice ``w_dec_i[:, j, :]``:

* CLT (causal): ``y_j = sum_{i <= j} f_i @ w_dec_i[:, j, :] + b_dec_j (+ x_j @ affine_skip_connection_j)``;
  ``x_i`` is the MLP input of layer ``i`` (``pre_feedforward_layernorm`` output), ``y_j`` its MLP output
  (``post_feedforward_layernorm`` output).
* Crosscoder (acausal, 4 residual-stream layers): ``x̂_j = sum_k f_k @ w_dec_k[:, j, :] + b_dec_j``.

Blocks are addressed by their **position** ``0..n_blocks-1`` (for a CLT that is the model layer; for a
crosscoder it is the index into :attr:`layers`, e.g. block 2 of ``layer_7_13_17_22`` is layer 17).
Latents keep their on-disk order; the global latent id is ``latent_offsets[block] + index``.

Nothing is ever summed over targets (SAELens' ``w_dec.sum(dim=1)`` is not a reconstruction of anything).

Loading is lazy and memory-proportional: the per-layer files are read with positional reads (no mmap),
only the files and decoder slices needed are read, and a whole-model load goes file by file with a
bounded read buffer. Reconstructing CLT target ``k`` touches files ``0..k`` and reads ``w_dec_i[:, k, :]``
only.

Example:
    >>> import numpy as np, torch
    >>> from sae_lens_gemmascope.multilayer import CrossLayerTranscoder
    >>> g = np.random.default_rng(0)
    >>> def block(i, n=3, d=8, w=5):
    ...     return {"w_enc": g.standard_normal((d, w)), "b_enc": np.zeros(w), "threshold": np.full(w, 0.1),
    ...             "w_dec": g.standard_normal((w, n, d)), "b_dec": np.zeros(d)}
    >>> clt = CrossLayerTranscoder.from_tensors([block(i) for i in range(3)])
    >>> x = {i: torch.randn(2, 8) for i in range(3)}
    >>> out = clt(x)
    >>> sorted(out), tuple(out[2].shape), clt.d_sae, clt.latent_offsets
    ([0, 1, 2], (2, 8), 15, (0, 5, 10))
"""

from .files import LayerFile
from .kinds import Crosscoder, CrossLayerTranscoder
from .module import MultiLayerModule
from .pretrained import WrongKindError

__all__ = [
    "CrossLayerTranscoder",
    "Crosscoder",
    "LayerFile",
    "MultiLayerModule",
    "WrongKindError",
    "layer_file_name",
]


def layer_file_name(block: int) -> str:
    """The file name of block ``block`` inside a CLT / crosscoder folder.

    >>> layer_file_name(3)
    'params_layer_3.safetensors'
    """
    return f"params_layer_{int(block)}.safetensors"
