"""Results, errors and tensor comparison shared by every check: :class:`Result`, :func:`diff`,
:func:`expect`, the float64 :func:`jumprelu`.

Part of the exercise checker; see :mod:`tutorials.exercises.checks`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent.parent
EXERCISES_PATH = HERE / "exercises.py"
SOLUTIONS_PATH = HERE / "solutions.py"

RES = ("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
TRANSCODER = ("gemma-scope-2-270m-pt-transcoders-all", "layer_9_width_16k_l0_small")
CLT = ("gemma-scope-2-270m-pt-clt", "width_262k_l0_big")
LAYER = 9
N_LAYERS = 18
TEXT = "Marie Curie won two Nobel Prizes, one in physics in 1903 and one in chemistry in 1911."
TEXT_2 = "for i in range(10):\n    total += i * i\nprint('sum of squares:', total)"
ATTR_TEXT = "The Eiffel Tower is in the city of"
ATTR_TARGET = " Paris"
SITES = ("resid_post", "mlp_out", "attn_out", "transcoder_in", "transcoder_out")
HOOK_LAYERS = (9, 0, 17)
#: Exercises 3 and 4 compare the residual stream after block DOWNSTREAM - 1 (the hooks are at layer 9).
DOWNSTREAM = 12


# ================================================================================== results, errors


@dataclass
class Result:
    """The outcome of one exercise: ``status`` is pass, fail, not_implemented or error (a checker fault)."""

    number: int
    title: str
    status: str
    lines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


class Mismatch(Exception):
    """The learner's output differs from the expected one; ``lines`` explain how."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(x for x in lines if x))
        self.lines = [x for x in lines if x]


class ReferenceMismatch(Exception):
    """The reference solution disagrees with an independent implementation: a fault of the checker."""


class _NotImplementedYet(Exception):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.name = name


class _LearnerRaised(Exception):
    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call learner code, telling its NotImplementedError and other exceptions apart from the checker's."""
    try:
        return fn(*args)
    except NotImplementedError as e:
        raise _NotImplementedYet(getattr(fn, "__name__", "")) from e
    except (_NotImplementedYet, _LearnerRaised):
        raise
    except Exception as e:
        raise _LearnerRaised(e) from e


def _wrap_hook(fn: Any) -> Callable[[torch.Tensor, Any], Any]:
    """A learner's hook function, wrapped so that its exceptions are reported as the learner's."""

    def hook(act: torch.Tensor, hook: Any) -> Any:
        return _call(fn, act, hook)

    return hook


def _raised_lines(err: _LearnerRaised, path: Path | None) -> list[str]:
    exc = err.exc
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    if len(text) > 300:
        text = text[:297] + "..."
    lines = [f"your code raised {type(exc).__name__}: {text}"]
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if path is not None and Path(f.filename).resolve() == path.resolve()]
    if mine:
        f = mine[-1]
        lines.append(f"  at line {f.lineno} of {path.name}, in {f.name}: {(f.line or '').strip()}")
    return lines


# ================================================================================== tensor comparison


def _as_float(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def _bad(
    got: torch.Tensor, want: torch.Tensor, rtol: float, atol_rel: float, ignore: torch.Tensor | None
) -> torch.Tensor:
    g, w = _as_float(got), _as_float(want)
    scale = float(w.abs().max()) if w.numel() and torch.isfinite(w).all() else 1.0
    atol = atol_rel * max(scale, 1e-3)
    bad = ~torch.isclose(g, w, rtol=rtol, atol=atol)
    if ignore is not None:
        bad &= ~ignore
    return bad


def _fmt_index(flat: int, shape: Sequence[int]) -> str:
    idx = []
    for n in reversed(shape):
        idx.append(flat % n)
        flat //= n
    return "[" + ", ".join(map(str, reversed(idx))) + "]"


def diff(
    what: str,
    got: Any,
    want: torch.Tensor,
    *,
    rtol: float = 1e-4,
    atol_rel: float = 1e-5,
    ignore: torch.Tensor | None = None,
) -> list[str]:
    """Lines describing how ``got`` differs from ``want`` (empty when they agree).

    Tolerance: ``|got - want| <= atol_rel * max|want| + rtol * |want|``; ``ignore`` masks entries out.
    """
    if got is None:
        return [f"{what}: your function returned None (return the tensor)."]
    if not isinstance(got, torch.Tensor):
        return [f"{what}: expected a torch.Tensor, got a {type(got).__name__}."]
    if tuple(got.shape) != tuple(want.shape):
        return [f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}."]
    bad = _bad(got, want, rtol, atol_rel, ignore)
    if not bool(bad.any()):
        return []
    flat = int(bad.flatten().nonzero()[0])
    g, w = _as_float(got).flatten(), _as_float(want).flatten()
    d = (_as_float(got) - _as_float(want)).abs()[bad]
    finite = d[torch.isfinite(d)]
    biggest = f"{float(finite.max()):.4g}" if finite.numel() else "nan"
    return [
        f"{what}: first mismatch at {_fmt_index(flat, tuple(want.shape))}: yours {float(g[flat]):.6g}, "
        f"expected {float(w[flat]):.6g} ({int(bad.sum())} of {bad.numel()} entries differ; "
        f"max |diff| {biggest})."
    ]


def same(got: Any, want: torch.Tensor, *, ignore: torch.Tensor | None = None, **tol: float) -> bool:
    """``got`` is a tensor of ``want``'s shape and agrees with it (see :func:`diff`)."""
    return isinstance(got, torch.Tensor) and not diff("x", got, want, ignore=ignore, **tol)


Variant = tuple[Callable[[], torch.Tensor], str]


def hint_for(
    got: Any, variants: Iterable[Variant], *, ignore: torch.Tensor | None = None, **tol: float
) -> str:
    """``"hint: ..."`` for the first known wrong variant that ``got`` reproduces, else ``""``.

    Variants are ``(thunk, hint)``; a thunk is only evaluated when needed (and skipped if it fails).
    """
    if not isinstance(got, torch.Tensor):
        return ""
    for make, text in variants:
        try:
            v = make()
        except Exception:
            continue
        if same(got, v, ignore=ignore, **tol):
            return "hint: " + text
    return ""


def expect(
    what: str,
    got: Any,
    want: torch.Tensor,
    variants: Iterable[Variant] = (),
    *,
    context: Sequence[str] = (),
    ignore: torch.Tensor | None = None,
    extra_hints: Callable[[Any], str] | None = None,
    **tol: float,
) -> None:
    """Raise :class:`Mismatch` (context, first difference, hint) unless ``got`` agrees with ``want``."""
    lines = diff(what, got, want, ignore=ignore, **tol)
    if not lines:
        return
    hint = hint_for(got, variants, ignore=ignore, **tol)
    if not hint and extra_hints is not None:
        hint = extra_hints(got)
    raise Mismatch(*context, *lines, hint)


def _reference_agrees(
    what: str, got: torch.Tensor, want: torch.Tensor, *, ignore: torch.Tensor | None = None, **tol: float
) -> None:
    lines = diff(what, got, want, ignore=ignore, **tol)
    if lines:
        raise ReferenceMismatch(
            "the reference solution disagrees with an independent implementation (" + " ".join(lines) + ")"
        )


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The GS2 JumpReLU (used to build inputs and wrong variants; the reference is ``solutions.py``)."""
    return torch.relu(pre) * (pre > threshold).to(pre.dtype)
