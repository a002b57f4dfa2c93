"""Table-driven: mutate one valid registry file once per rule; exactly that rule must fire."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from sae_lens_gemmascope._paths import registry_dir
from sae_lens_gemmascope.cli import main
from sae_lens_gemmascope.maintainers.validate import RULES, validate


def _edit(fname: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        p = d / fname
        text = p.read_text()
        assert old in text, f"fixture text not found in {fname}: {old!r}"
        p.write_text(text.replace(old, new, 1))

    return apply


GS1 = "gemma-scope-2b-pt-res.yaml"
GS2 = "gemma-scope-2-1b-pt.yaml"

CASES: list[tuple[str, Callable[[Path], None], str, str]] = [
    # (id, mutation, rule, expected file)
    ("unknown-key", _edit(GS1, "generation: 1\n", "generation: 1\nrepo_typo: x\n"), "schema", GS1),
    ("bad-status", _edit(GS2, "    status: observed\n", "    status: seen\n"), "schema", GS2),
    ("abs-path", _edit(GS2, "id_prefix: transcoder/", "id_prefix: /transcoder/"), "schema", GS2),
    (
        "dup-id",
        _edit(GS2, "      - layer_7_width_262k_l0_medium_seed_1\n", "      - layer_7_width_262k_l0_medium\n"),
        "unique-ids",
        GS2,
    ),
    (
        "dup-release",
        _edit(
            "gemma-scope-2-1b-it.yaml",
            "release: gemma-scope-2-1b-it-res-all",
            "release: gemma-scope-2-1b-pt-res-all",
        ),
        "unique-ids",
        GS2,  # the second file to define the release is the one reported
    ),
    ("layer-range", _edit(GS1, "  layer_25: {", "  layer_26: {"), "dims", GS1),
    (
        "l0-formula",
        _edit(
            GS2,
            "l0_targets: {small: [10, 20], big: [60, 120]}",
            "l0_targets: {small: [10, 20], big: [60, 130]}",
        ),
        "l0-formula",
        GS2,
    ),
    (
        "it-model",
        _edit("gemma-scope-2-1b-it.yaml", "model: gemma-3-1b-it\n", "model: gemma-3-1b-pt\n"),
        "it-model",
        "gemma-scope-2-1b-it.yaml",
    ),
    (
        "canonical-tie",
        _edit("gemma-scope-9b-pt-att.yaml", "layer_23/width_131k: 66", "layer_23/width_131k: 36"),
        "canonical",
        "gemma-scope-9b-pt-att.yaml",
    ),
    (
        "sweep-ref",
        _edit(GS1, "    layer_5/width_16k: [18, 34, 143, 309]", "    layer_5/width_16k: [18, 35]"),
        "references",
        GS1,
    ),
    (
        "np-collision",
        _edit(
            "gemma-scope-2b-pt-mlp.yaml",
            "source: gemmascope-mlp ",
            "source: gemmascope-res ",
        ),
        "neuronpedia",
        "gemma-scope-2b-pt-res.yaml",
    ),
    (
        "clt-width",
        _edit(
            GS2,
            "        width: 262080\n        width_per_layer: 10080\n",
            "        width: 262144\n        width_per_layer: 10080\n",
        ),
        "dims",
        GS2,
    ),
    (
        "saelens-model",
        _edit(GS2, "saelens_model: google/gemma-3-1b-pt", "saelens_model: gemma-3-1b"),
        "model",
        GS2,
    ),
]


@pytest.fixture
def reg_copy(tmp_path: Path) -> Path:
    d = tmp_path / "registry"
    shutil.copytree(registry_dir(), d)
    return d


def test_shipped_registry_is_valid() -> None:
    assert validate() == []


def test_every_rule_has_a_case() -> None:
    assert {c[2] for c in CASES} >= set(RULES) - {"path"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_mutation_is_caught(case: tuple, reg_copy: Path) -> None:
    _, mutate, rule, fname = case
    mutate(reg_copy)
    violations = validate(reg_copy)
    assert violations, "mutation not detected"
    rules = {v.rule for v in violations}
    if rule == "it-model":  # a PT model in an IT repo also makes its Neuronpedia ids collide
        assert rule in rules, [str(v) for v in violations]
    else:
        assert rules == {rule}, [str(v) for v in violations]
    assert any(v.file == fname for v in violations), [str(v) for v in violations]


def test_path_rule_on_expanded_entries(reg_copy: Path) -> None:
    # an extra folder whose name does not parse as a GS2 folder
    _edit(GS2, "      - layer_7_width_262k_l0_medium_seed_1\n", "      - layer_7_width_262k_l0_huge\n")(
        reg_copy
    )
    violations = validate(reg_copy)
    assert [v.rule for v in violations] == ["path"]
    assert "layer_7_width_262k_l0_huge" in violations[0].message


def test_cli_validate_exit_codes(reg_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--registry-dir", str(reg_copy)]) == 0
    _edit(GS1, "generation: 1\n", "generation: 1\nrepo_typo: x\n")(reg_copy)
    assert main(["validate", "--registry-dir", str(reg_copy)]) == 1
    out = capsys.readouterr().out
    assert "gemma-scope-2b-pt-res.yaml: (top level): [schema]" in out
    assert "repo_typo" in out
