"""The README's generated parts and its quick start stay true."""

from __future__ import annotations

from pathlib import Path

from sae_lens_gemmascope.maintainers.coverage import END, START, readme_block

ROOT = Path(__file__).resolve().parents[1]


def test_coverage_table_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    block = text[text.index(START) : text.index(END) + len(END)]
    assert block == readme_block(), "regenerate with `python -m sae_lens_gemmascope.maintainers.coverage`"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run test     # the test suite" in readme
    assert "\n./run test\n" in ci + "\n"  # the main step; optional-extra steps (circuit-tracer) follow it
