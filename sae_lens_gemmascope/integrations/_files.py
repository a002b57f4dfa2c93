"""The access pattern circuit-tracer's lazy hooks need, on top of the package's one reading layer.

:class:`TensorFile` wraps :mod:`sae_lens_gemmascope.reading` (GS2 safetensors validated by the
``safetensors`` library, GS1 npz members located without reading them) and adds
:meth:`TensorFile.read_rows`: rows ``ids`` of a decoder in the order asked (repeats allowed),
optionally from target ``first_target`` on for a CLT's ``(d_i, n_layers, d_model)`` decoder. Rows are
read with one positional read per run of consecutive ids, into fresh tensors: no memory map outlives
a read, so a held bias never pins its file's pages.

Example:
    >>> import tempfile, numpy as np
    >>> from safetensors.numpy import save_file
    >>> p = tempfile.mktemp(suffix=".safetensors")
    >>> save_file({"w_dec": np.arange(24, dtype=np.float32).reshape(4, 3, 2)}, p)
    >>> f = TensorFile(p)
    >>> f.shape("w_dec")
    (4, 3, 2)
    >>> f.read_rows("w_dec", [3, 0, 1], first_target=2).tolist()
    [[[22.0, 23.0]], [[4.0, 5.0]], [[10.0, 11.0]]]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..reading import NpzFile
from ..reading import TensorFile as SafetensorsFile

PathLike = str | os.PathLike[str]


class TensorFile:
    """A header-only handle on one ``.safetensors`` or ``.npz`` weight file; tensors are read on demand."""

    def __init__(self, path: PathLike, what: str = "") -> None:
        self.path = Path(path)
        self._f: SafetensorsFile | NpzFile = (
            NpzFile(self.path, what) if self.path.suffix == ".npz" else SafetensorsFile(self.path, what)
        )

    def keys(self) -> list[str]:
        """Tensor names in the file."""
        return self._f.names()

    def __contains__(self, name: object) -> bool:
        return name in self._f

    def shape(self, name: str) -> tuple[int, ...]:
        """Stored shape of ``name``."""
        return self._f.shape(name)

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor ``name`` (stored dtype, CPU, NaN/inf refused)."""
        return self._f.read(name, check=True)

    def read_rows(self, name: str, ids: Any, first_target: int | None = None) -> torch.Tensor:
        """Rows ``ids`` (any order, repeats allowed) of ``name``, in that order, NaN/inf refused;
        ``first_target`` keeps ``[:, first_target:]`` of a 3-D decoder (see ``StoredFile.read_rows``)."""
        return self._f.read_rows(name, ids, first_target=first_target, check=True)
