"""``gemmascope explain RELEASE SAE_ID FEATURE [FEATURE ...]``: what a feature fires on, in the terminal.

For each feature: its frequency, top and bottom logit tokens, the Neuronpedia page when the
registry knows one, and its strongest contexts from the official ``examples.safetensors`` with the
active token marked: ``[[token]]`` in plain text (piped output, ``NO_COLOR``), highlighted in colour
on a terminal. Control characters in tokens are shown escaped (``\\n``) so each context is one line.

Example:
    >>> from sae_lens_gemmascope.evidence.examples import Example
    >>> ex = Example(2.5, 0, 3, (10, 11, 12), ("The", " cat", "\\n"), 1, 0.0)
    >>> format_context(ex, color=False)
    'The[[ cat]]\\\\n'
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .examples import WINDOW, Example, Examples

BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
ACTIVE = "\x1b[1;30;43m"  # bold black on yellow
UP, DOWN = "\x1b[32m", "\x1b[31m"


def visible(text: str) -> str:
    """``text`` with newlines, tabs and other control characters escaped, so it stays on one line."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def format_context(ex: Example, color: bool = False) -> str:
    """One example's window on one line, the active token marked."""
    parts = []
    for k, t in enumerate(ex.tokens):
        s = visible(t)
        if k == ex.active:
            s = f"{ACTIVE}{s}{RESET}" if color else f"[[{s}]]"
        parts.append(s)
    return "".join(parts)


def _logit_line(items: Any, color: bool, code: str) -> str:
    cells = [f"{visible(t.token)!r} {t.value:+.3f}" for t in items]
    text = ", ".join(cells) if cells else "(none)"
    return f"{code}{text}{RESET}" if color else text


def explain_feature(
    examples: Examples,
    feature: int,
    *,
    n: int = 10,
    window: int | tuple[int, int] = WINDOW,
    color: bool = False,
) -> str:
    """The text block ``gemmascope explain`` prints for one feature."""
    entry = examples.entry
    where = f"{entry.release} / {entry.sae_id}" if entry is not None else str(examples.path)
    b, r = (BOLD, RESET) if color else ("", "")
    freq = examples.frequency(feature)
    logits = examples.logits(feature)
    top = examples.top(feature, n=n, window=window)
    n_real = len(examples.activations(feature))
    lines = [f"{b}Feature {feature}{r} of {where}"]
    if examples.source is not None:
        lines.append(f"  evidence       {examples.source}")
    lines.append(f"  frequency      {freq:.6g} ({freq * 100:.4g}% of tokens)")
    lines.append(f"  top logits     {_logit_line(logits.top, color, UP)}")
    lines.append(f"  bottom logits  {_logit_line(logits.bottom, color, DOWN)}")
    url = entry.feature_url(feature) if entry is not None else None
    lines.append(f"  neuronpedia    {url or 'none known for this folder'}")
    if not top:
        lines.append("  no examples: the file holds only padding for this feature (it never fired)")
        return "\n".join(lines)
    mark = "highlighted" if color else "in [[ ]]"
    lines.append(
        f"  top {len(top)} of {n_real} stored examples (activation, corpus row:position, context; active token {mark}):"
    )
    for ex in top:
        where_ex = f"{ex.seq_id}:{ex.position}"
        lines.append(f"  {ex.activation:10.4g}  {where_ex:>12}  {format_context(ex, color)}")
    return "\n".join(lines)


def want_color(choice: str = "auto", stream: Any = None) -> bool:
    """Colour for ``always``; for ``auto`` only on a terminal and without ``NO_COLOR``."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    s = stream if stream is not None else sys.stdout
    return bool(getattr(s, "isatty", lambda: False)())


def explain(
    release: str,
    sae_id: str,
    features: list[int],
    *,
    n: int = 10,
    window: int | tuple[int, int] = WINDOW,
    color: bool = False,
    extraction: str | os.PathLike[str] | None = None,
    **load_kwargs: Any,
) -> str:
    """The whole ``gemmascope explain`` text for several features.

    The evidence is the official examples file (``load_kwargs`` go to ``load_examples``), or, with
    ``extraction=DIR``, the merged output of ``gemmascope extract`` / ``gemmascope merge`` in ``DIR``
    (any SAE, Gemma Scope 1 included; ``load_kwargs`` go to ``open_extraction``).

    Example:
        >>> print(explain("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_medium", [7]))  # doctest: +SKIP
        >>> print(explain("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71", [7], extraction="feats"))  # doctest: +SKIP
    """
    with open_evidence(release, sae_id, extraction, **load_kwargs) as ex:
        return "\n\n".join(explain_feature(ex, f, n=n, window=window, color=color) for f in features)


def open_evidence(
    release: str, sae_id: str, extraction: str | os.PathLike[str] | None = None, **load_kwargs: Any
) -> Examples:
    """The official examples of ``release`` / ``sae_id``, or those merged in ``extraction`` when given."""
    from .examples import load_examples
    from .extracted import open_extraction

    if extraction is not None:
        return open_extraction(extraction, release, sae_id, **load_kwargs)
    return load_examples(release, sae_id, **load_kwargs)


def cli_explain(args: Any) -> int:
    """``gemmascope explain``: print, return the exit status (errors are raised as GemmaScopeError)."""
    text = explain(
        args.release,
        args.sae_id,
        list(args.features),
        n=args.top,
        window=(args.before, args.after),
        color=want_color(args.color),
        extraction=args.extraction,
        **evidence_kwargs(args),
    )
    print(text)
    return 0


def evidence_kwargs(args: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`open_evidence` from the shared ``explain`` / ``dashboard`` options
    (the cache options only apply to the official file)."""
    if args.extraction:
        return {}
    kwargs: dict[str, Any] = {}
    if args.cache_dir:
        kwargs["cache_dir"] = args.cache_dir
    if args.revision:
        kwargs["revision"] = args.revision
    if args.no_check_shapes:
        kwargs["check_shapes"] = False
    return kwargs
