"""The machinery shared by CLTs and crosscoders: per-block parameters, lazy loading, the exact maths.

See :mod:`sae_lens_gemmascope.multilayer` for the file layout and the formulas. Parameters live in
``nn.ParameterDict``s keyed by block; decoder slices by ``"source_target"``.

Example:
    >>> import numpy as np
    >>> from sae_lens_gemmascope.multilayer import Crosscoder
    >>> g = np.random.default_rng(0)
    >>> blocks = [{"w_enc": g.standard_normal((4, 2)), "b_enc": np.zeros(2), "threshold": np.zeros(2),
    ...            "w_dec": g.standard_normal((2, 4, 4)), "b_dec": np.zeros(4)} for _ in range(4)]
    >>> Crosscoder.from_tensors(blocks, layers=(5, 9, 12, 15)).block_of_latent(5)
    (2, 1)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from .._args import check_index, check_load_args
from ..artifacts import SKIP, STORED_DTYPE, block_file, check_config
from ..errors import (
    CorruptArtifactError,
    GemmaScopeError,
    InvalidArgumentError,
    LatentIndexError,
    ShapeMismatchError,
)
from ..reading.stored import refuse_nonfinite
from ..registry import Entry
from .files import LayerFile

PathLike = str | os.PathLike[str]
T = TypeVar("T", bound="MultiLayerModule")

_KEYS_REQUIRED = ("w_enc", "b_enc", "threshold", "w_dec", "b_dec")


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
            raise InvalidArgumentError(f"{len(block_widths)} block widths for {len(layers)} layers")
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
        self.check_dtypes = True
        self.verify = "default"
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
            raise LatentIndexError(f"block {b} has {self.block_widths[b]} latents; got {index}")
        return self.latent_offsets[b] + int(index)

    def block_of_latent(self, latent_id: int) -> tuple[int, int]:
        """``(block, index)`` of a global latent id."""
        if not 0 <= latent_id < self.d_sae:
            raise LatentIndexError(f"latent id {latent_id} outside 0..{self.d_sae - 1}")
        b = int(np.searchsorted(np.asarray(self.latent_offsets), latent_id, side="right")) - 1
        return b, int(latent_id) - self.latent_offsets[b]

    @property
    def chat_prefix_tokens(self) -> tuple[int, ...]:
        """Token ids of the untrained IT chat prefix (empty for PT models or an unknown model)."""
        if self.model is None:
            return ()
        from ..models import get_model

        try:
            facts = get_model(self.model)
        except GemmaScopeError:
            return ()
        return facts.chat_prefix_tokens if facts.variant == "it" else ()

    # ----- loading ---------------------------------------------------------------------------------

    def _file(self, block: int) -> LayerFile:
        if block not in self._files:
            if self._opener is None:
                raise InvalidArgumentError(
                    f"Block {block} of this {type(self).__name__} was not loaded and the module has no files "
                    "to read it from (it was built from tensors). Pass every block's tensors to from_tensors."
                )
            f = LayerFile(self._opener(block), self._where(block))
            self._check_file(block, f)
            self._files[block] = f
        return self._files[block]

    def _where(self, block: int) -> str:
        src = f"{self.entry.release}/{self.entry.sae_id}" if self.entry else "the given files"
        return f"block {block} of {src}"

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
            expected[SKIP] = (d, d)
        where = self._where(block)
        dtypes = f.dtypes()
        for k, shape in expected.items():
            if k not in f:
                raise CorruptArtifactError(
                    f"{f.path} ({where}) has no {k!r}; it holds {', '.join(f.keys())}. Delete it from the "
                    "cache and download it again."
                )
            if f.shape(k) != shape:
                raise ShapeMismatchError(
                    f"{f.path} ({where}): {k!r} has shape {f.shape(k)} on disk but {shape} is expected from "
                    f"the registry and the other blocks (block width {w}, d_model {d}, {self.n_blocks} blocks). "
                    "Re-download it with force_download=True."
                )
            if self.entry is not None and self.check_dtypes and dtypes[k] != STORED_DTYPE:
                raise CorruptArtifactError(
                    f"{f.path} ({where}): {k!r} is stored as {dtypes[k]}, but Gemma Scope files are "
                    f"{STORED_DTYPE}. Re-download it, or pass check_dtypes=False to convert it on load."
                )

    def _put(self, store: nn.ParameterDict, key: str, t: torch.Tensor, what: str, fp32: bool = False) -> None:
        refuse_nonfinite(t, what)
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
        thr = f.read("threshold")
        if self.verify != "none" and bool((thr < 0).any()):
            raise CorruptArtifactError(
                f"{f.path} ({self._where(b)}): {int((thr < 0).sum())} JumpReLU threshold(s) are negative. Gemma "
                "Scope thresholds are >= 0; re-download the file, or pass verify='none' to load it anyway."
            )
        self._put(self.threshold, str(b), thr, self._what(b, "threshold"), fp32=True)
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
            self._put(self.W_skip, str(j), self._file(j).read(SKIP), self._what(j, SKIP))

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
        w: torch.Tensor = self.W_dec[key]
        return w

    def load(self, targets: Iterable[int] | None = None) -> MultiLayerModule:
        """Load what reconstructing ``targets`` (default: all blocks) needs, file by file; returns self.

        For each source file the needed target columns are read in one pass and the file's other
        columns are never read; they go straight into their tensors (no staging buffer).
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
        pre: torch.Tensor = x @ self.W_enc[str(b)] + self.b_enc[str(b)]
        return pre

    def encode(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """JumpReLU latents of ``block`` from its input ``x`` (..., d_model): ``relu(pre) * (pre > threshold)``.

        The comparison is made in float32 against the float32 thresholds.
        """
        pre = self.pre_activations(block, x)
        mask = pre.float() > self.threshold[str(int(block))]
        f: torch.Tensor = torch.relu(pre) * mask.to(pre.dtype)
        return f

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
            raise InvalidArgumentError(
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
                raise InvalidArgumentError(
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
        """A SAELens ``JumpReLUSAE`` of ``block``'s **encoder**, for feature activations only; see
        :func:`sae_lens_gemmascope.multilayer.views.sae_view` (its ``decode`` is not a reconstruction)."""
        from .views import sae_view

        return sae_view(self, block)

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
                raise InvalidArgumentError(f"block {b} lacks {missing}")
        d_model = int(ps[0]["w_enc"].shape[0])
        affine = SKIP in ps[0]
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
                want[SKIP] = (d_model, d_model)
            for k, s in want.items():
                if k not in p or tuple(p[k].shape) != s:
                    got = tuple(p[k].shape) if k in p else "missing"
                    raise ShapeMismatchError(f"block {b}: {k!r} is {got}, expected {s}")
            m._put(m.W_enc, str(b), p["w_enc"], f"block {b} w_enc")
            m._put(m.b_enc, str(b), p["b_enc"], f"block {b} b_enc")
            m._put(m.threshold, str(b), p["threshold"], f"block {b} threshold", fp32=True)
            m._put(m.b_dec, str(b), p["b_dec"], f"block {b} b_dec")
            if affine:
                m._put(m.W_skip, str(b), p[SKIP], f"block {b} {SKIP}")
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
            affine=SKIP in f0,
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
        parts: str = "all",
        check_dtypes: bool = True,
        verify: str = "default",
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

        ``parts="encoder"`` reads only the blocks' encoders (``W_enc``, ``b_enc``, ``threshold``): what
        finding active features needs; decoders are still read on first use. ``check_dtypes`` and
        ``verify`` are as for :func:`sae_lens_gemmascope.load` (float32 files; negative thresholds
        refused unless ``verify="none"``).
        """
        check_load_args(device, dtype)
        if parts not in ("all", "encoder"):
            raise InvalidArgumentError(
                f"parts={parts!r}: a {cls.kind} loads 'all' or 'encoder' (decoders load lazily)."
            )
        from .. import registry
        from .pretrained import check_kind, fetch_file, open_config

        entry = registry.get(release, sae_id)
        if entry.alias_of is not None:
            entry = registry.get(*entry.alias_of)
        check_kind(cls, entry)
        kw: dict[str, Any] = dict(
            revision=revision,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
        cfg = open_config(entry, **kw)
        per = int(entry.d_sae_per_layer or entry.d_sae // len(entry.layers))
        d_model = entry.d_in
        if not strict_shapes:
            f0 = LayerFile(fetch_file(entry, block_file(entry, 0), **kw), f"block 0 of {release}/{sae_id}")
            d_model, per = f0.shape("w_enc")
        if cfg is not None:
            check_config(entry, cfg[1], cfg[0], width=per * len(entry.layers))
        m = cls(
            layers=entry.layers,
            d_model=d_model,
            block_widths=[per] * len(entry.layers),
            affine=entry.affine,
            dtype=dtype,
            device=device,
            entry=entry,
            opener=lambda b: fetch_file(entry, block_file(entry, b), **kw),
        )
        m.check_dtypes, m.verify = check_dtypes, verify
        if not lazy:
            if parts == "encoder":
                for b in range(m.n_blocks) if layers is None else sorted({m._check_block(x) for x in layers}):
                    m.load_encoder(b)
            else:
                m.load(layers)
        return m

    def extra_repr(self) -> str:
        src = f"{self.entry.release}/{self.entry.sae_id}" if self.entry else "tensors/files"
        return (
            f"{src}, layers={self.layers}, d_model={self.d_model}, d_sae={self.d_sae} "
            f"({self.block_widths[0]} per block), affine={self.affine}, loaded_targets={self.loaded_targets()}"
        )
