"""One CLT / crosscoder block file (``params_layer_{i}.safetensors``), read piecewise.

A thin layer over :class:`sae_lens_gemmascope.reading.TensorFile` (header validated by the
``safetensors`` library) for the one access pattern the multi-layer modules add: the decoder
slices ``w_dec[:, j, :]`` of chosen targets ``j``, scattered by ``preadv`` straight into their own
tensors (:func:`sae_lens_gemmascope.reading.stored.read_middle`): nothing else of the 3-D decoder is
read, and no staging buffer is used.

Example:
    >>> import tempfile, numpy as np
    >>> from safetensors.numpy import save_file
    >>> p = tempfile.mktemp(suffix=".safetensors")
    >>> save_file({"w_dec": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}, p)
    >>> f = LayerFile(p)
    >>> f.shape("w_dec")
    (2, 3, 4)
    >>> f.read_w_dec([1])[1].tolist()
    [[4.0, 5.0, 6.0, 7.0], [16.0, 17.0, 18.0, 19.0]]
    >>> f.read_rows("w_dec", [1, 0])[:, 2, 0].tolist()
    [20.0, 8.0]
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import BlockIndexError, ShapeMismatchError
from ..reading import TensorFile, stored


class LayerFile(TensorFile):
    """A validated, header-only handle on one block file; tensors and slices are read on demand."""

    def keys(self) -> list[str]:
        """Tensor names in the file."""
        return self.names()

    def nbytes(self, name: str) -> int:
        """Stored size of tensor ``name`` in bytes."""
        return self.stored(name).nbytes

    def read_w_dec(self, targets: Iterable[int], name: str = "w_dec") -> dict[int, torch.Tensor]:
        """``{j: w_dec[:, j, :]}`` for each target ``j`` (each contiguous, stored dtype, CPU)."""
        st = self.stored(name)
        if len(st.shape) != 3:
            raise ShapeMismatchError(
                f"{self.path}: {name!r} has shape {st.shape}, expected (d_latents, n_blocks, d_model)."
            )
        d_lat, n_t, d_out = st.shape
        want = sorted({int(t) for t in targets})
        bad = [t for t in want if not 0 <= t < n_t]
        if bad:
            raise BlockIndexError(f"{self.path}: target(s) {bad} outside 0..{n_t - 1}")
        return stored.read_middle(st, want)
