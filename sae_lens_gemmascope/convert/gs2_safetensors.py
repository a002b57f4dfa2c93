"""Locate the tensors of a Gemma Scope 2 ``params.safetensors`` without reading them.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
``data_offsets`` relative to the end of the header), then the raw bytes. Parsing the header here
(instead of ``safetensors.safe_open``) lets the reader copy each byte range straight into its final,
already-converted tensor, and lets a truncated download be named before anything is read.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from safetensors.numpy import save_file
    >>> p = Path(tempfile.mkdtemp()) / "params.safetensors"
    >>> save_file({"w_enc": np.ones((3, 2), np.float32)}, str(p))
    >>> st = locate_safetensors(p)["w_enc"]
    >>> st.shape, str(st.dtype)
    ((3, 2), 'float32')
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import StoredTensor, _corrupt

_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "F16": np.dtype("<f2")}
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """``(header_dict, data_start)`` of a safetensors file; raises CorruptArtifactError if unreadable."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise _corrupt(path, f"only {size} bytes, too short for a safetensors header")
        n = int.from_bytes(raw, "little")
        if n <= 0 or n > _MAX_HEADER or 8 + n > size:
            raise _corrupt(path, f"header length {n} does not fit a {size}-byte file")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(path, f"header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    return header, 8 + n


def locate_safetensors(path: str | Path) -> dict[str, StoredTensor]:
    """Tensor name -> :class:`StoredTensor` (absolute byte offsets)."""
    path = Path(path)
    size = path.stat().st_size
    header, start = read_header(path)
    out: dict[str, StoredTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dt, shape, (b0, b1) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise _corrupt(path, f"header entry {name!r} is malformed") from exc
        if dt not in _DTYPES:
            raise _corrupt(path, f"tensor {name!r} has dtype {dt}; Gemma Scope files are float32")
        dtype = _DTYPES[dt]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if b1 - b0 != nbytes:
            raise _corrupt(path, f"tensor {name!r} spans {b1 - b0} bytes but shape {shape} needs {nbytes}")
        if start + b1 > size:
            raise _corrupt(
                path, f"tensor {name!r} ends at byte {start + b1}, past the end of the {size}-byte file"
            )
        out[name] = StoredTensor(name, path, dtype, shape, offset=start + b0)
    return out


def read_float64(path: str | Path, name: str) -> np.ndarray:
    """One tensor of a safetensors file as a float64 numpy array (small tensors: sparsity data)."""
    header, start = read_header(path)
    if name not in header:
        raise _corrupt(
            Path(path), f"no tensor {name!r} (it has {sorted(k for k in header if k != '__metadata__')})"
        )
    st = locate_safetensors_entry(Path(path), name, header[name], start)
    with open(path, "rb") as fh:
        fh.seek(int(st.offset or 0))
        buf = fh.read(st.nbytes)
    if len(buf) != st.nbytes:
        raise _corrupt(Path(path), f"tensor {name!r} is truncated")
    return np.frombuffer(buf, dtype=st.dtype).reshape(st.shape).astype(np.float64)


def locate_safetensors_entry(path: Path, name: str, info: dict, start: int) -> StoredTensor:
    dt = info.get("dtype")
    if dt not in _DTYPES:
        raise _corrupt(path, f"tensor {name!r} has unsupported dtype {dt}")
    b0, _ = info["data_offsets"]
    return StoredTensor(name, path, _DTYPES[dt], tuple(int(s) for s in info["shape"]), offset=start + b0)
