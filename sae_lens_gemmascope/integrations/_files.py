"""Read pieces of one Gemma Scope weight file: headers, whole tensors, or rows for a list of latents.

One reader for both on-hub formats: Gemma Scope 2 ``params*.safetensors`` (header parsed, then positional
reads into fresh tensors: only the bytes asked for are read, and no memory map outlives a read, so a held
bias never pins its file's pages) and
Gemma Scope 1 ``params.npz`` (an uncompressed zip: a member is read whole, on first use).

:func:`read_rows` is the primitive circuit-tracer's lazy decoders need: rows ``ids`` of ``w_dec``
(optionally from target ``first_target`` on, for a CLT's ``(d_i, n_layers, d_model)`` decoder),
grouped into runs of consecutive ids, one slice read per run.

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
    >>> contiguous_runs([7, 3, 4, 5, 9])
    [(3, 6), (7, 8), (9, 10)]
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CorruptArtifactError

PathLike = str | os.PathLike[str]


def contiguous_runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted unique ``ids`` as half-open runs ``[(start, stop), ...]`` of consecutive integers."""
    u = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
    if u.size == 0:
        return []
    cut = np.flatnonzero(np.diff(u) != 1) + 1
    starts = np.concatenate(([0], cut))
    stops = np.concatenate((cut, [u.size]))
    return [(int(u[a]), int(u[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def check_finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` unchanged, or :class:`CorruptArtifactError` when it holds NaN/inf."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise CorruptArtifactError(
            f"{what} holds {n_bad} NaN/inf value(s): the file is corrupt. Delete it from the Hugging Face "
            "cache and download it again (gemmascope download ... --force)."
        )
    return t


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
}


def _safetensors_header(path: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...], int]]:
    """``{name: (dtype, shape, absolute byte offset)}`` from a safetensors header (sizes checked)."""
    size = path.stat().st_size
    with open(path, "rb", buffering=0) as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n <= 0 or 8 + n > size:
            raise ValueError(f"header length {n} does not fit a file of {size} bytes")
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    out = {}
    for name, rec in header.items():
        if rec["dtype"] not in _ST_DTYPES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {rec['dtype']}")
        dtype = _ST_DTYPES[rec["dtype"]]
        shape = tuple(int(x) for x in rec["shape"])
        a, b = (8 + n + int(o) for o in rec["data_offsets"])
        if b - a != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or b > size:
            raise ValueError(
                f"tensor {name!r} claims bytes {a}..{b} of a {size}-byte file: truncated or corrupt"
            )
        out[name] = (dtype, shape, a)
    return out


def _read_into(fh: Any, buf: torch.Tensor, offset: int) -> None:
    """Fill the contiguous tensor ``buf`` from ``fh`` at byte ``offset`` (positional reads, no mmap)."""
    view = buf.view(torch.uint8).numpy().data.cast("B")
    fh.seek(offset)
    while len(view):
        got = fh.readinto(view)
        if not got:
            raise CorruptArtifactError(f"unexpected end of file at byte {offset}")
        view = view[got:]
        offset += got


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if not member.endswith(".npy"):
                continue
            with z.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(fh)
            out[member.removesuffix(".npy")] = tuple(int(s) for s in shape)
    return out


class TensorFile:
    """A header-only handle on one ``.safetensors`` or ``.npz`` weight file; tensors are read on demand."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.is_npz = self.path.suffix == ".npz"
        try:
            if self.is_npz:
                self._shapes = _npz_shapes(self.path)
            else:
                self._header = _safetensors_header(self.path)
                self._shapes = {k: v[1] for k, v in self._header.items()}
        except Exception as err:  # OSError, BadZipFile, safetensors' SafetensorError ...
            if isinstance(err, CorruptArtifactError):
                raise
            raise CorruptArtifactError(
                f"{self.path} is not a readable weight file ({type(err).__name__}: {err}). Delete it from the "
                "cache and download it again."
            ) from err

    def keys(self) -> list[str]:
        """Tensor names in the file."""
        return list(self._shapes)

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def shape(self, name: str) -> tuple[int, ...]:
        """Stored shape of ``name``."""
        if name not in self._shapes:
            raise CorruptArtifactError(
                f"{self.path} has no tensor {name!r}; it holds {', '.join(self._shapes)}."
            )
        return self._shapes[name]

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor ``name`` (stored dtype, CPU, finite-checked)."""
        self.shape(name)
        t: torch.Tensor
        if self.is_npz:
            with np.load(self.path) as z:
                t = torch.from_numpy(np.ascontiguousarray(z[name]))
        else:
            dtype, shape, start = self._header[name]
            t = torch.empty(shape, dtype=dtype)
            with open(self.path, "rb", buffering=0) as fh:
                _read_into(fh, t, start)
        return check_finite(t, f"{self.path}:{name}")

    def read_rows(self, name: str, ids: Any, first_target: int | None = None) -> torch.Tensor:
        """Rows ``ids`` (any order, repeats allowed) of ``name``, in that order.

        ``first_target`` keeps ``[:, first_target:]`` of a 3-D decoder ``(d_i, n_targets, d_model)``.
        Safetensors files: one read per run of consecutive ids (per row when ``first_target`` > 0);
        npz members are read whole.
        """
        shape = self.shape(name)
        idx = torch.as_tensor(ids).detach().to("cpu", torch.int64).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= shape[0]):
            raise IndexError(
                f"{self.path}:{name} has {shape[0]} rows; asked for ids {int(idx.min())}..{int(idx.max())}."
            )
        if self.is_npz:
            full = self.read(name)
            rows = full[idx]
            return rows[:, int(first_target) :] if first_target is not None else rows
        runs = contiguous_runs(idx.tolist())
        dtype, _, start = self._header[name]
        ft = 0 if first_target is None else int(first_target)
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize  # bytes of one stored row
        keep = (shape[1] - ft, *shape[2:]) if first_target is not None else tuple(shape[1:])
        if not runs:
            return torch.empty((0, *keep), dtype=dtype)
        skip = ft * int(np.prod(shape[2:], dtype=np.int64)) * dtype.itemsize
        block_rows = sum(b - a for a, b in runs)
        out = torch.empty((block_rows, *keep), dtype=dtype)
        with open(self.path, "rb", buffering=0) as fh:
            k = 0
            for a, b in runs:
                if skip == 0:  # rows a..b are one contiguous span
                    _read_into(fh, out[k : k + b - a], start + a * row)
                else:  # row r keeps [ft:, ...]: contiguous within the row
                    for r in range(a, b):
                        _read_into(fh, out[k + r - a], start + r * row + skip)
                k += b - a
        block = check_finite(out, f"{self.path}:{name}")
        if (
            len(runs) == 1
            and runs[0] == (int(idx[0]), int(idx[0]) + idx.numel())
            and bool((idx.diff() == 1).all())
        ):
            return block  # already in the order asked
        uniq = torch.tensor([i for a, b in runs for i in range(a, b)], dtype=torch.int64)
        pos = torch.searchsorted(uniq, idx)
        return block[pos]
