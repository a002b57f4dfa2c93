"""Validate the arguments users pass to the loaders: device, dtype, block/layer indices, limits.

Each check raises :class:`~sae_lens_gemmascope.errors.InvalidArgumentError` (a ``ValueError`` and a
``TypeError``) or :class:`~sae_lens_gemmascope.errors.DeviceUnavailableError` with what was asked,
what is possible, and what to pass instead, *before* anything is read or allocated, so a bad argument
never surfaces as torch's bare ``AssertionError`` ("Torch not compiled with CUDA enabled") or
``RuntimeError`` half-way through a load.

Example:
    >>> from sae_lens_gemmascope._args import check_device, check_dtype, check_index
    >>> check_device("cpu"), check_dtype("torch.bfloat16"), check_index(2, 4, what="block")
    ('cpu', 'bfloat16', 2)
    >>> check_index(2.5, 4, what="block")
    Traceback (most recent call last):
    ...
    sae_lens_gemmascope.errors.InvalidArgumentError: block must be a whole number, got 2.5 (float). Pass an int in 0..3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from .errors import BlockIndexError, DeviceUnavailableError, InvalidArgumentError

# Names accepted for ``dtype`` (as strings, optionally ``torch.``-prefixed, or as torch dtypes).
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "float64": "float64"}


def check_device(device: Any, *, what: str = "device") -> str:
    """The canonical device string of ``device``; refuses nonsense and devices this machine lacks.

    Accepts a string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"meta"``), a ``torch.device``
    or ``None`` (= ``"cpu"``).
    """
    import torch

    if device is None:
        return "cpu"
    if isinstance(device, Integral) and not isinstance(device, bool):
        device = f"cuda:{int(device)}"  # torch's convention for a bare index
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise InvalidArgumentError(
            f"{what} must be a string like 'cpu' or 'cuda:0' or a torch.device, got "
            f"{type(device).__name__} {device!r}."
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise InvalidArgumentError(
            f"{what}={device!r} is not a torch device ({err}). Use 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from err
    if dev.type in ("cpu", "meta"):
        return str(dev)
    if dev.type == "cuda":
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
        if not available:
            build = "has no CUDA support" if torch.version.cuda is None else "finds no CUDA GPU"
            raise DeviceUnavailableError(
                f"{what}={device!r} was asked for, but this torch ({torch.__version__}) {build}. "
                "Pass device='cpu', or install a CUDA build of torch on a machine with a GPU."
            )
        if dev.index is not None and dev.index >= count:
            raise DeviceUnavailableError(
                f"{what}={device!r}: this machine has {count} CUDA device(s), 0..{count - 1}. "
                "Pass one of those, or device='cuda' for the current one."
            )
        return str(dev)
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and not is_available():
        raise DeviceUnavailableError(
            f"{what}={device!r} was asked for, but torch reports no {dev.type} device on this machine. "
            "Pass device='cpu'."
        )
    return str(dev)


def check_dtype(dtype: Any, *, what: str = "dtype") -> str:
    """The torch name (``float32``, ``bfloat16``, ``float16``, ``float64``) of a floating ``dtype``."""
    import torch

    if dtype is None:
        return "float32"
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise InvalidArgumentError(
                f"{what}={dtype} is not a floating-point dtype; SAE weights need one of "
                f"{', '.join(sorted(set(DTYPES.values())))}."
            )
        name = str(dtype).removeprefix("torch.")
        if name not in DTYPES.values():
            raise InvalidArgumentError(
                f"{what}={dtype} is not supported; use one of {', '.join(sorted(set(DTYPES.values())))}."
            )
        return name
    if isinstance(dtype, str):
        key = dtype.strip().removeprefix("torch.")
        if key in DTYPES:
            return DTYPES[key]
    raise InvalidArgumentError(
        f"{what}={dtype!r} is not a dtype this package loads. Use one of "
        f"{', '.join(sorted(set(DTYPES.values())))} (as a string or torch dtype)."
    )


def check_index(
    value: Any,
    n: int,
    *,
    what: str = "index",
    owner: str = "",
    layers: Sequence[int] = (),
) -> int:
    """``value`` as an int in ``0..n-1``; refuses bools, fractions, NaN and out-of-range values.

    ``layers`` (the model layers of the blocks of a multi-layer module) turns a model layer passed
    where a block position is expected into a hint naming the right block.
    """
    where = f"{owner} has {what}s 0..{n - 1}" if owner else f"{what} must be in 0..{n - 1}"
    if isinstance(value, bool) or not isinstance(value, Real):
        import torch

        if torch.is_tensor(value) and value.numel() == 1 and not value.is_floating_point():
            value = int(value.item())
        else:
            raise InvalidArgumentError(
                f"{what} must be a whole number, got {type(value).__name__} {value!r}. Pass an int in 0..{n - 1}."
            )
    if not isinstance(value, Integral):
        f = float(value)
        if not math.isfinite(f) or f != int(f):
            raise InvalidArgumentError(
                f"{what} must be a whole number, got {value!r} ({type(value).__name__}). Pass an int in 0..{n - 1}."
            )
    i = int(value)
    if not 0 <= i < n:
        hint = ""
        if i in layers:
            hint = f" Model layer {i} is {what} {list(layers).index(i)}: {what}s are positions in layers={list(layers)}."
        raise BlockIndexError(f"{where}; got {value!r}.{hint}")
    return i


def check_count(value: Any, *, what: str, allow_none: bool = True) -> int | None:
    """A non-negative int (a limit, a top-k); ``None`` passes through when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 0:
        raise InvalidArgumentError(f"{what} must be a non-negative integer, got {value!r}.")
    return int(value)


def check_load_args(device: Any = "cpu", dtype: Any = "float32") -> None:
    """Validate ``device`` and ``dtype`` of a load call; raises before any file is touched."""
    check_device(device)
    check_dtype(dtype)
