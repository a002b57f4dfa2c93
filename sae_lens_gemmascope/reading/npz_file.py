"""Open a Gemma Scope 1 ``params.npz`` and locate its arrays without reading them.

``np.savez`` writes a zip of ``.npy`` members, uncompressed (ZIP_STORED). The zip central directory
gives each member's local-header offset; the local header's name/extra lengths give where the member's
bytes start, and the ``.npy`` header there gives dtype, shape and order. The array data is then a plain
byte range of the file, which the copy engine (:mod:`.stored`) reads straight into the
final tensor. (``np.load(mmap_mode=...)`` ignores npz files; mapping and then copying would count the
mapped pages in RSS too, doubling the peak.) Compressed members (``np.savez_compressed``) fall back
to streaming one member at a time through the zip decompressor. Nothing is unpickled: object arrays
are refused.

Example:
    >>> import io, tempfile, numpy as np
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "params.npz"
    >>> np.savez(p, W_enc=np.ones((3, 2), np.float32), b_enc=np.zeros(2, np.float32))
    >>> f = NpzFile(p)
    >>> f.shapes()["W_enc"], f.dtypes()["W_enc"], f.read("W_enc", latents=[1], axis=1).tolist()
    ((3, 2), 'F32', [[1.0], [1.0], [1.0]])
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import stored
from .safetensors_file import check_regular_file
from .stored import StoredFile, StoredTensor

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, signature PK\x03\x04


def _corrupt(path: Path, what: str) -> Exception:
    return stored.corrupt(path, what)


def _npy_header(fh: BinaryIO, path: Path, member: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=100_000)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=100_000)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise _corrupt(path, f"member {member!r} has no readable .npy header ({exc})") from exc
    if dtype.hasobject:
        raise _corrupt(path, f"member {member!r} holds Python objects (refused: allow_pickle=False)")
    if dtype.byteorder == ">":
        raise _corrupt(path, f"member {member!r} is big-endian, which Gemma Scope never writes")
    return dtype, tuple(int(s) for s in shape), bool(fortran)


def locate_npz(path: str | Path) -> dict[str, StoredTensor]:
    """Array name -> :class:`StoredTensor` (byte offset for stored members, a stream otherwise)."""
    path = Path(path)
    size = check_regular_file(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _corrupt(path, f"not a readable zip/npz archive ({exc})") from exc
    out: dict[str, StoredTensor] = {}
    with zf, open(path, "rb") as fh:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            if info.compress_type == zipfile.ZIP_STORED:
                fh.seek(info.header_offset)
                raw = fh.read(_LOCAL_HEADER.size)
                if len(raw) < _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
                    raise _corrupt(path, f"bad local zip header for member {info.filename!r}")
                fields = _LOCAL_HEADER.unpack(raw)
                start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
                fh.seek(start)
                dtype, shape, fortran = _npy_header(fh, path, name)
                data_start = fh.tell()
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if data_start + nbytes > start + info.file_size or data_start + nbytes > size:
                    raise _corrupt(
                        path,
                        f"member {name!r} needs {nbytes} bytes from offset {data_start}, "
                        f"but the member/file ends earlier (file is {size} bytes)",
                    )
                out[name] = StoredTensor(name, path, dtype, shape, offset=data_start, fortran_order=fortran)
            else:
                member = info.filename
                try:
                    with zf.open(member) as stream:
                        dtype, shape, fortran = _npy_header(stream, path, name)  # type: ignore[arg-type]
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise _corrupt(path, f"member {member!r} cannot be decompressed ({exc})") from exc

                def opener(member: str = member, name: str = name) -> BinaryIO:
                    z = zipfile.ZipFile(path)
                    s = z.open(member)
                    _npy_header(s, path, name)  # type: ignore[arg-type]
                    return _ClosingStream(s, z)  # type: ignore[arg-type,return-value]

                out[name] = StoredTensor(name, path, dtype, shape, open_stream=opener, fortran_order=fortran)
    return out


class _ClosingStream:
    """A member stream that also closes its zip archive."""

    def __init__(self, stream: BinaryIO, archive: zipfile.ZipFile) -> None:
        self._s, self._z = stream, archive

    def readinto(self, b: memoryview) -> int:
        n: int = self._s.readinto(b)  # type: ignore[attr-defined]
        return n

    def close(self) -> None:
        self._s.close()
        self._z.close()


_TAGS = {"<f4": "F32", "<f8": "F64", "<f2": "F16"}


class NpzFile(StoredFile):
    """A header-only handle on a ``params.npz`` with the interface of
    :class:`~sae_lens_gemmascope.reading.safetensors_file.TensorFile`.

    This reader is kept (rather than ``np.load``) because ``np.load`` materialises each member in
    float32 before any cast, so a bfloat16 load peaks at 1.5x the weights, and it cannot memory-map
    npz members; ``bench/bench_load.py`` has the rows.
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "") -> None:
        self.path = Path(path)
        self.what = what
        self._stored = {k: dataclasses.replace(v, what=what) for k, v in locate_npz(self.path).items()}
        self.metadata: dict[str, str] = {}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self._stored.items()}

    def dtypes(self) -> dict[str, str]:
        return {k: _TAGS.get(v.dtype.str, v.dtype.str) for k, v in self._stored.items()}

    def stored(self, name: str) -> StoredTensor:
        if name not in self._stored:
            raise _corrupt(self.path, f"it has no array {name!r} (it holds {', '.join(self._stored)})")
        return self._stored[name]
