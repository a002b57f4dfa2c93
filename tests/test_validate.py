"""Table-driven: mutate one valid registry file once per rule; exactly that rule must fire.

The second table feeds files that are not plain YAML (duplicate keys, anchors and aliases, a
"billion laughs" file, control characters, non-UTF-8 bytes, non-finite numbers, a 50 MB file):
each must end in a RegistryValidationError that names the file and line, never in data loss,
a traceback or a long parse.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from sae_lens_gemmascope._paths import registry_dir
from sae_lens_gemmascope.cli import main
from sae_lens_gemmascope.errors import GemmaScopeError, RegistryValidationError
from sae_lens_gemmascope.maintainers import compile_index as C
from sae_lens_gemmascope.maintainers import strict_yaml
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
    # negative or absurd numbers
    ("negative-l0", _edit(GS1, "  layer_3: {width_16k: [14,", "  layer_3: {width_16k: [-14,"), "schema", GS1),
    (
        "absurd-n-layers",
        _edit("models.yaml", "n_layers: 26", "n_layers: 1000000000"),
        "schema",
        "models.yaml",
    ),
    (
        "absurd-width",
        _edit(GS2, "        width: 262080\n", "        width: 262080000000000\n"),
        "schema",
        GS2,
    ),
    (
        "runaway-grid",  # 1000 layers (within the schema) x the 1b-pt grids
        _edit(
            "models.yaml", "base: gemma-3-1b-pt\n  n_layers: 26\n", "base: gemma-3-1b-pt\n  n_layers: 1000\n"
        ),
        "size",
        GS2,
    ),
    (
        "dup-key",
        _edit(GS1, "generation: 1\n", "generation: 1\nstatus: expected\n"),
        "yaml",
        GS1,
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


def _write(fname: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        p = d / fname
        p.write_bytes(data(p.read_bytes()) if callable(data) else data)

    return apply


def _sub(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def f(raw: bytes) -> bytes:
        assert old in raw, old
        return raw.replace(old, new, 1)

    return f


def _billion_laughs() -> bytes:
    lines = ['lol0: "lol"']
    for i in range(1, 10):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i > 1 else "lol"] * 10) + "]")
    return ("\n".join(lines) + "\n").encode()


def _fifty_mb() -> bytes:
    row = b"  layer_1: {width_16k: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]}\n"
    return b"folders:\n" + row * (50 * 1024 * 1024 // len(row))


EXTRA = b"      - layer_7_width_262k_l0_medium_seed_1\n"


def _line_of(fname: str, text: bytes) -> int:
    """1-based line number of ``text`` in a registry file (so edits elsewhere in the file do not break a case)."""
    data = (registry_dir() / fname).read_bytes()
    return data[: data.index(text)].count(b"\n") + 1


# (id, mutation, file, line named in the message (0: the whole file), words the message must hold)
FILE_CASES: list[tuple[str, Callable[[Path], None], str, int, str]] = [
    (
        "duplicate-key",
        _write(GS1, _sub(b"generation: 1\n", b"generation: 1\nstatus: expected\n")),
        GS1,
        15,
        "duplicate key 'status' (first at line",
    ),
    (
        "duplicate-folder-key",
        _write(GS1, _sub(b"  layer_4: {", b"  layer_3: {width_16k: [1]}\n  layer_4: {")),
        GS1,
        0,
        "duplicate key 'layer_3'",
    ),
    (
        "anchor-alias",
        _write(GS1, _sub(b"  layer_4: {", b"  layer_40: &w {width_16k: [1]}\n  layer_41: *w\n  layer_4: {")),
        GS1,
        0,
        "anchor '&w' is not allowed",
    ),
    ("billion-laughs", _write(GS1, _billion_laughs()), GS1, 2, "anchor '&l1' is not allowed"),
    ("fifty-megabytes", _write(GS1, _fifty_mb()), GS1, 0, "over the limit"),
    (
        "trailing-newline-in-name",
        _write(GS2, _sub(EXTRA, b"      - |\n        layer_7_width_262k_l0_medium_seed_1\n")),
        GS2,
        0,
        "control character '\\n'",
    ),
    (
        "escaped-newline-in-name",
        _write(GS2, _sub(EXTRA, b'      - "layer_7_width_262k_l0_medium_seed_1\\n"\n')),
        GS2,
        0,
        "control character '\\n'",
    ),
    (
        "escaped-tab-in-name",
        _write(GS2, _sub(EXTRA, b'      - "layer_7_width_262k_l0_medium_seed_1\\t"\n')),
        GS2,
        0,
        "control character '\\t'",
    ),
    (
        "literal-tab",
        _write(GS2, _sub(EXTRA, EXTRA[:-1] + b"\t\n")),
        GS2,
        _line_of(GS2, EXTRA),
        "control character '\\t'",
    ),
    ("nul-byte", _write(GS1, _sub(b"kind: sae", b"kind: sae\x00")), GS1, 10, "control character '\\x00'"),
    (
        "not-utf8",
        _write(GS1, _sub(b"site: resid_post", b"site: resid_post\xff")),
        GS1,
        11,
        "byte 0xff is not UTF-8",
    ),
    (
        "latin1-file",
        _write(
            GS1, lambda raw: raw.decode().replace("\u2014", "-").encode() + "# caf\u00e9\n".encode("latin-1")
        ),
        GS1,
        0,
        "is not UTF-8",
    ),
    (
        "nan-l0",
        _write(GS2, _sub(b"{small: [10, 20], big: [60, 120]}", b"{small: [10, 20], big: [60, .nan]}")),
        GS2,
        0,
        "not a finite number",
    ),
    (
        "too-many-values",
        _write(
            GS1,
            _sub(
                b"  layer_4: {",
                b"  layer_90: {width_16k: ["
                + b", ".join(b"%d" % i for i in range(1, 10_500))
                + b"]}\n  layer_4: {",
            ),
        ),
        GS1,
        40,
        "more than 10000 values in one file",
    ),
    ("top-level-list", _write(GS1, b"- a\n- b\n"), GS1, 1, "must be one mapping"),
    ("yaml-syntax", _write(GS1, _sub(b"generation: 1\n", b"generation: [1\n")), GS1, 0, "not valid YAML"),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_that_is_not_plain_yaml_is_refused(case: tuple, reg_copy: Path) -> None:
    _, mutate, fname, line, words = case
    mutate(reg_copy)
    with pytest.raises(RegistryValidationError) as info:
        C.load_yaml_docs(reg_copy)
    err = info.value
    assert isinstance(err, GemmaScopeError) and isinstance(err, ValueError)
    msg = str(err)
    assert fname in msg and str(reg_copy) in msg, msg
    assert words in msg, msg
    if line:
        assert f"{fname}:{line}:" in msg, msg
    # validate() reports it as one violation of the yaml rule; it does not raise
    (v,) = validate(reg_copy)
    assert (v.file, v.rule) == (fname, "yaml"), str(v)


def test_duplicate_key_used_to_drop_data_silently(reg_copy: Path) -> None:
    """PyYAML keeps the last of two equal keys; the strict reader refuses the file instead."""
    import yaml

    p = reg_copy / GS1
    text = p.read_text().replace("  layer_4: {", "  layer_3: {width_16k: [1]}\n  layer_4: {", 1)
    p.write_text(text)
    assert yaml.safe_load(text)["folders"]["layer_3"] == {"width_16k": [1]}  # the real layer_3 is gone
    with pytest.raises(RegistryValidationError, match="duplicate key 'layer_3'"):
        strict_yaml.load_file(p)


def test_cli_validate_names_the_file_of_a_billion_laughs(
    reg_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(GS1, _billion_laughs())(reg_copy)
    assert main(["validate", "--registry-dir", str(reg_copy)]) == 1
    out = capsys.readouterr().out
    assert f"{GS1}: line 2: [yaml]" in out and "anchor" in out
    assert "Traceback" not in out


def test_registry_directory_size_is_bounded(reg_copy: Path) -> None:
    row = b"# padding\n" * (200 * 1024 // 10)
    for i in range(25):  # 25 files of 200 KB: each under the per-file limit, 5 MB together
        (reg_copy / f"zz-{i}.yaml").write_bytes(row)
    with pytest.raises(RegistryValidationError, match="add up to"):
        C.load_yaml_docs(reg_copy)


def test_strict_reader_reads_the_shipped_registry_like_pyyaml() -> None:
    import yaml

    for p in sorted(registry_dir().glob("*.yaml")):
        assert strict_yaml.load_file(p) == yaml.safe_load(p.read_text(encoding="utf-8")), p.name


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--limit", "-1"],
        ["list", "--limit", "0"],
        ["list", "--limit", "99999999999"],
        ["list", "--layer", "-3"],
        ["search", "gemma", "--limit", "-5"],
        ["demo", "--top-k", "-1"],
        ["list", "--limit", "ten"],
    ],
)
def test_cli_refuses_negative_or_absurd_limits(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "outside" in err or "not a whole number" in err, err
