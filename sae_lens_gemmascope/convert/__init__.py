"""Turn Gemma Scope weight files into SAELens state dicts and configs, driven by the registry.

One module per on-disk format (:mod:`.gs1_npz`, :mod:`.gs2_safetensors`); each only *locates* the
tensors in its file (header parsing, no data read). This module does the rest, format-independent:

* checks names and shapes against the registry entry **before** reading any data (no partial state);
* reads every tensor straight into its final buffer, in chunks, converting dtype chunk by chunk
  (so an fp32 load peaks at ~1x the weights and a bf16 load at ~0.5x + one chunk) and refusing
  NaN/inf as it goes;
* builds the SAELens config from registry facts (hooks from :func:`sae_lens_gemmascope.hooks.hook_for`).

Semantics kept exactly as trained: JumpReLU ``f = relu(pre) * (pre > threshold)`` with the threshold
held in float32 whatever the weights' dtype (:class:`Fp32Parameter`), no ``b_dec`` subtraction on the
input, latent order as stored, ``W_skip = affine_skip_connection.T`` (SAELens computes ``x @ W_skip.T``).

Example:
    >>> import tempfile
    >>> from sae_lens_gemmascope import registry
    >>> from sae_lens_gemmascope.convert import convert_file
    >>> from sae_lens_gemmascope.offline.synthetic import write_entry
    >>> e = registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    >>> path = write_entry(e, tempfile.mkdtemp(), d_sae=8)[0]
    >>> cfg, sd = convert_file(e, path, check_shapes=False)
    >>> cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["metadata"]["hook_name"]
    ('jumprelu', 640, 8, 'blocks.9.hook_resid_post')
    >>> sorted(sd), sd["threshold"].dtype
    (['W_dec', 'W_enc', 'b_dec', 'b_enc', 'threshold'], torch.float32)
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from ..errors import CorruptArtifactError, ShapeMismatchError
from ..registry import Entry

#: Bytes read per chunk. Small enough to be negligible next to the weights, large enough to be fast.
CHUNK_BYTES = 64 * 1024 * 1024

ARCHITECTURES = {
    "sae": "jumprelu",
    "transcoder": "jumprelu_transcoder",
    "skip_transcoder": "jumprelu_skip_transcoder",
}

#: On-disk tensor name -> SAELens state-dict name, per format.
KEY_MAPS: dict[str, dict[str, str]] = {
    "gs1_npz": {
        "W_enc": "W_enc",
        "W_dec": "W_dec",
        "b_enc": "b_enc",
        "b_dec": "b_dec",
        "threshold": "threshold",
    },
    "gs2_safetensors": {
        "w_enc": "W_enc",
        "w_dec": "W_dec",
        "b_enc": "b_enc",
        "b_dec": "b_dec",
        "threshold": "threshold",
        "affine_skip_connection": "W_skip",
    },
}


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's raw little-endian C-order bytes live.

    Either ``offset`` into ``path`` (uncompressed files: read with ``pread``-style seeks) or
    ``open_stream``, a callable returning a stream positioned at the first data byte (compressed npz).
    ``fortran_order`` npy members are handled by the reader.
    """

    name: str
    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int | None = None
    open_stream: Callable[[], BinaryIO] | None = None
    fortran_order: bool = False

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Fp32Parameter(nn.Parameter):
    """An ``nn.Parameter`` that stays float32 through ``module.to(dtype)`` / ``.half()`` / ``.bfloat16()``.

    Used for the JumpReLU threshold: rounding it to bf16 would move the firing boundary
    (a bf16 pre-activation equal to the rounded threshold would stop firing), so the L0 would change.
    Device moves work as usual; every other op returns plain tensors.

    Example:
        >>> import torch
        >>> m = torch.nn.Module()
        >>> m.threshold = Fp32Parameter(torch.tensor([0.1, 0.2]))
        >>> m.w = torch.nn.Parameter(torch.ones(2))
        >>> _ = m.to(torch.bfloat16)
        >>> (m.w.dtype, m.threshold.dtype)
        (torch.bfloat16, torch.float32)
    """

    _DTYPE_CASTS = frozenset(
        {torch.Tensor.to, torch.Tensor.half, torch.Tensor.bfloat16, torch.Tensor.float, torch.Tensor.double}
    )

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in cls._DTYPE_CASTS:
            self = args[0]
            if func is not torch.Tensor.to:
                return self
            device = kwargs.get("device")
            for a in list(args[1:]) + [kwargs.get("other")]:
                if isinstance(a, (str, torch.device)):
                    device = a
                elif isinstance(a, torch.Tensor):
                    device = a.device
            if device is None:
                return self
            return torch._C._disabled_torch_function_impl(
                torch.Tensor.to, types, (self, device), {"non_blocking": kwargs.get("non_blocking", False)}
            )
        return torch._C._disabled_torch_function_impl(func, types, args, kwargs)


def _corrupt(path: Path, what: str) -> CorruptArtifactError:
    return CorruptArtifactError(
        f"{path} looks truncated or corrupt: {what}. Delete it or re-download it with "
        "force_download=True (sae_lens_gemmascope.load(..., force_download=True) or "
        "`gemmascope download RELEASE SAE_ID --force-download`)."
    )


def _read_fully(fh: BinaryIO, buf: memoryview, path: Path, name: str) -> None:
    view = buf.cast("B")
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise _corrupt(path, f"tensor {name!r} ends after {got} of {len(view)} bytes")
        got += n


def _check_finite(t: torch.Tensor, st: StoredTensor) -> None:
    if t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)  # NaN propagates into both; +-inf shows up as an extreme
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        raise CorruptArtifactError(
            f"Tensor {st.name!r} in {st.path} holds NaN or inf values; refusing to load it. If the file "
            "was damaged in transit, re-download it with force_download=True."
        )


def read_tensor(
    st: StoredTensor,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    transpose: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Read one stored tensor into a new tensor of ``dtype`` on ``device``, chunk by chunk.

    ``transpose`` (2-D only) writes the transpose without a full-size temporary; ``scale`` multiplies
    in the stored precision before the dtype cast. Refuses NaN/inf.
    """
    shape = st.shape
    src_t = transpose
    if st.fortran_order and len(shape) == 2:  # column-major (a, b) == row-major (b, a), transposed
        shape = (shape[1], shape[0])
        src_t = not src_t
    if len(shape) > 2:
        raise CorruptArtifactError(f"Tensor {st.name!r} in {st.path} has unexpected rank {len(shape)}.")
    rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0] if shape else 1)
    out_shape = (shape[1], shape[0]) if (len(shape) == 2 and src_t) else tuple(shape)
    dest = torch.empty(out_shape, dtype=dtype, device=device)
    if math.prod(shape) == 0:
        return dest
    row_bytes = cols * st.dtype.itemsize
    rows_per_chunk = max(1, CHUNK_BYTES // row_bytes)
    src_torch = torch.from_numpy(np.empty(0, dtype=st.dtype)).dtype
    direct = (not src_t) and src_torch == dtype and torch.device(device).type == "cpu"
    flat_dest = dest.reshape(rows, cols) if len(shape) != 2 or not src_t else dest
    buf = None if direct else np.empty((min(rows, rows_per_chunk), cols), dtype=st.dtype)
    if st.open_stream is not None:
        fh = st.open_stream()
    else:
        fh = open(st.path, "rb", buffering=0)  # noqa: SIM115 - closed below
        fh.seek(int(st.offset or 0))
    try:
        for r0 in range(0, rows, rows_per_chunk):
            r1 = min(rows, r0 + rows_per_chunk)
            if direct:
                chunk = flat_dest[r0:r1]
                _read_fully(fh, memoryview(chunk.numpy()), st.path, st.name)
                _check_finite(chunk, st)
                if scale is not None:
                    chunk.mul_(scale)
                continue
            assert buf is not None
            part = buf[: r1 - r0]
            _read_fully(fh, memoryview(part), st.path, st.name)
            t = torch.from_numpy(part)
            _check_finite(t, st)
            if scale is not None:
                t.mul_(scale)
            if src_t:
                flat_dest[:, r0:r1].copy_(t.T)
            else:
                flat_dest[r0:r1].copy_(t)
    finally:
        fh.close()
    return dest


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def validate(
    entry: Entry, stored: dict[str, StoredTensor], path: Path, *, check_shapes: bool = True
) -> dict[str, int]:
    """Check tensor names and shapes (self-consistency always, registry shapes if ``check_shapes``).

    Returns ``{"d_in", "d_sae", "d_out"}`` as found in the file. Reads no tensor data.
    """
    expected = entry.tensor_shapes()
    keymap = KEY_MAPS[entry.format]
    missing = [k for k in expected if k not in stored]
    if missing:
        raise _corrupt(path, f"missing tensor(s) {missing}; it holds {sorted(stored)}")
    unknown = [k for k in stored if k not in keymap]
    if unknown:
        warnings.warn(f"{path}: ignoring unexpected tensor(s) {unknown}.", stacklevel=3)
        for k in unknown:
            del stored[k]
    if "affine_skip_connection" in stored and not entry.affine:
        raise ShapeMismatchError(
            f"{path} holds an affine_skip_connection, but the registry records {entry.release}/{entry.sae_id} "
            "as a plain (non-affine) transcoder. The file and the registry disagree; check the sae_id "
            "(affine variants end in _affine) or re-download with force_download=True."
        )
    for name, st in stored.items():
        if not np.issubdtype(st.dtype, np.floating):
            raise _corrupt(path, f"tensor {name!r} has non-float dtype {st.dtype}")
    w_enc = stored["W_enc" if entry.format == "gs1_npz" else "w_enc"]
    w_dec = stored["W_dec" if entry.format == "gs1_npz" else "w_dec"]
    if len(w_enc.shape) != 2 or len(w_dec.shape) != 2:
        raise _corrupt(path, f"encoder/decoder are not matrices: {_fmt(w_enc.shape)}, {_fmt(w_dec.shape)}")
    d_in, d_sae = w_enc.shape
    d_out = w_dec.shape[1]
    found = {"d_in": d_in, "d_sae": d_sae, "d_out": d_out}
    for name, want in _shapes_for(entry.format, d_in, d_sae, d_out, entry.affine).items():
        if name in stored and tuple(stored[name].shape) != want:
            raise ShapeMismatchError(
                f"{path}: tensor {name!r} has shape {_fmt(stored[name].shape)}, but with "
                f"d_in={d_in}, d_sae={d_sae}, d_out={d_out} (from its encoder/decoder) it must be {_fmt(want)}."
            )
    if check_shapes:
        for name, want in expected.items():
            got = tuple(stored[name].shape)
            if got != tuple(want):
                raise ShapeMismatchError(
                    f"Tensor {name!r} of {entry.release}/{entry.sae_id}: the registry says {_fmt(tuple(want))}, "
                    f"the file {path} holds {_fmt(got)}. Re-download with force_download=True if the file "
                    "is stale, or report the registry entry."
                )
    return found


def _shapes_for(fmt: str, d_in: int, d_sae: int, d_out: int, affine: bool) -> dict[str, tuple[int, ...]]:
    enc, dec = ("W_enc", "W_dec") if fmt == "gs1_npz" else ("w_enc", "w_dec")
    shapes = {
        enc: (d_in, d_sae),
        dec: (d_sae, d_out),
        "b_enc": (d_sae,),
        "b_dec": (d_out,),
        "threshold": (d_sae,),
    }
    if affine:
        shapes["affine_skip_connection"] = (d_in, d_out)
    return shapes


def sae_config(
    entry: Entry, *, d_in: int, d_sae: int, d_out: int, dtype: str = "float32", device: str = "cpu"
) -> dict[str, Any]:
    """The SAELens (>= 6) config dict of ``entry``: registry facts only, unknowns left unset.

    ``hook_name`` / ``hook_name_out`` / ``reshape_activations`` are the HookedTransformer hooks of the
    entry's sites; ``hf_hook_name`` / ``hf_hook_name_out`` name the Hugging Face module point
    (``<module>.input|output``). ``dataset_path`` and ``context_size`` are not set: no public source
    states them for every release.
    """
    from importlib.metadata import version

    from ..hooks import hook_for

    ht_in = hook_for(entry.model, entry.hook_site_in, entry.layer, backend="hooked_transformer")
    hf_in = hook_for(entry.model, entry.hook_site_in, entry.layer, backend="hf")
    metadata: dict[str, Any] = {
        "sae_lens_version": version("sae-lens"),
        "sae_lens_training_version": None,
        "model_name": entry.hf_model_id,
        "hook_name": ht_in.hook_name,
        "hook_head_index": None,
        "hf_hook_name": f"{hf_in.hf_module}.{hf_in.hf_io}",
        "neuronpedia_id": entry.neuronpedia_id,
        # Gemma models are trained and run with <bos> first; both tutorials tokenize with it.
        "prepend_bos": True,
        "gemmascope_release": entry.release,
        "gemmascope_sae_id": entry.sae_id,
        "gemmascope_repo_id": entry.repo_id,
        "gemmascope_path": entry.path,
    }
    requires = set(ht_in.requires)
    cfg: dict[str, Any] = {
        "architecture": ARCHITECTURES[entry.kind],
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "dtype": dtype,
        "device": str(device),
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": ht_in.reshape,
    }
    if entry.kind != "sae":
        ht_out = hook_for(entry.model, entry.hook_site_out, entry.layer, backend="hooked_transformer")
        hf_out = hook_for(entry.model, entry.hook_site_out, entry.layer, backend="hf")
        metadata["hook_name_out"] = ht_out.hook_name
        metadata["hf_hook_name_out"] = f"{hf_out.hf_module}.{hf_out.hf_io}"
        cfg["d_out"] = int(d_out)
        requires |= set(ht_out.requires)
    kwargs = {}
    for req in sorted(requires):  # e.g. "fold_ln=False" for the GS2 transcoder input (needs the norm gain)
        key, _, val = req.partition("=")
        kwargs[key] = {"False": False, "True": True}.get(val, val)
    if kwargs:
        metadata["model_from_pretrained_kwargs"] = kwargs
    cfg["metadata"] = metadata
    return cfg


def load_tensors(
    entry: Entry,
    stored: dict[str, StoredTensor],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Read the stored tensors into a SAELens state dict (threshold as float32 :class:`Fp32Parameter`)."""
    keymap = KEY_MAPS[entry.format]
    scale = None
    if entry.site == "embedding":
        # GS1 embedding SAEs were trained on the raw embedding rows e, but TransformerLens' hook_embed
        # (like the HF embed output) is x = sqrt(d) * e. With W_enc / sqrt(d) the encoder sees
        # x @ W_enc / sqrt(d) = e @ W_enc, so the latents are unchanged. The reconstruction must come
        # out in hook_embed space too: sqrt(d) * (f @ W_dec + b_dec) = f @ (sqrt(d) W_dec) + sqrt(d) b_dec,
        # so W_dec **and** b_dec are multiplied by sqrt(d) (SAELens 6.54.12 forgets b_dec).
        scale = math.sqrt(entry.d_in)
    out: dict[str, torch.Tensor] = {}
    for name, st in stored.items():
        key = keymap[name]
        if key == "threshold":
            out[key] = Fp32Parameter(read_tensor(st, dtype=torch.float32, device=device))
            continue
        s = None
        if scale is not None and key == "W_enc":
            s = 1.0 / scale
        elif scale is not None and key in ("W_dec", "b_dec"):
            s = scale
        out[key] = read_tensor(st, dtype=dtype, device=device, transpose=(key == "W_skip"), scale=s)
    return out


def locate(entry: Entry, path: str | os.PathLike[str]) -> dict[str, StoredTensor]:
    """Parse the header(s) of ``path`` in ``entry.format``: name -> :class:`StoredTensor`."""
    p = Path(path)
    if entry.format == "gs1_npz":
        from .gs1_npz import locate_npz

        return locate_npz(p)
    if entry.format == "gs2_safetensors":
        from .gs2_safetensors import locate_safetensors

        return locate_safetensors(p)
    raise CorruptArtifactError(f"No converter for format {entry.format!r} ({entry.release}/{entry.sae_id}).")


def convert_file(
    entry: Entry,
    path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    check_shapes: bool = True,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Validate then read the weight file of ``entry``: ``(sae_lens_cfg_dict, state_dict)``."""
    tdtype = _torch_dtype(dtype)
    stored = locate(entry, path)
    dims = validate(entry, stored, Path(path), check_shapes=check_shapes)
    cfg = sae_config(entry, **dims, dtype=_dtype_name(tdtype), device=str(device))
    state_dict = load_tensors(entry, stored, dtype=tdtype, device=device)
    return cfg, state_dict


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    t = getattr(torch, name, None)
    if not isinstance(t, torch.dtype) or not t.is_floating_point:
        raise ValueError(f"Unsupported dtype {dtype!r}; use 'float32', 'bfloat16', 'float16' or 'float64'.")
    return t


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
