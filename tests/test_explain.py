"""``gemmascope explain`` against the crafted 16k examples file of test_examples.py (known contents)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_examples import ABSENT, PARIS, WIDE, reference_top, wide_file, write

from sae_lens_gemmascope.cli import main

CONTEXT = re.compile(r"^\s+\S+\s+\d+:\d+  ")  # "   7.25     3:6  <context>"


def contexts(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if CONTEXT.match(ln)]


@pytest.fixture
def wide(hf_cache: Path) -> dict[str, np.ndarray]:
    from sae_lens_gemmascope.offline import realmodel

    if not realmodel.is_available():
        pytest.skip("the Gemma 3 270M GGUF from PyPI (test extra) is not installed")
    t = wide_file()
    write(hf_cache, WIDE, t)
    return t


def test_explain_prints_contexts_logits_frequency_url(wide: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", *WIDE, str(PARIS), "7", "-n", "5", "--before", "6", "--after", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # piped: plain text
    block, other = out.split("\n\n")
    lines = block.splitlines()
    assert lines[0] == f"Feature {PARIS} of {WIDE[0]} / {WIDE[1]}"
    assert "frequency      0.0123 (1.23% of tokens)" in block
    assert "top logits     ' France' +3.500, ' Paris' +2.000, ' capital' +1.250" in block
    assert f"https://www.neuronpedia.org/gemma-3-270m/9-gemmascope-2-res-16k/{PARIS}" in block
    ctx = contexts(block)
    assert len(ctx) == 3  # the 4th slot is padding
    for ln, (act, seq, pos) in zip(ctx, [(7.25, 3, 6), (4.0, 6, 6), (2.5, 0, 6)], strict=True):
        assert ln.split()[:2] == [f"{act:.4g}", f"{seq}:{pos}"]
        assert ln.endswith("<bos> The capital of France is[[ Paris]]. The")
    ref = reference_top(wide, 7)  # a random feature: every stored example, in order
    got = [ln.split()[:2] for ln in contexts(other)]
    assert got == [[f"{a:.4g}", f"{s}:{p}"] for a, s, p in ref[:5]]


def test_explain_colour_on_request_and_newlines_escaped(
    wide: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", *WIDE, str(PARIS), "--color", "always"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[1;30;43m Paris\x1b[0m" in out and "[[" not in out
    assert main(["explain", *WIDE, str(PARIS), "--after", "9"]) == 0  # row ends "... mat.\n" at 15
    ctx = contexts(capsys.readouterr().out)
    assert len(ctx) == 3 and all(ln.endswith("[[ Paris]]. The cat sat on the mat.\\n") for ln in ctx)


def test_explain_errors(hf_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", *ABSENT, "3"]) == 2
    err = capsys.readouterr().err
    assert "has no examples.safetensors" in err and "gemmascope extract" in err
    assert main(["explain", *WIDE, "3"]) == 2  # not cached, offline
    assert "gemmascope download" in capsys.readouterr().err
