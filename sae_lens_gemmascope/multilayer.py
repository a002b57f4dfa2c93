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

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from ._args import check_index, check_load_args
from .errors import CorruptArtifactError, GemmaScopeError, ShapeMismatchError
from .registry import Entry

__all__ = [
    "CrossLayerTranscoder",
    "Crosscoder",
    "LayerFile",
    "MultiLayerModule",
    "WrongKindError",
    "layer_file_name",
]

PathLike = str | os.PathLike[str]
T = TypeVar("T", bound="MultiLayerModule")

#: Bytes of the temporary buffer used when copying decoder rows out of a file.
READ_CHUNK_BYTES = 32 * 2**20

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
_KEYS_REQUIRED = ("w_enc", "b_enc", "threshold", "w_dec", "b_dec")
_SKIP = "affine_skip_connection"


class WrongKindError(GemmaScopeError, TypeError):
    """The artifact asked for is not of the kind this class loads (e.g. a crosscoder given to the CLT class)."""


def layer_file_name(block: int) -> str:
    """The file name of block ``block`` inside a CLT / crosscoder folder.

    >>> layer_file_name(3)
    'params_layer_3.safetensors'
    """
    return f"params_layer_{block}.safetensors"


# --------------------------------------------------------------------------------------------------
# Reading safetensors files piecewise
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


class LayerFile:
    """A header-only handle on one ``params_layer_{i}.safetensors`` that reads tensors or slices on demand.

    Reads go through ``readinto`` at explicit offsets (no memory map), so the process holds exactly
    the tensors it asked for: ``read_w_dec([j])`` reads the ``d_i`` rows of ``w_dec[:, j, :]`` and
    nothing else.

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
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb", buffering=0) as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise ValueError("file shorter than the 8-byte header length")
                n = int.from_bytes(head, "little")
                if n <= 0 or 8 + n > size:
                    raise ValueError(f"header length {n} does not fit a file of {size} bytes")
                header = json.loads(fh.read(n))
        except (OSError, ValueError) as err:
            raise CorruptArtifactError(f"{self.path} is not a readable safetensors file: {err}") from err
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        base = 8 + n
        self._info: dict[str, _TensorInfo] = {}
        for name, rec in header.items():
            if rec["dtype"] not in _ST_DTYPES:
                raise CorruptArtifactError(
                    f"{self.path}: tensor {name!r} has dtype {rec['dtype']}; expected one of {', '.join(_ST_DTYPES)}."
                )
            start, end = (base + int(o) for o in rec["data_offsets"])
            info = _TensorInfo(_ST_DTYPES[rec["dtype"]], tuple(int(s) for s in rec["shape"]), start, end)
            nbytes = int(np.prod(info.shape, dtype=np.int64)) * info.dtype.itemsize
            if end - start != nbytes or end > size:
                raise CorruptArtifactError(
                    f"{self.path}: tensor {name!r} claims bytes {start}..{end} of a {size}-byte file "
                    f"({nbytes} needed): the file is truncated or corrupt; delete it and download again."
                )
            self._info[name] = info

    def keys(self) -> list[str]:
        """Tensor names in the file."""
        return list(self._info)

    def __contains__(self, name: object) -> bool:
        return name in self._info

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor ``name`` as stored."""
        return self._tensor(name).shape

    def nbytes(self, name: str) -> int:
        """Stored size of tensor ``name`` in bytes."""
        info = self._tensor(name)
        return info.end - info.start

    def _tensor(self, name: str) -> _TensorInfo:
        if name not in self._info:
            raise CorruptArtifactError(
                f"{self.path} has no tensor {name!r}; it holds {', '.join(self._info)}."
            )
        return self._info[name]

    @staticmethod
    def _read_into(fh: Any, buf: torch.Tensor, offset: int) -> None:
        view = memoryview(buf.view(torch.uint8).numpy()).cast("B")
        fh.seek(offset)
        while len(view):
            got = fh.readinto(view)
            if not got:
                raise CorruptArtifactError(f"unexpected end of file at byte {offset}")
            view = view[got:]
            offset += got

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor ``name`` in its stored dtype (CPU)."""
        info = self._tensor(name)
        out = torch.empty(info.shape, dtype=info.dtype)
        with open(self.path, "rb", buffering=0) as fh:
            self._read_into(fh, out, info.start)
        return out

    def read_w_dec(
        self, targets: Iterable[int], name: str = "w_dec", chunk_bytes: int = READ_CHUNK_BYTES
    ) -> dict[int, torch.Tensor]:
        """``{j: w_dec[:, j, :]}`` for each target ``j`` (each contiguous, stored dtype, CPU).

        Only the requested target columns are read from disk; runs of consecutive targets are read
        per latent row as one span, and the temporary buffer never exceeds ``chunk_bytes`` (or one row).
        """
        info = self._tensor(name)
        if len(info.shape) != 3:
            raise ShapeMismatchError(
                f"{self.path}: {name!r} has shape {info.shape}, expected (d_latents, n_blocks, d_model)."
            )
        d_lat, n_t, d_out = info.shape
        want = sorted(set(int(t) for t in targets))
        bad = [t for t in want if not 0 <= t < n_t]
        if bad:
            raise IndexError(f"{self.path}: target(s) {bad} outside 0..{n_t - 1}")
        out = {t: torch.empty((d_lat, d_out), dtype=info.dtype) for t in want}
        esize = info.dtype.itemsize
        row = d_out * esize
        runs: list[tuple[int, int]] = []
        for t in want:
            if runs and runs[-1][1] == t:
                runs[-1] = (runs[-1][0], t + 1)
            else:
                runs.append((t, t + 1))
        with open(self.path, "rb", buffering=0) as fh:
            for a, b in runs:
                span = b - a
                if span == 1:  # straight into the output, no buffer
                    dst = out[a]
                    for r in range(d_lat):
                        self._read_into(fh, dst[r], info.start + (r * n_t + a) * row)
                    continue
                rows_per_chunk = max(1, chunk_bytes // (span * row))
                buf = torch.empty((min(rows_per_chunk, d_lat), span, d_out), dtype=info.dtype)
                for r0 in range(0, d_lat, rows_per_chunk):
                    r1 = min(d_lat, r0 + rows_per_chunk)
                    if span == n_t:  # whole rows are contiguous: one read per chunk
                        self._read_into(fh, buf[: r1 - r0], info.start + r0 * n_t * row)
                    else:
                        for r in range(r0, r1):
                            self._read_into(fh, buf[r - r0], info.start + (r * n_t + a) * row)
                    for t in range(a, b):
                        out[t][r0:r1].copy_(buf[: r1 - r0, t - a])
                del buf
        return out


def _check_finite(t: torch.Tensor, what: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise CorruptArtifactError(
            f"{what} holds {n_bad} NaN/inf value(s); the file is corrupt. Delete it from the cache and download again."
        )


# --------------------------------------------------------------------------------------------------
# The modules
# --------------------------------------------------------------------------------------------------


class MultiLayerModule(nn.Module):
    """Shared machinery of :class:`CrossLayerTranscoder` and :class:`Crosscoder` (do not use directly).

    Parameters live in ``nn.ParameterDict``s keyed by block (``W_enc["3"]``), and decoder slices by
    ``"source_target"`` (``W_dec["2_5"]`` = ``w_dec_2[:, 5, :]``). Pieces not yet loaded are read from
    the per-layer files on first use when the module knows its files.
    """

    kind: ClassVar[str] = ""
    input_site: ClassVar[str] = ""
    output_site: ClassVar[str] = ""

    def __init__(
        self,
        *,
        layers: Sequence[int],
        d_model: int,
        block_widths: Sequence[int],
        affine: bool,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        model: str | None = None,
        entry: Entry | None = None,
        opener: Callable[[int], PathLike] | None = None,
    ):
        super().__init__()
        if len(block_widths) != len(layers):
            raise ValueError(f"{len(block_widths)} block widths for {len(layers)} layers")
        self.layers: tuple[int, ...] = tuple(int(x) for x in layers)
        self.n_blocks = len(self.layers)
        self.d_model = int(d_model)
        self.block_widths: tuple[int, ...] = tuple(int(w) for w in block_widths)
        self.latent_offsets: tuple[int, ...] = tuple(int(x) for x in np.cumsum((0,) + self.block_widths[:-1]))
        self.d_sae = int(sum(self.block_widths))
        self.affine = bool(affine)
        self.dtype = dtype
        self.device = torch.device(device)
        self.model = model if model is not None else (entry.model if entry is not None else None)
        self.entry = entry
        self._opener = opener
        self._files: dict[int, LayerFile] = {}
        self.W_enc = nn.ParameterDict()
        self.b_enc = nn.ParameterDict()
        self.threshold = nn.ParameterDict()  # always float32
        self.b_dec = nn.ParameterDict()
        self.W_skip = nn.ParameterDict()  # input-major: y += x @ W_skip (= affine_skip_connection as stored)
        self.W_dec = nn.ParameterDict()

    # ----- structure -------------------------------------------------------------------------------

    def sources_of(self, target: int) -> range:
        """Blocks whose latents write to ``target``."""
        raise NotImplementedError

    def targets_of(self, source: int) -> range:
        """Blocks that ``source``'s latents write to."""
        raise NotImplementedError

    def _check_block(self, block: int) -> int:
        return check_index(block, self.n_blocks, what="block", owner=type(self).__name__, layers=self.layers)

    def global_latent_id(self, block: int, index: int) -> int:
        """Global latent id of latent ``index`` of ``block`` (block offset + index)."""
        b = self._check_block(block)
        if not 0 <= index < self.block_widths[b]:
            raise IndexError(f"block {b} has {self.block_widths[b]} latents; got {index}")
        return self.latent_offsets[b] + int(index)

    def block_of_latent(self, latent_id: int) -> tuple[int, int]:
        """``(block, index)`` of a global latent id."""
        if not 0 <= latent_id < self.d_sae:
            raise IndexError(f"latent id {latent_id} outside 0..{self.d_sae - 1}")
        b = int(np.searchsorted(np.asarray(self.latent_offsets), latent_id, side="right")) - 1
        return b, int(latent_id) - self.latent_offsets[b]

    @property
    def chat_prefix_tokens(self) -> tuple[int, ...]:
        """Token ids of the untrained IT chat prefix (empty for PT models or an unknown model)."""
        if self.model is None:
            return ()
        from .models import get_model

        try:
            facts = get_model(self.model)
        except GemmaScopeError:
            return ()
        return facts.chat_prefix_tokens if facts.variant == "it" else ()

    # ----- loading ---------------------------------------------------------------------------------

    def _file(self, block: int) -> LayerFile:
        if block not in self._files:
            if self._opener is None:
                raise GemmaScopeError(
                    f"Block {block} of this {type(self).__name__} was not loaded and the module has no files "
                    "to read it from (it was built from tensors). Pass every block's tensors to from_tensors."
                )
            f = LayerFile(self._opener(block))
            self._check_file(block, f)
            self._files[block] = f
        return self._files[block]

    def _check_file(self, block: int, f: LayerFile) -> None:
        w = self.block_widths[block]
        d = self.d_model
        expected = {
            "w_enc": (d, w),
            "b_enc": (w,),
            "threshold": (w,),
            "w_dec": (w, self.n_blocks, d),
            "b_dec": (d,),
        }
        if self.affine:
            expected[_SKIP] = (d, d)
        where = f"{self.entry.release}/{self.entry.sae_id}" if self.entry else "the given files"
        for k, shape in expected.items():
            if k not in f:
                raise CorruptArtifactError(
                    f"{f.path} (block {block} of {where}) has no {k!r}; it holds {', '.join(f.keys())}."
                )
            if f.shape(k) != shape:
                raise ShapeMismatchError(
                    f"{f.path} (block {block} of {where}): {k!r} has shape {f.shape(k)} on disk but "
                    f"{shape} is expected from the registry/other blocks."
                )

    def _put(self, store: nn.ParameterDict, key: str, t: torch.Tensor, what: str, fp32: bool = False) -> None:
        _check_finite(t, what)
        t = t.to(device=self.device, dtype=torch.float32 if fp32 else self.dtype)
        store[key] = nn.Parameter(t.contiguous(), requires_grad=False)

    def _what(self, block: int, key: str) -> str:
        f = self._files.get(block)
        return f"{f.path}:{key}" if f is not None else f"block {block} {key}"

    def load_encoder(self, block: int) -> None:
        """Make sure ``block``'s encoder (``W_enc``, ``b_enc``, ``threshold``) is in memory."""
        b = self._check_block(block)
        if str(b) in self.W_enc:
            return
        f = self._file(b)
        self._put(self.b_enc, str(b), f.read("b_enc"), self._what(b, "b_enc"))
        self._put(self.threshold, str(b), f.read("threshold"), self._what(b, "threshold"), fp32=True)
        self._put(self.W_enc, str(b), f.read("w_enc"), self._what(b, "w_enc"))

    def load_decoder(self, target: int) -> None:
        """Make sure everything that writes to ``target`` (slices ``w_dec_i[:, target, :]``, ``b_dec``, skip) is in memory.

        Reads file by file; from each source file only the ``target`` column of ``w_dec``.
        """
        j = self._check_block(target)
        for i in self.sources_of(j):
            key = f"{i}_{j}"
            if key not in self.W_dec:
                sl = self._file(i).read_w_dec([j])[j]
                self._put(self.W_dec, key, sl, self._what(i, f"w_dec[:, {j}, :]"))
                del sl
        if str(j) not in self.b_dec:
            self._put(self.b_dec, str(j), self._file(j).read("b_dec"), self._what(j, "b_dec"))
        if self.affine and str(j) not in self.W_skip:
            self._put(self.W_skip, str(j), self._file(j).read(_SKIP), self._what(j, _SKIP))

    def decoder(self, source: int, target: int) -> torch.Tensor:
        """The decoder slice ``w_dec_source[:, target, :]`` (d_source, d_model), read on first use.

        Zero-filled for a CLT target below its source (the stored files hold zeros there and this
        module never reads them).
        """
        i, j = self._check_block(source), self._check_block(target)
        key = f"{i}_{j}"
        if j not in self.targets_of(i):
            return torch.zeros(self.block_widths[i], self.d_model, dtype=self.dtype, device=self.device)
        if key not in self.W_dec:
            self._put(self.W_dec, key, self._file(i).read_w_dec([j])[j], self._what(i, f"w_dec[:, {j}, :]"))
        return self.W_dec[key]

    def load(self, targets: Iterable[int] | None = None) -> MultiLayerModule:
        """Load what reconstructing ``targets`` (default: all blocks) needs, file by file; returns self.

        For each source file the needed target columns are read in one pass and the file's other
        columns are never read, so the temporary memory is bounded by :data:`READ_CHUNK_BYTES`.
        """
        tg = (
            list(range(self.n_blocks)) if targets is None else sorted({self._check_block(t) for t in targets})
        )
        if not tg:
            return self
        sources = sorted({i for j in tg for i in self.sources_of(j)})
        for i in sources:
            self.load_encoder(i)
            need = [j for j in tg if i in self.sources_of(j) and f"{i}_{j}" not in self.W_dec]
            if need:
                slices = self._file(i).read_w_dec(need)
                for j in need:
                    self._put(self.W_dec, f"{i}_{j}", slices.pop(j), self._what(i, f"w_dec[:, {j}, :]"))
                del slices
        for j in tg:
            self.load_decoder(j)  # b_dec / skip (slices already present)
        return self

    def loaded_targets(self) -> list[int]:
        """Targets whose decoder is fully in memory."""
        return [
            j
            for j in range(self.n_blocks)
            if str(j) in self.b_dec and all(f"{i}_{j}" in self.W_dec for i in self.sources_of(j))
        ]

    # ----- maths -----------------------------------------------------------------------------------

    def pre_activations(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """``x @ w_enc + b_enc`` of ``block`` (in the module dtype)."""
        b = self._check_block(block)
        self.load_encoder(b)
        if x.shape[-1] != self.d_model:
            raise ShapeMismatchError(
                f"block {b} expects inputs with last dim {self.d_model}, got {tuple(x.shape)}"
            )
        x = x.to(device=self.device, dtype=self.dtype)
        return x @ self.W_enc[str(b)] + self.b_enc[str(b)]

    def encode(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """JumpReLU latents of ``block`` from its input ``x`` (..., d_model): ``relu(pre) * (pre > threshold)``.

        The comparison is made in float32 against the float32 thresholds.
        """
        pre = self.pre_activations(block, x)
        mask = pre.float() > self.threshold[str(int(block))]
        return torch.relu(pre) * mask.to(pre.dtype)

    def decode_to(
        self,
        target: int,
        features_by_source: Mapping[int, torch.Tensor],
        x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruction of ``target`` from the latents of every block that writes to it.

        ``features_by_source`` maps block -> latents of that block (all of :meth:`sources_of` must be
        present). ``x`` is the target's own input, needed for the affine skip term of ``_affine`` CLTs.
        """
        j = self._check_block(target)
        srcs = list(self.sources_of(j))
        missing = [i for i in srcs if i not in features_by_source]
        if missing:
            raise KeyError(
                f"decode_to({j}) needs the latents of blocks {srcs}; missing {missing}. "
                "Encode them first (encode(block, x))."
            )
        self.load_decoder(j)
        out: torch.Tensor | None = None
        for i in srcs:
            f = features_by_source[i].to(device=self.device, dtype=self.dtype)
            term = f @ self.W_dec[f"{i}_{j}"]
            out = term if out is None else out + term
        assert out is not None
        out = out + self.b_dec[str(j)]
        if self.affine:
            if x is None:
                raise ValueError(
                    f"This {type(self).__name__} is affine: decode_to({j}, ..., x=...) needs the input of block {j} "
                    "for the skip term x @ affine_skip_connection."
                )
            out = out + x.to(device=self.device, dtype=self.dtype) @ self.W_skip[str(j)]
        return out

    def encode_all(self, xs: Mapping[int, torch.Tensor] | Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Latents of every block whose input is given."""
        items = xs.items() if isinstance(xs, Mapping) else enumerate(xs)
        return {int(b): self.encode(int(b), x) for b, x in items}

    def forward(self, xs: Mapping[int, torch.Tensor] | Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Reconstructions ``{block: tensor}`` of every block whose sources' inputs are all given.

        ``xs`` maps block -> input (or is a sequence in block order).
        """
        xin = dict(xs.items()) if isinstance(xs, Mapping) else dict(enumerate(xs))
        feats = self.encode_all(xin)
        return {
            j: self.decode_to(j, feats, xin.get(j))
            for j in range(self.n_blocks)
            if all(i in feats for i in self.sources_of(j)) and (not self.affine or j in xin)
        }

    # ----- SAELens view ----------------------------------------------------------------------------

    def sae_view(self, block: int) -> Any:
        """A SAELens ``JumpReLUSAE`` of ``block``'s **encoder**, for feature activations only.

        ``W_enc``/``b_enc``/``threshold`` are the block's; ``W_dec`` is the same-block decoder slice
        ``w_dec_i[:, i, :]`` and ``b_dec`` that block's bias. Its ``decode``/``forward`` output is **not**
        a reconstruction of the layer (a CLT layer's MLP output also receives writes from every earlier
        layer, and a crosscoder's from all four blocks); use :meth:`decode_to` for that. Decoders are
        never summed over targets.
        """
        from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

        b = self._check_block(block)
        self.load_encoder(b)
        key = f"{b}_{b}"
        if key not in self.W_dec:
            self._put(self.W_dec, key, self._file(b).read_w_dec([b])[b], self._what(b, f"w_dec[:, {b}, :]"))
        if str(b) not in self.b_dec:
            self._put(self.b_dec, str(b), self._file(b).read("b_dec"), self._what(b, "b_dec"))
        from .hooks import hook_for

        hook_name = None
        if self.model is not None:
            try:
                hook_name = hook_for(self.model, self.input_site, self.layers[b]).hook_name
            except GemmaScopeError:
                hook_name = None
        dtype_name = str(self.dtype).removeprefix("torch.")
        cfg = JumpReLUSAEConfig(
            d_in=self.d_model,
            d_sae=self.block_widths[b],
            dtype=dtype_name,
            device=str(self.device),
            apply_b_dec_to_input=False,
            normalize_activations="none",
        )
        cfg.metadata.hook_name = hook_name
        cfg.metadata.model_name = self.model
        cfg.metadata.note = (
            f"{self.kind} block {b} encoder view: feature activations only; decode() is NOT a reconstruction "
            "of the layer (use the multi-layer module's decode_to)."
        )
        sae = JumpReLUSAE(cfg)
        with torch.no_grad():
            sae.W_enc.data = self.W_enc[str(b)].detach().clone()
            sae.b_enc.data = self.b_enc[str(b)].detach().clone()
            sae.threshold.data = self.threshold[str(b)].detach().to(self.dtype).clone()
            sae.W_dec.data = self.W_dec[key].detach().clone()
            sae.b_dec.data = self.b_dec[str(b)].detach().clone()
        return sae

    # ----- constructors ----------------------------------------------------------------------------

    @classmethod
    def _default_layers(cls, n_blocks: int) -> tuple[int, ...]:
        return tuple(range(n_blocks))

    @classmethod
    def from_tensors(
        cls: type[T],
        params_by_block: Sequence[Mapping[str, Any]],
        *,
        layers: Sequence[int] | None = None,
        model: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> T:
        """Build from in-memory arrays with the on-disk names and shapes (one mapping per block).

        Each mapping holds ``w_enc`` (d_model, d_i), ``b_enc``, ``threshold``, ``w_dec`` (d_i, n_blocks,
        d_model), ``b_dec`` and optionally ``affine_skip_connection``; numpy arrays or tensors.
        ``layers`` are the model layers of the blocks (default ``0..n-1``); ``model`` a model key
        (enables hook lookup and the IT chat-prefix rule).
        """
        n = len(params_by_block)
        ps = [
            {k: torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v for k, v in p.items()}
            for p in params_by_block
        ]
        for b, p in enumerate(ps):
            missing = [k for k in _KEYS_REQUIRED if k not in p]
            if missing:
                raise KeyError(f"block {b} lacks {missing}")
        d_model = int(ps[0]["w_enc"].shape[0])
        affine = _SKIP in ps[0]
        m = cls(
            layers=tuple(layers) if layers is not None else cls._default_layers(n),
            d_model=d_model,
            block_widths=[int(p["w_enc"].shape[1]) for p in ps],
            affine=affine,
            dtype=dtype,
            device=device,
            model=model,
        )
        for b, p in enumerate(ps):
            w = m.block_widths[b]
            want = {
                "w_enc": (d_model, w),
                "b_enc": (w,),
                "threshold": (w,),
                "w_dec": (w, n, d_model),
                "b_dec": (d_model,),
            }
            if affine:
                want[_SKIP] = (d_model, d_model)
            for k, s in want.items():
                if k not in p or tuple(p[k].shape) != s:
                    got = tuple(p[k].shape) if k in p else "missing"
                    raise ShapeMismatchError(f"block {b}: {k!r} is {got}, expected {s}")
            m._put(m.W_enc, str(b), p["w_enc"], f"block {b} w_enc")
            m._put(m.b_enc, str(b), p["b_enc"], f"block {b} b_enc")
            m._put(m.threshold, str(b), p["threshold"], f"block {b} threshold", fp32=True)
            m._put(m.b_dec, str(b), p["b_dec"], f"block {b} b_dec")
            if affine:
                m._put(m.W_skip, str(b), p[_SKIP], f"block {b} {_SKIP}")
            for j in m.targets_of(b):
                m._put(m.W_dec, f"{b}_{j}", p["w_dec"][:, j, :], f"block {b} w_dec[:, {j}, :]")
        return m

    @classmethod
    def from_files(
        cls: type[T],
        paths: Sequence[PathLike],
        *,
        layers: Sequence[int] | None = None,
        model: str | None = None,
        targets: Iterable[int] | None = None,
        lazy: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> T:
        """Build from local ``params_layer_{i}.safetensors`` files, given in block order.

        ``targets`` are the blocks to load now (default: all); with ``lazy=True`` nothing is read
        beyond the headers, and every piece is read on first use.
        """
        files = [LayerFile(p) for p in paths]
        f0 = files[0]
        m = cls(
            layers=tuple(layers) if layers is not None else cls._default_layers(len(files)),
            d_model=f0.shape("w_enc")[0],
            block_widths=[f.shape("w_enc")[1] for f in files],
            affine=_SKIP in f0,
            dtype=dtype,
            device=device,
            model=model,
            opener=lambda b: paths[b],
        )
        for b, f in enumerate(files):
            m._check_file(b, f)
            m._files[b] = f
        if not lazy:
            m.load(targets)
        return m

    @classmethod
    def from_pretrained(
        cls: type[T],
        release: str,
        sae_id: str,
        *,
        layers: Iterable[int] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        revision: str | None = None,
        force_download: bool = False,
        local_files_only: bool | None = None,
        cache_dir: PathLike | None = None,
        lazy: bool = False,
        strict_shapes: bool = True,
    ) -> T:
        """Load a Gemma Scope 2 CLT / crosscoder through the registry, offline-first.

        ``layers`` are the blocks to reconstruct (default: all; for a crosscoder, positions 0..3).
        Only the files those need are fetched and read: for CLT targets ``<= k``, files ``0..k`` and the
        decoder columns of those targets. ``lazy=True`` fetches nothing but ``config.json`` now;
        every file is fetched and read on first use. ``cache_dir`` is a Hugging Face cache directory
        other than the default. Files come from the Hugging Face cache through
        ``huggingface_hub.hf_hub_download`` (honours ``HF_HUB_OFFLINE``; no socket is opened when the
        files are cached and the hub is offline).

        Every file is checked against the registry shapes (``ShapeMismatchError`` names both).
        ``strict_shapes=False`` instead takes d_model and the block width from file 0 (and still checks
        the number of blocks, the target axis and every other file against it): for shrunken synthetic
        files written by :func:`sae_lens_gemmascope.offline.synthetic.write_entry`.
        """
        check_load_args(device, dtype)
        from . import registry

        entry = registry.get(release, sae_id)
        if entry.alias_of is not None:
            entry = registry.get(*entry.alias_of)
        _check_kind(cls, entry)
        kw = dict(
            revision=revision,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
        cfg_path = _fetch(entry, "config.json", **kw)
        per = int(entry.d_sae_per_layer or entry.d_sae // len(entry.layers))
        d_model = entry.d_in
        if not strict_shapes:
            f0 = LayerFile(_fetch(entry, layer_file_name(0), **kw))
            d_model, per = f0.shape("w_enc")
        _check_config(entry, cfg_path, expected_width=per * len(entry.layers))
        m = cls(
            layers=entry.layers,
            d_model=d_model,
            block_widths=[per] * len(entry.layers),
            affine=entry.affine,
            dtype=dtype,
            device=device,
            entry=entry,
            opener=lambda b: _fetch(entry, layer_file_name(b), **kw),
        )
        if not lazy:
            m.load(layers)
        return m

    def extra_repr(self) -> str:
        src = f"{self.entry.release}/{self.entry.sae_id}" if self.entry else "tensors/files"
        return (
            f"{src}, layers={self.layers}, d_model={self.d_model}, d_sae={self.d_sae} "
            f"({self.block_widths[0]} per block), affine={self.affine}, loaded_targets={self.loaded_targets()}"
        )


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


# --------------------------------------------------------------------------------------------------
# Registry / hub plumbing
# --------------------------------------------------------------------------------------------------

_CLASS_FOR_KIND = {"clt": "CrossLayerTranscoder", "crosscoder": "Crosscoder"}


def _check_kind(cls: type[MultiLayerModule], entry: Entry) -> None:
    if entry.kind == cls.kind:
        return
    if entry.kind in _CLASS_FOR_KIND:
        use = f"sae_lens_gemmascope.multilayer.{_CLASS_FOR_KIND[entry.kind]}.from_pretrained"
    else:
        use = "sae_lens.SAE.from_pretrained (single-layer SAEs and transcoders)"
    raise WrongKindError(
        f"{entry.release}/{entry.sae_id} is a {entry.kind}, not a {cls.kind}; "
        f"{cls.__name__} cannot load it. Use {use}({entry.release!r}, {entry.sae_id!r})."
    )


def _fetch(
    entry: Entry,
    filename: str,
    *,
    revision: str | None,
    force_download: bool,
    local_files_only: bool | None,
    cache_dir: PathLike | None = None,
) -> Path:
    """Path of ``entry.path/filename`` in the local HF cache, downloading it when allowed.

    Goes through :func:`sae_lens_gemmascope.hub.fetch` (cache first, ``hf_hub_download`` only when the
    file is missing and the hub may be used; :class:`ArtifactNotCachedError` names the
    ``gemmascope download`` command otherwise).
    """
    from .hub import fetch

    if filename not in entry.files:
        raise GemmaScopeError(
            f"{entry.release}/{entry.sae_id} has no file {filename!r}; it has {', '.join(entry.files)}."
        )
    return fetch(
        entry,
        filename,
        revision=revision,
        force_download=force_download,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
    )


def _check_config(entry: Entry, path: Path, expected_width: int) -> None:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CorruptArtifactError(
            f"{path} (config of {entry.release}/{entry.sae_id}) is not valid JSON: {err}"
        ) from err
    kind = cfg.get("type")
    if kind is not None and kind != entry.kind:
        raise CorruptArtifactError(
            f"{path} says type {kind!r}, the registry says {entry.kind!r} for {entry.sae_id}."
        )
    width = cfg.get("width")
    if width is not None and int(width) != expected_width:
        raise ShapeMismatchError(
            f"{path} says width {width}; expected {expected_width} (registry d_sae {entry.d_sae} = "
            f"{len(entry.layers)} x {entry.d_sae_per_layer}) for {entry.release}/{entry.sae_id}."
        )
    aff = cfg.get("affine_connection")
    if aff is not None and bool(aff) != entry.affine:
        raise CorruptArtifactError(f"{path} says affine_connection={aff}; the registry says {entry.affine}.")
