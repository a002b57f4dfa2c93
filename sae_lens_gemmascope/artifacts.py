"""What a Gemma Scope artifact is made of on disk: every file and tensor fact, defined once.

Everything here is derived from a registry :class:`~sae_lens_gemmascope.registry.Entry`:

* the files of an artifact (:func:`params_file`, :func:`block_file`, :data:`CONFIG_FILE`,
  :data:`EXAMPLES_FILE`), taken from ``Entry.files`` as the registry compiled them;
* the tensors each weight file must hold, with their shapes, stored dtype, role (encoder / decoder)
  and latent axis (:func:`tensor_specs`);
* the on-disk -> SAELens state-dict names (:func:`saelens_name`);
* the ``config.json`` cross-check (:func:`check_config`);
* the rule that a JumpReLU threshold stays float32 whatever the weights' dtype
  (:data:`THRESHOLD_DTYPE`, :class:`Fp32Parameter`): a bf16 threshold would move the firing boundary.

Readers, converters and the multi-layer modules ask this module; none of them restates a name or a
shape.

Example:
    >>> from sae_lens_gemmascope import registry
    >>> from sae_lens_gemmascope.artifacts import params_file, tensor_specs
    >>> e = registry.get("gemma-scope-2-270m-pt-transcoders-all", "layer_3_width_16k_l0_small_affine")
    >>> params_file(e)
    'params.safetensors'
    >>> {k: s.shape for k, s in tensor_specs(e).items()}  # doctest: +NORMALIZE_WHITESPACE
    {'w_enc': (640, 16384), 'b_enc': (16384,), 'threshold': (16384,), 'w_dec': (16384, 640),
     'b_dec': (640,), 'affine_skip_connection': (640, 640)}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from .errors import (
    BlockIndexError,
    CorruptArtifactError,
    InvalidArgumentError,
    ShapeMismatchError,
)


class Entry(Protocol):
    """The registry facts this module reads (a :class:`sae_lens_gemmascope.registry.Entry`)."""

    @property
    def release(self) -> str: ...

    @property
    def sae_id(self) -> str: ...

    @property
    def format(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def site(self) -> str: ...

    @property
    def d_in(self) -> int: ...

    @property
    def d_out(self) -> int: ...

    @property
    def d_sae(self) -> int: ...

    @property
    def d_sae_per_layer(self) -> int | None: ...

    @property
    def layers(self) -> tuple[int, ...]: ...

    @property
    def affine(self) -> bool: ...

    @property
    def files(self) -> tuple[str, ...]: ...

    @property
    def is_multilayer(self) -> bool: ...


CONFIG_FILE = "config.json"
EXAMPLES_FILE = "examples.safetensors"

#: The tensors of an ``examples.safetensors``: key -> (safetensors dtype, shape in symbols). W = d_sae,
#: K = examples per feature (1000 in the official files), T = logit tokens per feature (10), N x C = the
#: token corpus. From gemma-scope-2.md §2.3 (1b-pt asset check). Read by ``evidence``, written by
#: ``extract.merge`` and the offline sandbox.
EXAMPLES_TENSORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "activations": ("F32", ("W", "K")),
    "seq_ids": ("I64", ("W", "K")),
    "positions": ("I32", ("W", "K")),
    "logit_effects": ("F32", ("W", "K")),
    "top_tokens": ("I32", ("W", "T")),
    "top_logits": ("F32", ("W", "T")),
    "bottom_tokens": ("I32", ("W", "T")),
    "bottom_logits": ("F32", ("W", "T")),
    "feature_frequencies": ("F64", ("W",)),
    "tokens": ("I32", ("N", "C")),
}

#: Every Gemma Scope weight file stores float32 (safetensors dtype tag / numpy dtype string).
STORED_DTYPE = "F32"
#: JumpReLU thresholds are held in float32 whatever dtype the other weights are loaded in.
THRESHOLD_DTYPE = torch.float32

Role = Literal["encoder", "decoder"]

#: On-disk tensor name -> SAELens state-dict name, per file format.
_SAELENS_NAMES: dict[str, dict[str, str]] = {
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

SKIP = "affine_skip_connection"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor a weight file must hold.

    ``latent_axis`` is the axis indexed by latents (None for ``b_dec`` and the skip matrix);
    ``role`` says which half of the model needs it: ``encoder`` (``w_enc``, ``b_enc``,
    ``threshold``) or ``decoder`` (``w_dec``, ``b_dec``, the affine skip, which adds ``x @ skip`` to
    the output).
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    latent_axis: int | None
    dtype: str = STORED_DTYPE

    @property
    def is_threshold(self) -> bool:
        return self.name == "threshold"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 4


def _names(fmt: str) -> tuple[str, str]:
    return ("W_enc", "W_dec") if fmt == "gs1_npz" else ("w_enc", "w_dec")


def tensor_specs(
    entry: Entry,
    *,
    d_in: int | None = None,
    d_sae: int | None = None,
    d_out: int | None = None,
) -> dict[str, TensorSpec]:
    """The tensors of one weight file of ``entry`` (per block file for CLTs and crosscoders).

    ``d_in`` / ``d_sae`` / ``d_out`` override the registry sizes (for files whose shapes were checked
    for self-consistency only, e.g. shrunken synthetic files). For multi-layer entries ``d_sae`` is
    the width of one block.
    """
    din = entry.d_in if d_in is None else int(d_in)
    dout = entry.d_out if d_out is None else int(d_out)
    if entry.is_multilayer:
        per = (
            int(entry.d_sae_per_layer or entry.d_sae // max(1, len(entry.layers))) if d_sae is None else d_sae
        )
        dec_shape: tuple[int, ...] = (per, len(entry.layers), dout)
    else:
        per = entry.d_sae if d_sae is None else int(d_sae)
        dec_shape = (per, dout)
    enc, dec = _names(entry.format)
    specs = [
        TensorSpec(enc, (din, per), "encoder", 1),
        TensorSpec("b_enc", (per,), "encoder", 0),
        TensorSpec("threshold", (per,), "encoder", 0),
        TensorSpec(dec, dec_shape, "decoder", 0),
        TensorSpec("b_dec", (dout,), "decoder", None),
    ]
    if entry.affine:
        specs.append(TensorSpec(SKIP, (din, dout), "decoder", None))
    if entry.format == "gs1_npz":  # the order of the arrays in a GS1 params.npz
        specs = [specs[i] for i in (0, 3, 1, 4, 2)]
    return {s.name: s for s in specs}


def dims_of(entry: Entry, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """``{"d_in", "d_sae", "d_out"}`` as a file's own encoder/decoder shapes give them."""
    enc, dec = _names(entry.format)
    if enc not in shapes or dec not in shapes or len(shapes[enc]) != 2:
        raise CorruptArtifactError(
            f"{entry.release}/{entry.sae_id}: the file has no usable {enc!r}/{dec!r} matrices "
            f"(found {dict(shapes)}). Delete it from the cache and download it again."
        )
    d_in, d_sae = shapes[enc]
    return {"d_in": int(d_in), "d_sae": int(d_sae), "d_out": int(shapes[dec][-1])}


def saelens_name(entry: Entry, stored_name: str) -> str:
    """The SAELens state-dict name of an on-disk tensor (``w_enc`` -> ``W_enc``, skip -> ``W_skip``)."""
    return _SAELENS_NAMES[entry.format][stored_name]


def params_file(entry: Entry) -> str:
    """The weight file of a single-layer entry (``params.npz`` or ``params.safetensors``)."""
    for f in entry.files:
        if f.startswith("params") and not f.startswith("params_layer_"):
            return f
    raise InvalidArgumentError(
        f"{entry.release}/{entry.sae_id} has no single weight file (its files: {', '.join(entry.files)}); "
        "CLTs and crosscoders have one file per block: use block_file(entry, i)."
    )


def block_file(entry: Entry, block: int) -> str:
    """The weight file of block ``block`` of a CLT / crosscoder (``params_layer_{block}.safetensors``)."""
    name = f"params_layer_{int(block)}.safetensors"
    if name not in entry.files:
        n = sum(f.startswith("params_layer_") for f in entry.files)
        raise BlockIndexError(
            f"{entry.release}/{entry.sae_id} has {n} block files (blocks 0..{n - 1}); there is no block {block}."
        )
    return name


def has_config(entry: Entry) -> bool:
    """True when the artifact ships a ``config.json`` (every Gemma Scope 2 folder)."""
    return CONFIG_FILE in entry.files


def read_config(entry: Entry, path: str | Path) -> dict[str, Any]:
    """Parse a ``config.json``; a typed error names the file when it is not a JSON object."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptArtifactError(
            f"{path} (config.json of {entry.release}/{entry.sae_id}) is not readable JSON: {err}. "
            "Delete it from the cache and download it again (`gemmascope download "
            f"{entry.release} {entry.sae_id} --force-download`)."
        ) from err
    if not isinstance(raw, dict):
        raise CorruptArtifactError(
            f"{path} (config.json of {entry.release}/{entry.sae_id}) holds a {type(raw).__name__}, not a JSON "
            "object. Delete it from the cache and download it again."
        )
    return raw


def check_config(entry: Entry, raw: Mapping[str, Any], path: str | Path, *, width: int) -> None:
    """Compare a GS2 ``config.json`` with the registry entry and the width found in the weights.

    Checked: ``width`` (total latents), ``type`` (``transcoder`` for skip transcoders too) and
    ``affine_connection``. A key that is absent is not checked; a key of the wrong type is an error.
    """
    malformed, problems = [], []
    kind = {"skip_transcoder": "transcoder"}.get(entry.kind, entry.kind)
    w = raw.get("width")
    if w is not None:
        if not isinstance(w, int) or isinstance(w, bool):
            malformed.append(f"width is {w!r}, not an integer")
        elif w != width:
            problems.append(f"width {w} but the weights hold {width} latents")
    t = raw.get("type")
    if t is not None:
        if not isinstance(t, str):
            malformed.append(f"type is {t!r}, not a string")
        elif t != kind:
            problems.append(f"type {t!r} but the registry says {kind!r}")
    aff = raw.get("affine_connection")
    if aff is not None:
        if not isinstance(aff, bool):
            malformed.append(f"affine_connection is {aff!r}, not true/false")
        elif aff != entry.affine:
            problems.append(f"affine_connection {aff} but the registry says {entry.affine}")
    where = f"{path} (config.json of {entry.release}/{entry.sae_id})"
    if malformed:
        raise CorruptArtifactError(
            f"{where} is malformed: {'; '.join(malformed)}. Delete it from the cache and download it again "
            f"(`gemmascope download {entry.release} {entry.sae_id} --force-download`)."
        )
    if problems:
        raise ShapeMismatchError(
            f"{where} disagrees with the registry: {'; '.join(problems)}. Re-download it with "
            "force_download=True, or report the registry entry."
        )


class Fp32Parameter(nn.Parameter):
    """An ``nn.Parameter`` that stays float32 through ``module.to(dtype)`` / ``.half()`` / ``.bfloat16()``.

    Used for the JumpReLU threshold (:data:`THRESHOLD_DTYPE`): rounding it to bf16 would move the
    firing boundary (a bf16 pre-activation equal to the rounded threshold would stop firing), so the
    L0 would change. Device moves work as usual; every other op returns plain tensors.

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
