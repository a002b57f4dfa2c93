"""Open an artifact's weight file and check it against the registry before any data is read.

:func:`open_weights` picks the reader for ``entry.format`` (GS2 safetensors through the
``safetensors`` library, GS1 npz through :mod:`.npz_file`); :func:`check_file` compares the file's
tensor names, dtypes and shapes with :func:`sae_lens_gemmascope.artifacts.tensor_specs`:

* a missing tensor, or an ``affine_skip_connection`` in a folder the registry records as plain, is an
  error; an unknown extra tensor is ignored with a warning;
* every tensor must be stored as float32, as every Gemma Scope file is (``check_dtypes=False``
  accepts another float dtype, which is then converted on load);
* shapes must agree with each other (always) and with the registry (``check_shapes=True``).

Example:
    >>> import tempfile
    >>> from sae_lens_gemmascope import registry
    >>> from sae_lens_gemmascope.offline.synthetic import write_entry
    >>> e = registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    >>> path = write_entry(e, tempfile.mkdtemp(), d_sae=8)[0]
    >>> check_file(e, open_weights(e, path), check_shapes=False)
    {'d_in': 640, 'd_sae': 8, 'd_out': 640}
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

from ..artifacts import SKIP, STORED_DTYPE, dims_of, tensor_specs
from ..errors import CorruptArtifactError, ShapeMismatchError
from .npz_file import NpzFile
from .safetensors_file import TensorFile

if TYPE_CHECKING:
    from ..registry import Entry

WeightFile = TensorFile | NpzFile


def artifact_name(entry: Entry) -> str:
    return f"{entry.release}/{entry.sae_id}"


def open_weights(entry: Entry, path: str | os.PathLike[str]) -> WeightFile:
    """A header-only reader of ``path`` in ``entry.format``."""
    if entry.format == "gs1_npz":
        return NpzFile(path, artifact_name(entry))
    if entry.format == "gs2_safetensors":
        return TensorFile(path, artifact_name(entry))
    raise CorruptArtifactError(f"No reader for format {entry.format!r} ({artifact_name(entry)}).")


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_file(
    entry: Entry,
    f: WeightFile,
    *,
    check_shapes: bool = True,
    check_dtypes: bool = True,
    block: int | None = None,
) -> dict[str, int]:
    """Check names, dtypes and shapes of ``f`` against ``entry``; return ``{"d_in", "d_sae", "d_out"}``.

    ``block`` names the block of a CLT / crosscoder file in messages. Reads no tensor data.
    """
    where = f"{f.path} ({artifact_name(entry)}" + (f", block {block})" if block is not None else ")")
    shapes, dtypes = f.shapes(), f.dtypes()
    specs = tensor_specs(entry)
    if SKIP in shapes and not entry.affine:
        raise ShapeMismatchError(
            f"{where} holds an affine_skip_connection, but the registry records {artifact_name(entry)} as a "
            "plain (non-affine) transcoder. Check the sae_id (affine variants end in _affine) or "
            "re-download with force_download=True."
        )
    missing = [k for k in specs if k not in shapes]
    if missing:
        raise CorruptArtifactError(
            f"{where} lacks tensor(s) {missing}; it holds {sorted(shapes)}. Delete it from the cache and "
            "download it again."
        )
    extra = [k for k in shapes if k not in specs]
    if extra:
        warnings.warn(f"{where}: ignoring unexpected tensor(s) {extra}.", stacklevel=3)
    for name in specs:
        tag = dtypes[name]
        if tag not in ("F32", "F64", "F16", "BF16"):
            raise CorruptArtifactError(f"{where}: tensor {name!r} has non-float dtype {tag}.")
        if check_dtypes and tag != STORED_DTYPE:
            raise CorruptArtifactError(
                f"{where}: tensor {name!r} is stored as {tag}, but Gemma Scope files are {STORED_DTYPE} "
                "(the registry's dtype for every tensor). The file was re-saved by another tool or is not "
                "the published one: re-download it with force_download=True, or pass check_dtypes=False to "
                "convert it on load."
            )
    dims = dims_of(entry, shapes)
    per_file = {"d_sae": dims["d_sae"], "d_in": dims["d_in"], "d_out": dims["d_out"]}
    consistent = tensor_specs(entry, **per_file)
    for name, spec in consistent.items():
        if tuple(shapes[name]) != spec.shape:
            raise ShapeMismatchError(
                f"{where}: tensor {name!r} has shape {_fmt(shapes[name])}, but with d_in={dims['d_in']}, "
                f"d_sae={dims['d_sae']}, d_out={dims['d_out']} (from its encoder/decoder) it must be "
                f"{_fmt(spec.shape)}. The file is corrupt: re-download it with force_download=True."
            )
    if check_shapes:
        for name, spec in specs.items():
            if tuple(shapes[name]) != spec.shape:
                raise ShapeMismatchError(
                    f"Tensor {name!r} of {artifact_name(entry)}: the registry says {_fmt(spec.shape)}, the file "
                    f"{f.path} holds {_fmt(shapes[name])}. Re-download with force_download=True if the file is "
                    "stale, or report the registry entry."
                )
    return dims
