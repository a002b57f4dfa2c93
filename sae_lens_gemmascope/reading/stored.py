"""Copy byte ranges of a weight file straight into their final tensors: the one copy engine.

A :class:`StoredTensor` says where one tensor's raw little-endian bytes live (file and offset, or a
stream for compressed npz members) and what they are (dtype, shape, C or Fortran order). The
functions here read them:

* :func:`read` - the whole tensor, or the latents ``latents`` along one axis, into a new CPU tensor
  of the requested dtype. Same-dtype reads go straight into the destination with ``os.preadv`` from
  several threads (the kernel copies from the page cache into the final buffer: peak RSS = the
  tensor, no staging copy, no memory map). Reads that convert dtype go through a bounded buffer.
* :func:`memory_map` - a zero-copy, copy-on-write view of a stored tensor (``np.memmap`` mode
  ``"c"``): memory grows only with the pages touched, and writes never reach the cached file.

Why not ``safetensors.torch.load_file`` + ``.to(dtype)``: it memory-maps the file and the cast makes
a second full copy (2x the weights at peak), and a plain ``.clone()`` of a mapped tensor counts the
mapped pages *and* the copy in RSS. ``bench/bench_load.py`` measures both against this engine.

Example:
    >>> import numpy as np, tempfile, torch
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "x.bin"
    >>> np.arange(12, dtype="<f4").tofile(p)
    >>> st = StoredTensor("x", p, np.dtype("<f4"), (3, 4), offset=0)
    >>> read(st, latents=[2, 0], axis=1).tolist()
    [[2.0, 0.0], [6.0, 4.0], [10.0, 8.0]]
    >>> read(st, dtype=torch.bfloat16, latents=slice(1, 3), axis=0).dtype
    torch.bfloat16
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import CorruptArtifactError, LatentIndexError

#: Bytes per read call / conversion chunk: negligible next to the weights, large enough to be fast.
CHUNK_BYTES = 32 * 1024 * 1024
#: Threads issuing reads in parallel (the copy from the page cache is memory-bound, not GIL-bound).
READ_THREADS = max(1, min(4, os.cpu_count() or 1))

Latents = slice | Sequence[int] | None


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's raw little-endian bytes live.

    ``offset`` into ``path`` for uncompressed files, or ``open_stream`` (a callable returning a stream
    positioned at the first data byte) for compressed npz members. ``fortran_order`` marks column-major
    npy members; ``what`` names the artifact in error messages.
    """

    name: str
    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int | None = None
    open_stream: Callable[[], BinaryIO] | None = None
    fortran_order: bool = False
    what: str = ""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"tensor {self.name!r} of {self.path}" + (f" ({self.what})" if self.what else "")


def corrupt(path: Path | str, what: str, artifact: str = "") -> CorruptArtifactError:
    """The error for an unreadable / inconsistent file, with the fix."""
    who = f" ({artifact})" if artifact else ""
    return CorruptArtifactError(
        f"{path}{who} looks truncated or corrupt: {what}. Delete it from the cache and download it again "
        "(sae_lens_gemmascope.load(..., force_download=True) or `gemmascope download RELEASE SAE_ID "
        "--force-download`)."
    )


def refuse_nonfinite(t: torch.Tensor, what: str) -> None:
    """Raise :class:`CorruptArtifactError` naming ``what`` if ``t`` holds NaN or inf.

    One pass and no temporary: ``torch.aminmax`` (NaN propagates into both; +-inf shows up as an
    extreme). ``torch.isfinite(t).all()`` allocates a bool per element and was 8x slower on CLT loads.
    """
    if t.numel() == 0 or not t.is_floating_point():
        return
    lo, hi = torch.aminmax(t)
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        raise CorruptArtifactError(
            f"{what} holds NaN or inf values; refusing to load it. If the file was damaged in "
            "transit, re-download it with force_download=True."
        )


def check_finite(t: torch.Tensor, st: StoredTensor) -> None:
    """Refuse NaN / inf values of the stored tensor ``st`` (:func:`refuse_nonfinite`)."""
    refuse_nonfinite(t, st.describe())


def _pread_into(fd: int, view: memoryview, offset: int, st: StoredTensor) -> None:
    """Fill ``view`` with the bytes at ``offset`` (several calls if the kernel returns short reads)."""
    got = 0
    n = len(view)
    while got < n:
        if hasattr(os, "preadv"):
            k = os.preadv(fd, [view[got:]], offset + got)
        else:  # pragma: no cover - Windows
            os.lseek(fd, offset + got, os.SEEK_SET)
            data = os.read(fd, n - got)
            k = len(data)
            view[got : got + k] = data
        if k <= 0:
            raise corrupt(st.path, f"{st.name!r} ends after {got} of {n} bytes", st.what)
        got += k


def _logical(st: StoredTensor) -> tuple[tuple[int, ...], bool]:
    """``(row-major shape as stored, transposed?)``: a Fortran-order (a, b) is a row-major (b, a)."""
    if st.fortran_order and len(st.shape) == 2:
        return (st.shape[1], st.shape[0]), True
    return st.shape, False


def _runs(idx: Sequence[int]) -> list[tuple[int, int, int]]:
    """Group indices into ``(first, stop, position in idx)`` runs of consecutive values."""
    a = np.asarray(idx, dtype=np.int64)
    if a.size == 0:
        return []
    starts = np.flatnonzero(np.diff(a) != 1) + 1  # vectorised: a 262k-latent vector is one run
    firsts = np.concatenate(([0], starts))
    lasts = np.concatenate((starts, [a.size]))
    return [(int(a[f]), int(a[z - 1]) + 1, int(f)) for f, z in zip(firsts, lasts, strict=True)]


def _as_index(latents: Latents, n: int, st: StoredTensor) -> list[int] | None:
    if latents is None:
        return None
    if isinstance(latents, slice):
        return list(range(n))[latents]
    idx = [int(i) for i in latents]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise LatentIndexError(f"latent(s) {bad[:5]} outside 0..{n - 1} for {st.describe()}")
    return idx


def _rows_raw(st: StoredTensor, rows: list[int] | None, n_rows: int, row_elems: int) -> torch.Tensor:
    """The stored rows ``rows`` (all if None) of a row-major (n_rows, row_elems) tensor, stored dtype."""
    src = torch.from_numpy(np.empty(0, dtype=st.dtype)).dtype
    n_want = n_rows if rows is None else len(rows)
    out = torch.empty((n_want, row_elems), dtype=src)
    if not n_want or row_elems == 0:
        return out
    row_bytes = row_elems * st.dtype.itemsize
    flat = memoryview(out.view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]
    if st.open_stream is not None:  # compressed npz member: stream through, keep the rows wanted
        _stream_rows(st, list(range(n_rows)) if rows is None else rows, n_rows, row_bytes, flat)
        return out
    jobs: list[tuple[int, int, int]] = []  # (dest byte offset, file offset, nbytes)
    step = max(1, CHUNK_BYTES // row_bytes)
    for first, stop, pos in [(0, n_rows, 0)] if rows is None else _runs(rows):
        for a in range(first, stop, step):
            b = min(stop, a + step)
            jobs.append(
                ((pos + a - first) * row_bytes, int(st.offset or 0) + a * row_bytes, (b - a) * row_bytes)
            )
    fd = os.open(st.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:

        def one(job: tuple[int, int, int]) -> None:
            d, f, k = job
            _pread_into(fd, flat[d : d + k], f, st)

        # threads pay off for large reads; many small runs (decoder rows) go faster in one thread
        if len(jobs) > 1 and READ_THREADS > 1 and sum(j[2] for j in jobs) >= len(jobs) * (1 << 20):
            with ThreadPoolExecutor(READ_THREADS) as ex:
                list(ex.map(one, jobs))
        else:
            for job in jobs:
                one(job)
    finally:
        os.close(fd)
    return out


#: Most buffers one ``preadv`` call takes (POSIX guarantees IOV_MAX >= 16; Linux allows 1024).
_MAX_IOV = 512


def read_middle(st: StoredTensor, want: Sequence[int]) -> dict[int, torch.Tensor]:
    """``{j: t[:, j, :]}`` for the sorted, distinct ``want`` of a stored 3-D tensor ``(a, b, c)``,
    each a contiguous ``(a, c)`` tensor of the stored dtype; nothing else of ``t`` is read.

    For each first-axis row, one ``preadv`` scatters every run of consecutive ``j`` straight into the
    destination tensors (no staging buffer, no copy). This is the CLT decoder access pattern
    (``w_dec[:, j, :]``); the generic row reader needed a staging copy and twice the page faults.
    """
    if st.offset is None or len(st.shape) != 3:
        raise CorruptArtifactError(f"{st.describe()}: read_middle needs an uncompressed 3-D tensor.")
    a, b, c = st.shape
    src = torch.from_numpy(np.empty(0, dtype=st.dtype)).dtype
    out = {j: torch.empty((a, c), dtype=src) for j in want}
    row_bytes = c * st.dtype.itemsize
    if not out or a == 0 or row_bytes == 0:
        return out
    views = {j: memoryview(t.view(torch.uint8).numpy()).cast("B") for j, t in out.items()}  # type: ignore[arg-type]
    groups = []  # (first j, views of the run), at most _MAX_IOV per call
    for first, stop, _ in _runs(list(out)):
        for g0 in range(first, stop, _MAX_IOV):
            groups.append((g0, [views[j] for j in range(g0, min(stop, g0 + _MAX_IOV))]))
    offset = int(st.offset)
    fd = os.open(st.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def rows(r0: int, r1: int) -> None:
        for r in range(r0, r1):
            lo, hi, base = r * row_bytes, (r + 1) * row_bytes, offset + r * b * row_bytes
            for g0, vs in groups:
                bufs = [v[lo:hi] for v in vs]
                pos = base + g0 * row_bytes
                if hasattr(os, "preadv") and os.preadv(fd, bufs, pos) == len(bufs) * row_bytes:
                    continue
                for k, buf in enumerate(bufs):  # a short read (or no preadv): one buffer at a time
                    _pread_into(fd, buf, pos + k * row_bytes, st)

    try:
        total = a * len(out) * row_bytes
        n_thr = READ_THREADS if total >= READ_THREADS * (8 << 20) else 1
        if n_thr > 1:
            step = -(-a // n_thr)
            with ThreadPoolExecutor(n_thr) as ex:
                list(ex.map(lambda r0: rows(r0, min(a, r0 + step)), range(0, a, step)))
        else:
            rows(0, a)
    finally:
        os.close(fd)
    return out


def _stream_rows(st: StoredTensor, want: list[int], n_rows: int, row_bytes: int, flat: memoryview) -> None:
    assert st.open_stream is not None
    where = {r: k for k, r in enumerate(want)}
    fh = st.open_stream()
    try:
        tmp = bytearray(row_bytes)
        view = memoryview(tmp)
        for r in range(n_rows):
            got = 0
            while got < row_bytes:
                k = fh.readinto(view[got:])  # type: ignore[attr-defined]
                if not k:
                    raise corrupt(st.path, f"{st.name!r} ends early in row {r}", st.what)
                got += k
            if r in where:
                d = where[r] * row_bytes
                flat[d : d + row_bytes] = view
    finally:
        fh.close()


def read(
    st: StoredTensor,
    *,
    dtype: torch.dtype | None = None,
    latents: Latents = None,
    axis: int | None = None,
    transpose: bool = False,
    check: bool = False,
) -> torch.Tensor:
    """Read ``st`` (or the ``latents`` along ``axis``, in the order given) into a new CPU tensor.

    ``dtype`` defaults to the stored dtype; ``transpose`` (2-D) returns the transpose, contiguous;
    ``check`` refuses NaN/inf. Rows along axis 0 are read with one ``pread`` per contiguous run;
    columns (axis 1) are read row block by row block and gathered, so the temporary memory stays
    below :data:`CHUNK_BYTES` plus the result.
    """
    shape, fortran = _logical(st)
    if len(shape) > 3:
        raise corrupt(st.path, f"{st.name!r} has unexpected rank {len(shape)}", st.what)
    axis_eff = axis
    if fortran and axis is not None:
        axis_eff = 1 - axis
    n_rows = shape[0] if shape else 1
    row_elems = math.prod(shape[1:]) if len(shape) > 1 else 1
    sel_rows = _as_index(latents, shape[axis_eff], st) if (latents is not None and axis_eff == 0) else None
    sel_cols = _as_index(latents, shape[1], st) if (latents is not None and axis_eff == 1) else None
    src_dtype = torch.from_numpy(np.empty(0, dtype=st.dtype)).dtype
    if sel_cols is None and dtype is not None and dtype != src_dtype and not fortran and shape:
        # convert row block by row block into the final buffer: peak = result + one chunk
        rows = list(range(n_rows)) if sel_rows is None else sel_rows
        t = torch.empty((len(rows), *shape[1:]), dtype=dtype)
        step = max(1, CHUNK_BYTES // max(1, row_elems * st.dtype.itemsize))
        for a in range(0, len(rows), step):
            block = _rows_raw(st, rows[a : a + step], n_rows, row_elems).reshape((-1, *shape[1:]))
            if check:
                check_finite(block, st)
            t[a : a + block.shape[0]].copy_(block)
        check = False
    elif sel_cols is None:
        raw = _rows_raw(st, sel_rows, n_rows, row_elems)
        out_rows = raw.shape[0]
        t = raw.reshape((out_rows, *shape[1:])) if shape else raw.reshape(())
    else:
        step = max(1, CHUNK_BYTES // max(1, row_elems * st.dtype.itemsize))
        idx = torch.tensor(sel_cols, dtype=torch.long)
        t = torch.empty((n_rows, len(sel_cols), *shape[2:]), dtype=dtype or src_dtype)
        for a in range(0, n_rows, step):
            b = min(n_rows, a + step)
            block = _rows_raw(st, list(range(a, b)), n_rows, row_elems).reshape((b - a, *shape[1:]))
            t[a:b].copy_(block.index_select(1, idx))
    if fortran:
        t = t.T
    if check:
        check_finite(t, st)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if transpose:
        t = t.T
    return t.contiguous()


def memory_map(st: StoredTensor) -> torch.Tensor:
    """A zero-copy, copy-on-write tensor over the stored bytes (uncompressed files only)."""
    if st.offset is None:
        raise CorruptArtifactError(
            f"{st.describe()} is compressed inside its archive and cannot be memory-mapped; load it with "
            "mmap=False."
        )
    shape, fortran = _logical(st)
    if math.prod(shape) == 0:
        return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype=st.dtype)).dtype)
    arr = np.memmap(st.path, dtype=st.dtype, mode="c", offset=int(st.offset), shape=shape)
    t = torch.from_numpy(arr)
    return t.T if fortran else t


class StoredFile:
    """What both file readers share: locate a tensor (:meth:`stored`), then read or map it.

    Subclasses (:class:`~sae_lens_gemmascope.reading.TensorFile`, :class:`~sae_lens_gemmascope.reading.NpzFile`)
    parse their header and implement :meth:`stored` and :meth:`shapes` / :meth:`dtypes`.
    """

    path: Path
    what: str

    def stored(self, name: str) -> StoredTensor:
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def names(self) -> list[str]:
        """Tensor names, in file order."""
        return list(self.shapes())

    def __contains__(self, name: object) -> bool:
        return name in self.shapes()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.stored(name).shape

    def read(
        self,
        name: str,
        *,
        dtype: torch.dtype | None = None,
        latents: Latents = None,
        axis: int | None = None,
        transpose: bool = False,
        check: bool = False,
    ) -> torch.Tensor:
        """Tensor ``name`` (or the ``latents`` along ``axis``) as a new CPU tensor; see :func:`read`."""
        return read(
            self.stored(name), dtype=dtype, latents=latents, axis=axis, transpose=transpose, check=check
        )

    def read_rows(
        self, name: str, ids: Any, *, first_target: int | None = None, check: bool = False
    ) -> torch.Tensor:
        """Rows ``ids`` (any order, repeats allowed) of ``name`` along its first axis, in that order,
        stored dtype; each distinct row is read once. ``first_target`` keeps ``[:, first_target:]`` of a
        3-D decoder (a CLT's ``(d_latents, n_layers, d_model)``)."""
        idx = torch.as_tensor(ids).detach().to("cpu", torch.int64).reshape(-1)
        uniq = torch.unique(idx)  # sorted: one positional read per run of consecutive ids
        block = self.read(name, latents=uniq.tolist(), axis=0, check=check)
        if first_target is not None:
            block = block[:, int(first_target) :].contiguous()
        if uniq.numel() == idx.numel() and bool((uniq == idx).all()):
            return block
        return block[torch.searchsorted(uniq, idx)]

    def memory_map(self, name: str) -> torch.Tensor:
        """Zero-copy, copy-on-write tensor over ``name`` (memory grows with the pages touched)."""
        return memory_map(self.stored(name))
