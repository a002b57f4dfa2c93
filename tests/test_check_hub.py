"""`gemmascope check-hub`: recorded hub listings replayed against the registry, and `--write`.

The recordings in tests/fixtures/hub/ are built by make_fixtures.py from the reference inventories
(tests/fixtures/reference/, compiled independently of registry/) plus the deliberate faults listed
there; every fault class must come out as an exact message, and a mutated recording must be reported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from sae_lens_gemmascope._paths import registry_dir
from sae_lens_gemmascope.maintainers import compile_index as C
from sae_lens_gemmascope.maintainers import yaml_rt
from sae_lens_gemmascope.maintainers.hubcheck import (
    LiveHub,
    ReplayHub,
    ReplayLinks,
    check_hub,
    cli_check_hub,
    fixture_name,
    write_recording,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hub"
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
assert _spec is not None and _spec.loader is not None
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
NP = "https://www.neuronpedia.org/api/feature"


def args(**kw: object) -> SimpleNamespace:
    base = dict(
        repo=None, shapes=False, write=False, neuronpedia=False, replay=str(FIXTURES), registry_dir=None
    )
    base.update(kw)
    return SimpleNamespace(**base)


def findings(repo: str, **kw: object) -> dict[str, list[str]]:
    (rep,) = check_hub([repo], ReplayHub(kw.pop("replay", FIXTURES)), **kw)  # type: ignore[arg-type]
    out: dict[str, list[str]] = {}
    for f in rep.findings:
        out.setdefault(f.code, []).append(f.message)
    return out


@pytest.fixture
def reg_copy(tmp_path: Path) -> Path:
    d = tmp_path / "registry"
    shutil.copytree(registry_dir(), d)
    return d


@pytest.mark.parametrize("repo", sorted(make_fixtures.FAULTS))
def test_recordings_are_the_inventory_plus_the_listed_faults(repo: str) -> None:
    """The committed recordings are exactly what make_fixtures.py builds from the inventories."""
    assert json.loads((FIXTURES / fixture_name(repo)).read_text()) == json.loads(
        json.dumps(make_fixtures.build(repo))
    )


# registry folders evidenced after the inventories were compiled (see test_registry)
AFTER_INVENTORY = {
    "google/gemma-scope-2b-pt-transcoders": {
        f"layer_{layer}/width_16k/average_l0_{l0}"
        for layer, l0s in {
            12: [18, 60, 111, 204, 359, 604],
            16: [17, 87, 598],
            17: [20, 60, 112, 272, 481, 797, 1665],
            19: [19, 32, 53, 89, 194, 562, 882, 1259],
            20: [19],
            21: [22, 60, 102, 630, 988, 1411],
        }.items()
        for l0 in l0s
    }
}


@pytest.fixture(scope="module")
def inventory_replay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recordings of every repo as the reference inventories describe it (no faults)."""
    d = tmp_path_factory.mktemp("inventory-replay")
    for repo in make_fixtures.all_repos():
        write_recording(make_fixtures.inventory_recording(repo), d)
    return d


def test_every_repo_agrees_with_its_inventory_listing(inventory_replay: Path, no_network: None) -> None:
    """Files, npz sizes and safetensors header shapes of all 19 repos, checked against the registry."""
    reports = check_hub(None, ReplayHub(inventory_replay), shapes=True)
    assert len(reports) == 19
    errors = {r.repo_id: [(f.code, f.path) for f in r.errors] for r in reports if r.errors}
    assert errors == {repo: sorted(("missing", p) for p in paths) for repo, paths in AFTER_INVENTORY.items()}
    assert sum(len(r.confirmed) for r in reports) > 0  # 'expected' entries the inventories list


@pytest.mark.parametrize(
    ("mutation", "code"),
    [
        ("drop-folder", "missing"),
        ("drop-file", "missing-file"),
        ("add-folder", "extra"),
        ("shape", "shape"),
        ("drop-tensor", "shape"),
        ("npz-size", "size"),
        ("odd-folder", "unparsed"),
    ],
)
def test_a_mutated_recording_is_reported(
    inventory_replay: Path, tmp_path: Path, mutation: str, code: str, no_network: None
) -> None:
    repo = "google/gemma-scope-27b-pt-res" if mutation == "npz-size" else "google/gemma-scope-2-1b-pt"
    rec = json.loads((inventory_replay / fixture_name(repo)).read_text())
    files, headers = rec["files"], rec.get("safetensors", {})
    target = "resid_post/layer_7_width_16k_l0_medium"
    if mutation == "drop-folder":
        files = [f for f in files if not f[0].startswith(target + "/")]
    elif mutation == "drop-file":
        files = [f for f in files if f[0] != f"{target}/params.safetensors"]
    elif mutation == "add-folder":
        files.append(["resid_post/layer_7_width_16k_l0_medium_seed_9/params.safetensors", 1])
    elif mutation == "shape":
        headers[f"{target}/params.safetensors"]["w_dec"] = [16384, 1151]
    elif mutation == "drop-tensor":
        del headers[f"{target}/params.safetensors"]["threshold"]
    elif mutation == "npz-size":
        files = [[p, s // 2 if p == "layer_22/width_131k/average_l0_48/params.npz" else s] for p, s in files]
    elif mutation == "odd-folder":
        files.append(["resid_post/layer_7_wide/params.safetensors", 1])
    rec["files"] = files
    d = tmp_path / "replay"
    write_recording(rec, d)
    before = check_hub([repo], ReplayHub(inventory_replay), shapes=True)[0]
    after = check_hub([repo], ReplayHub(d), shapes=True)[0]
    assert not before.errors
    assert [f.code for f in after.errors] == [code], after.errors


def test_clean_repo_is_ok(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_check_hub(args(repo=["gemma-scope-27b-pt-res"], shapes=True)) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "google/gemma-scope-27b-pt-res (gemma-scope-27b-pt-res.yaml): 20 hub files, 18 registry entries",
        "  (ignored: 2 repo metadata files)",
        "  OK",
        "summary: 0 errors, 0 to confirm, 0 info in 1 repos",
    ]


def test_gs1_faults(no_network: None) -> None:
    got = findings("google/gemma-scope-2b-pt-res", shapes=True)
    assert got["missing"] == [
        "layer_23/width_16k/average_l0_75: in the registry (observed) but not on the hub "
        "(its near-duplicate average_l0_74 is there)"
    ]
    assert got["extra"] == [
        "layer_3/width_16k/average_l0_7: on the hub but not in the registry (--write adds it)"
    ]
    # 4 * (2*2048*16384 + 2*16384 + 2048) + npz headers, against 4 * (2*2304*16384 + 2*16384 + 2304)
    assert got["size"] == [
        "layer_0/width_16k/average_l0_13/params.npz: 268575960 bytes on the hub; the registry shapes "
        "(W_enc (2304, 16384), W_dec (16384, 2304), b_enc (16384,), b_dec (2304,), threshold (16384,)) "
        f"give {4 * (2 * 2304 * 16384 + 2 * 16384 + 2304)} bytes of float32 plus at most 65536 of npz headers"
    ]
    assert got["stray"] == [
        "embedding/width_4k/.gitattributes: stray file (ignored)",
        "layer_21/width_16k/average_l0_70/README.md: stray file (ignored)",
    ]
    assert got["confirmed"] == [
        f"layer_12/width_131k/average_l0_{v}: status is expected but it is on the hub (--write: observed)"
        for v in sorted(["12", "20", "36", "67", "129", "264"])
    ]
    assert set(got) == {"missing", "extra", "size", "stray", "confirmed"}


def test_gs1_size_check_needs_shapes_flag(no_network: None) -> None:
    assert "size" not in findings("google/gemma-scope-2b-pt-res")


def test_gs2_faults(no_network: None) -> None:
    got = findings("google/gemma-scope-2-270m-pt", shapes=True, links=ReplayLinks(FIXTURES))
    assert got["missing"] == [
        "mlp_out_all/layer_3_width_262k_l0_big: in the registry (observed) but not on the hub"
    ]
    assert got["missing-file"] == [
        "crosscoder/layer_5_9_12_15_width_1m_l0_big/params_layer_3.safetensors: missing on the hub (the folder exists)"
    ]
    assert got["extra"] == [
        "clt/width_524k_l0_big: on the hub but not in the registry "
        "(add it to clt.folders by hand (width, width_per_layer, l0 from its config.json))",
        "resid_post/layer_9_width_262k_l0_medium_seed_2: on the hub but not in the registry "
        "(--write adds it to resid_post.extra_folders)",
    ]
    assert got["shape"] == [
        "resid_post/layer_9_width_16k_l0_medium/params.safetensors: w_dec is (16384, 512) on the hub, "
        "the registry says (16384, 640)",
        "transcoder_all/layer_2_width_16k_l0_small_affine/params.safetensors: tensor affine_skip_connection "
        "(640, 640) is missing from the header",
    ]
    assert got["neuronpedia"] == [
        "resid_post/layer_9_width_65k_l0_medium: Neuronpedia id gemma-3-270m/9-gemmascope-2-res-65k has no "
        f"feature 0 ({NP}/gemma-3-270m/9-gemmascope-2-res-65k/0 -> 404)"
    ]
    assert got["stray"] == ["resid_post/notes.txt: stray file (ignored)"]
    # the whole transcoder/ grid (72) but the 2 already observed, and the CLT only seen in third-party code
    assert len(got["confirmed"]) == 71
    assert sum(m.startswith("transcoder/") for m in got["confirmed"]) == 70
    assert [m for m in got["confirmed"] if m.startswith("clt/")] == [
        "clt/width_262k_l0_medium_affine: status is expected but it is on the hub (--write: observed)"
    ]
    assert set(got) == {"missing", "missing-file", "extra", "shape", "neuronpedia", "stray", "confirmed"}


def test_loose_attribution_graph_files_are_stray_not_errors(
    no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_check_hub(args(repo=["google/gemma-scope-2-27b-it"], shapes=True, neuronpedia=True)) == 0
    got = findings("google/gemma-scope-2-27b-it")
    assert got == {
        "stray": [
            f"transcoder_all/attribution_graph_width_262k_l0_small_affine_{i:02d}.json: stray file (ignored)"
            for i in range(10)
        ]
    }
    assert "listing covers crosscoder/, transcoder_all/layer_0_" in capsys.readouterr().out


def test_neuronpedia_4b_it_transcoder_spelling_is_tolerated(no_network: None) -> None:
    got = findings("google/gemma-scope-2-4b-it", shapes=True, links=ReplayLinks(FIXTURES))
    assert got == {
        "np-alias": [
            "transcoder_all/layer_0_width_262k_l0_small_affine: Neuronpedia id "
            "gemma-3-4b-it/0-gemmascope-2-transcoder-262k answers only as gemma-3-4b-it/0-gemmascope-transcoder-262k"
        ]
    }


def test_exit_codes(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_check_hub(args(repo=["gemma-scope-2b-pt-res"])) == 1
    assert cli_check_hub(args(repo=["gemma-scope-2b-pt-rez"])) == 2
    assert "Did you mean: gemma-scope-2b-pt-res" in capsys.readouterr().err
    # no recording of this repo: the listing fails, nothing can be compared
    assert cli_check_hub(args(repo=["gemma-scope-9b-it-res"])) == 2
    assert (
        "ERROR no-listing: could not list google/gemma-scope-9b-it-res: KeyError" in capsys.readouterr().out
    )


def _changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    a, b = old.splitlines(), new.splitlines()
    return [x for x in a if x not in b], [x for x in b if x not in a]


def test_write_updates_yaml_in_place(
    reg_copy: Path, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {
        n: (reg_copy / n).read_text() for n in ("gemma-scope-2b-pt-res.yaml", "gemma-scope-2-270m-pt.yaml")
    }
    rc = cli_check_hub(
        args(repo=["gemma-scope-2b-pt-res", "gemma-scope-2-270m-pt"], write=True, registry_dir=str(reg_copy))
    )
    out = capsys.readouterr().out
    assert rc == 1  # the missing folders and the hand-only CLT remain
    assert "write: the edited registry compiles and validates" in out
    gone, added = _changed_lines(
        before["gemma-scope-2b-pt-res.yaml"], (reg_copy / "gemma-scope-2b-pt-res.yaml").read_text()
    )
    assert gone == [
        "status_exceptions:",
        "  layer_12/width_131k: expected   # in SAELens since PR #408 and downloaded by third-party code, but no hub tree page seen",
        "  layer_3: {width_16k: [14, 28, 59, 142, 315], width_65k: [13, 23, 42, 89, 193]}",
    ]
    assert added == ["  layer_3: {width_16k: [7, 14, 28, 59, 142, 315], width_65k: [13, 23, 42, 89, 193]}"]
    gone, added = _changed_lines(
        before["gemma-scope-2-270m-pt.yaml"], (reg_copy / "gemma-scope-2-270m-pt.yaml").read_text()
    )
    assert gone == [
        "    status: expected",
        '    evidence: "announced grid only"',
        "    status_exceptions:",
        "      layer_9_width_16k_l0_small_affine: observed   # SAELens 6.54.12 (listing generated from the hub, 2025-12-19)",
        "      layer_15_width_262k_l0_big_affine: observed   # SAELens 6.54.12 (listing generated from the hub, 2025-12-19)",
        "        status: expected",
        '        evidence: "folder name used in public third-party code (gemma-scope-2.md §1.2)"',
    ]
    assert added[0] == "      - layer_9_width_262k_l0_medium_seed_2"
    assert added[1].startswith('    evidence: "hub listing (gemmascope check-hub, ')
    assert added[1].endswith('; was expected: announced grid only"')
    # the CLT seen only in third-party code so far (its new "status: observed" line is not new text)
    assert len(added) == 3 and added[2].endswith(
        '; was expected: folder name used in public third-party code (gemma-scope-2.md §1.2)"'
    )
    # a second run finds nothing left to write and no confirmations
    got = findings("google/gemma-scope-2-270m-pt", directory=reg_copy)
    assert "confirmed" not in got and len(got["extra"]) == 1
    got = findings("google/gemma-scope-2b-pt-res", directory=reg_copy)
    assert set(got) == {"missing", "stray"}
    idx = C.build_index(reg_copy)["releases"]
    recs = {r["sae_id"]: r for r in idx["gemma-scope-2-270m-pt-transcoders"]}
    assert {r["status"] for r in recs.values()} == {"observed"}
    assert "layer_3/width_16k/average_l0_7" in {r["sae_id"] for r in idx["gemma-scope-2b-pt-res"]}


def _variant(tmp_path: Path, repo: str, drop: tuple[str, ...] = (), add: list[list] | None = None) -> Path:
    rec = json.loads((FIXTURES / fixture_name(repo)).read_text())
    rec["files"] = [f for f in rec["files"] if not f[0].startswith(drop)] + (add or [])
    d = tmp_path / "replay"
    d.mkdir(exist_ok=True)
    (d / fixture_name(repo)).write_text(json.dumps(rec))
    return d


def test_write_partial_confirmation_adds_exceptions(reg_copy: Path, tmp_path: Path, no_network: None) -> None:
    replay = _variant(
        tmp_path, "google/gemma-scope-2-270m-pt", drop=("transcoder/layer_5_", "transcoder/layer_9_")
    )
    assert (
        cli_check_hub(
            args(repo=["gemma-scope-2-270m-pt"], write=True, replay=str(replay), registry_dir=str(reg_copy))
        )
        == 1
    )
    doc = yaml.safe_load((reg_copy / "gemma-scope-2-270m-pt.yaml").read_text())["families"]["transcoder"]
    assert doc["status"] == "expected"
    exc = doc["status_exceptions"]
    assert sorted(k for k, v in exc.items() if v == "observed") == sorted(
        [
            f"layer_{L}_width_{w}_l0_{s}{a}"
            for L in (12, 15)
            for w in ("16k", "65k", "262k")
            for s in ("small", "medium", "big")
            for a in ("", "_affine")
        ]
        + ["layer_9_width_16k_l0_small_affine"]
    )
    got = findings("google/gemma-scope-2-270m-pt", replay=replay, directory=reg_copy)
    assert "confirmed" not in got
    assert len(got["expected-absent"]) == 35  # layers 5 and 9 of the grid, less the one already observed


def test_write_new_gs1_layer_and_width(reg_copy: Path, tmp_path: Path, no_network: None) -> None:
    replay = _variant(
        tmp_path,
        "google/gemma-scope-27b-pt-res",
        add=[
            ["layer_22/width_16k/average_l0_40/params.npz", None],
            ["layer_40/width_131k/average_l0_50/params.npz", None],
            ["layer_40/width_131k/average_l0_9/params.npz", None],
        ],
    )
    assert (
        cli_check_hub(
            args(repo=["gemma-scope-27b-pt-res"], write=True, replay=str(replay), registry_dir=str(reg_copy))
        )
        == 0
    )
    text = (reg_copy / "gemma-scope-27b-pt-res.yaml").read_text()
    assert text.endswith(
        "folders:\n"
        "  layer_10: {width_131k: [15, 24, 37, 64, 106, 200]}\n"
        "  layer_22: {width_16k: [40], width_131k: [20, 31, 48, 82, 150, 290]}\n"
        "  layer_34: {width_131k: [21, 38, 72, 155, 333, 785]}\n"
        "  layer_40: {width_131k: [9, 50]}\n"
    )


def test_write_multilayer_folder_status(reg_copy: Path, no_network: None) -> None:
    p = reg_copy / "gemma-scope-2-27b-it.yaml"
    text = p.read_text()
    old = '        status: observed\n        evidence: "hub list_repo_files dump of 2026-04-29"\n'
    i = text.index("name: layer_16_31_40_53_width_65k_l0_medium")
    j = text.index(old, i)
    p.write_text(text[:j] + old.replace("observed", "expected") + text[j + len(old) :])
    assert cli_check_hub(args(repo=["gemma-scope-2-27b-it"], write=True, registry_dir=str(reg_copy))) == 0
    new = p.read_text()
    gone, added = _changed_lines(text, new)
    assert added == [
        f'        evidence: "hub listing (gemmascope check-hub, {__import__("datetime").date.today().isoformat()}); '
        'was expected: hub list_repo_files dump of 2026-04-29"'
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in registry_dir().glob("*.yaml")))
def test_every_registry_file_round_trips_byte_for_byte(name: str) -> None:
    raw = (registry_dir() / name).read_bytes()
    assert yaml_rt.dump(yaml_rt.load(raw.decode("utf-8"))).encode("utf-8") == raw


def test_registry_has_twenty_yaml_files() -> None:
    assert len(list(registry_dir().glob("*.yaml"))) == 20


def test_yaml_rt_keeps_comments_and_refuses_wrong_results() -> None:
    text = "fam:\n  # a comment\n  status: expected   # why\n  extra:\n    - a   # first\n\n# tail\nnext: 1\n"
    doc = yaml_rt.load(text)
    yaml_rt.append_item(doc["fam"]["extra"], "b")
    yaml_rt.set_value(doc["fam"], "status", "observed")
    assert (
        yaml_rt.dump(doc)
        == "fam:\n  # a comment\n  status: observed   # why\n  extra:\n    - a   # first\n    - b\n\n# tail\nnext: 1\n"
    )
    yaml_rt.add_key(doc["fam"], "status_exceptions", yaml_rt.block_map({"layer_1": "expected"}))
    yaml_rt.add_key(doc["fam"]["status_exceptions"], "layer_2", "observed", comment="seen", indent=4)
    yaml_rt.delete_key(doc["fam"]["status_exceptions"], "layer_1")
    assert yaml_rt.dump(doc).endswith(
        "    - b\n  status_exceptions:\n    layer_2: observed   # seen\n\n# tail\nnext: 1\n"
    )
    yaml_rt.check_same(yaml_rt.dump(doc), doc)
    yaml_rt.delete_key(
        doc["fam"], "status_exceptions", tail=yaml_rt.delete_key(doc["fam"]["status_exceptions"], "layer_2")
    )
    assert yaml_rt.dump(doc).endswith("    - b\n\n# tail\nnext: 1\n")
    with pytest.raises(yaml_rt.YamlEditError):
        yaml_rt.check_same(yaml_rt.dump(doc), {**doc, "next": 2})


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.network
def test_live_hub_smallest_repo() -> None:
    if not _hub_reachable():
        pytest.skip("the Hugging Face hub is not reachable (offline or HF_HUB_OFFLINE set)")
    (rep,) = check_hub(["google/gemma-scope-27b-pt-res"], LiveHub(), shapes=True)
    assert rep.n_files >= 18, rep.findings
    assert not [f for f in rep.findings if f.code in ("no-listing", "missing", "size")], rep.findings


def test_report_collapses_long_confirmations_and_unrecorded_answers(
    no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_check_hub(args(repo=["gemma-scope-2-270m-pt"])) == 1
    out = capsys.readouterr().out
    assert (
        "  NOTE  confirmed: transcoder/: 70 folders with status expected are on the hub (--write: observed)"
        in out
    )
    assert "summary: 4 errors, 71 to confirm, 1 info in 1 repos" in out
    got = findings("google/gemma-scope-27b-pt-res", links=ReplayLinks(FIXTURES))
    assert got == {
        "neuronpedia": [
            "3 Neuronpedia ids have no recorded answer in the replay (e.g. gemma-2-27b/10-gemmascope-res-131k)"
        ]
    }


def test_confirmed_expected_entries_fail_until_written(
    reg_copy: Path, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    f = reg_copy / "gemma-scope-27b-pt-res.yaml"
    f.write_text(f.read_text().replace("\nstatus: observed\n", "\nstatus: expected\n", 1))
    assert cli_check_hub(args(repo=["gemma-scope-27b-pt-res"], registry_dir=str(reg_copy))) == 1
    assert "18 expected entries are on the hub; record them with --write" in capsys.readouterr().out
    assert cli_check_hub(args(repo=["gemma-scope-27b-pt-res"], write=True, registry_dir=str(reg_copy))) == 0
    assert cli_check_hub(args(repo=["gemma-scope-27b-pt-res"], registry_dir=str(reg_copy))) == 0
    assert "\nstatus: observed\n" in f.read_text()
