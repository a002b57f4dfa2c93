"""Open a ``.safetensors`` file through the ``safetensors`` library and locate its tensors.

``safetensors.safe_open`` validates the header (JSON, dtypes, shapes, a shape product that
overflows, overlapping / out-of-range / non-covering ``data_offsets``, truncation) before anything is
read; any failure becomes a :class:`~sae_lens_gemmascope.errors.CorruptArtifactError` that names the
file and the fix. The byte offsets of the validated header are then handed to the copy engine
(:mod:`.stored`), which the library has no equivalent of (it reads through a memory map, which
counts mapped pages and the copy in RSS).

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from safetensors.numpy import save_file
    >>> p = Path(tempfile.mkdtemp()) / "params.safetensors"
    >>> save_file({"w_enc": np.arange(6, dtype=np.float32).reshape(3, 2)}, str(p))
    >>> f = TensorFile(p)
    >>> f.shapes(), f.dtypes()
    ({'w_enc': (3, 2)}, {'w_enc': 'F32'})
    >>> f.read("w_enc", latents=[1], axis=1).tolist()
    [[1.0], [3.0], [5.0]]
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np

from . import stored
from .stored import StoredFile, StoredTensor

#: safetensors dtype tag -> numpy dtype (little-endian), for the tags a weight file may hold.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 1024 * 1024


def check_regular_file(path: Path, what: str = "") -> int:
    """The size of ``path``; refuses directories, FIFOs and devices (a read could block forever)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise stored.corrupt(path, f"it cannot be opened ({err.strerror or err})", what) from err
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe, socket or device)"
        raise stored.corrupt(path, f"it is {kind}", what)
    return st.st_size


class TensorFile(StoredFile):
    """A validated, header-only handle on one safetensors file; tensors are read on request.

    ``what`` names the artifact (``release/sae_id``) in error messages.
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "") -> None:
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        self.what = what
        size = check_regular_file(self.path, what)
        if size < 8:
            raise stored.corrupt(self.path, f"only {size} bytes, too short for a safetensors header", what)
        try:
            with safe_open(str(self.path), framework="numpy"):
                pass
        except (SafetensorError, OSError, ValueError) as err:
            raise stored.corrupt(self.path, f"the safetensors library refused it ({err})", what) from err
        with open(self.path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n > _MAX_HEADER:
                raise stored.corrupt(self.path, f"header of {n} bytes", what)
            header = json.loads(fh.read(n))
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._header: dict[str, dict[str, object]] = header
        self._start = 8 + n

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(int(s) for s in v["shape"]) for k, v in self._header.items()}  # type: ignore[attr-defined]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes()[self._need(name)]

    def dtypes(self) -> dict[str, str]:
        """safetensors dtype tags (``F32``, ``BF16``, ...)."""
        return {k: str(v["dtype"]) for k, v in self._header.items()}

    def _need(self, name: str) -> str:
        if name not in self._header:
            raise stored.corrupt(
                self.path, f"it has no tensor {name!r} (it holds {', '.join(self._header)})", self.what
            )
        return name

    def stored(self, name: str) -> StoredTensor:
        """Where tensor ``name`` lives (refuses dtypes numpy cannot address, e.g. BF16)."""
        rec = self._header[self._need(name)]
        tag = str(rec["dtype"])
        if tag not in NUMPY_DTYPES:
            raise stored.corrupt(
                self.path, f"tensor {name!r} has dtype {tag}, which this reader does not take", self.what
            )
        b0 = int(rec["data_offsets"][0])  # type: ignore[index]
        shape = tuple(int(s) for s in rec["shape"])  # type: ignore[attr-defined]
        return StoredTensor(
            name, self.path, NUMPY_DTYPES[tag], shape, offset=self._start + b0, what=self.what
        )

    def read_numpy(self, name: str, index: slice | None = None) -> np.ndarray:
        """``name`` (or rows ``index`` along axis 0) as a numpy array, through ``safe_open``'s ``get_slice``."""
        from safetensors import safe_open

        self._need(name)
        with safe_open(str(self.path), framework="numpy") as f:
            sl = f.get_slice(name)
            return np.asarray(sl[index] if index is not None else sl[:])
