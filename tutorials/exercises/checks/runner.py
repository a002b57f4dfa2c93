"""The driver: the exercise table, loading the learner's module, running and printing the checks.

Part of the exercise checker; see :mod:`tutorials.exercises.checks`.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import inspect
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from .basics import check_1, check_2, check_3
from .circuits import check_4, check_5, check_6
from .context import Context
from .core import (
    EXERCISES_PATH,
    SOLUTIONS_PATH,
    Mismatch,
    ReferenceMismatch,
    Result,
    _LearnerRaised,
    _NotImplementedYet,
    _raised_lines,
)

# ================================================================================== driver


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    functions: tuple[str, ...]
    check: Callable[[Context, ModuleType, ModuleType], None]


EXERCISES: dict[int, Exercise] = {
    e.number: e
    for e in (
        Exercise(
            1, "JumpReLU encode / decode from raw params", ("jumprelu_encode", "jumprelu_decode"), check_1
        ),
        Exercise(2, "hook names of the Gemma Scope 2 sites", ("hook_name_for",), check_2),
        Exercise(3, "splice an SAE (with / without the error term)", ("splice_hook",), check_3),
        Exercise(4, "steer at some positions", ("steering_hook",), check_4),
        Exercise(5, "transcoder feature attribution", ("transcoder_attribution",), check_5),
        Exercise(6, "CLT reconstruction of one layer", ("clt_reconstruct",), check_6),
    )
}


def load_module(path: str | Path) -> ModuleType:
    """Import a Python file as a fresh module (so the learner's latest edits are used)."""
    path = Path(path).resolve()
    name = "_gemmascope_exercises_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def reference_module() -> ModuleType:
    from .. import solutions

    return solutions


def is_stub(fn: Any) -> bool:
    """True when ``fn``'s body (after its docstring) is only ``raise NotImplementedError``: such an
    exercise is reported as not implemented without loading the model."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def check_exercise(number: int, mod: ModuleType, ctx: Context, ref: ModuleType | None = None) -> Result:
    """Run one check; never raises for the learner's mistakes."""
    ex = EXERCISES[number]
    ref = ref or reference_module()
    path = Path(mod.__file__) if getattr(mod, "__file__", None) else None
    missing = [f for f in ex.functions if not callable(getattr(mod, f, None))]
    if missing:
        where = path.name if path else mod.__name__
        return Result(number, ex.title, "fail", [f"{where} has no function {', '.join(missing)}."])
    stubs = [f for f in ex.functions if is_stub(getattr(mod, f))]
    if len(stubs) == len(ex.functions):
        return Result(number, ex.title, "not_implemented", [f"to do: {', '.join(stubs)}"])
    try:
        ex.check(ctx, mod, ref)
    except _NotImplementedYet as e:
        return Result(number, ex.title, "not_implemented", [f"to do: {e.name}"] if e.name else [])
    except Mismatch as m:
        return Result(number, ex.title, "fail", m.lines)
    except _LearnerRaised as e:
        return Result(number, ex.title, "fail", _raised_lines(e, path))
    except ReferenceMismatch as e:
        return Result(number, ex.title, "error", [f"CHECKER ERROR: {e}"])
    finally:
        with contextlib.suppress(Exception):
            if "ht" in ctx.__dict__:
                ctx.ht.reset_hooks()
    return Result(number, ex.title, "pass")


def format_result(r: Result) -> str:
    """``exercise N: PASS  title`` (or FAIL / not implemented yet / ERROR) and indented details."""
    if r.status == "not_implemented":
        head = f"exercise {r.number}: not implemented yet  ({r.title})"
    else:
        word = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}[r.status]
        head = f"exercise {r.number}: {word}  {r.title}"
    return "\n".join([head, *("    " + x for x in r.lines)])


def parse_selection(which: Sequence[str | int]) -> list[int]:
    """``["all"]`` / ``["1", "3"]`` / ``[2]`` -> exercise numbers (ValueError on anything else)."""
    out: list[int] = []
    for w in which:
        if str(w).lower() == "all":
            out.extend(EXERCISES)
            continue
        try:
            n = int(w)
        except ValueError:
            raise ValueError(f"not an exercise number: {w!r} (use 1-{max(EXERCISES)} or 'all')") from None
        if n not in EXERCISES:
            raise ValueError(f"no exercise {n}: there are {min(EXERCISES)}-{max(EXERCISES)}")
        out.append(n)
    return list(dict.fromkeys(out)) or list(EXERCISES)


def run_checks(
    which: Sequence[str | int] = ("all",),
    module: str | Path | ModuleType | None = None,
    *,
    solutions: bool = False,
    ctx: Context | None = None,
    stream: TextIO | None = None,
) -> int:
    """Check the selected exercises of ``module`` (a path or module; default ``exercises.py``, or
    ``solutions.py`` with ``solutions=True``), print one PASS/FAIL line each; return 0 iff all passed."""
    out = stream or sys.stdout
    numbers = parse_selection(which)
    if isinstance(module, ModuleType):
        mod = module
    else:
        path = Path(module) if module is not None else (SOLUTIONS_PATH if solutions else EXERCISES_PATH)
        try:
            mod = load_module(path)
        except Exception as e:
            print(f"could not import {path}: {type(e).__name__}: {e}", file=out)
            return 1
    ctx = ctx or Context(stream=out)
    if ctx.stream is None:
        ctx.stream = out
    ref = reference_module()
    where = getattr(mod, "__file__", mod.__name__)
    print(f"[checks] checking {where}: exercises {', '.join(map(str, numbers))}", file=out, flush=True)
    results = []
    for n in numbers:
        r = check_exercise(n, mod, ctx, ref)
        results.append(r)
        print(format_result(r), file=out, flush=True)
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} passed", file=out, flush=True)
    return 0 if passed == len(results) else 1
