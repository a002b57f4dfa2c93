"""The registry: coverage, back-compat with SAELens 6.54.12, metadata fixes, lookups, drift."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sae_lens_gemmascope import registry
from sae_lens_gemmascope._paths import INDEX_DIR
from sae_lens_gemmascope.errors import UnknownReleaseError, UnknownSaeIdError
from sae_lens_gemmascope.maintainers import compile_index as _compile

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
# byte-exact gzip copies of REFERENCE's inventories (source and date in fixtures/reference/README.md)
REFERENCE_COPY = Path(__file__).resolve().parent / "fixtures" / "reference"
REFERENCE_SHA256 = {
    "gs1-inventory.json": "6cb31d657b2e13f25648e1660eb100f608f5a03d5b7340b65fe74392bdb39cb3",
    "gs2-inventory.json": "a42320dbb534b599b1f8ede7e8384199b9aed2242b650c119b3652ca2914fc36",
}


def _reference_bytes(name: str) -> bytes:
    return gzip.decompress((REFERENCE_COPY / f"{name}.gz").read_bytes())


def _reference(name: str) -> dict:
    return json.loads(_reference_bytes(name))


@pytest.mark.parametrize("name", sorted(REFERENCE_SHA256))
def test_reference_copies_are_exact(name: str) -> None:
    data = _reference_bytes(name)
    assert hashlib.sha256(data).hexdigest() == REFERENCE_SHA256[name]
    if (REFERENCE / name).exists():  # next to the shared reference: the copy is still current
        assert data == (REFERENCE / name).read_bytes()


def _saelens_yaml() -> dict:
    import sae_lens

    path = Path(sae_lens.__file__).parent / "pretrained_saes.yaml"
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="module")
def saelens_gs() -> dict:
    d = _saelens_yaml()
    return {k: v for k, v in d.items() if str(v.get("repo_id", "")).startswith("google/gemma-scope-")}


def test_counts_per_family() -> None:
    c: Counter[str] = Counter()
    for e in registry.iter_entries():
        if e.generation == 1:
            c["gs1"] += 1
            c["gs1_transcoders"] += e.kind == "transcoder"
        elif e.is_multilayer:
            c["multi"] += 1
        else:
            c["gs2"] += 1
    # the reference inventories' 2556 GS1 folders (152 transcoders) + 31 transcoders evidenced since
    assert c["gs1"] == 2556 + 31
    assert c["gs1_transcoders"] == 152 + 31
    assert c["gs2"] == 9504
    assert c["multi"] == 18


def test_counts_per_repo() -> None:
    per_repo = Counter(e.repo_id for e in registry.iter_entries())
    expected = {
        "google/gemma-scope-2b-pt-res": 316,
        "google/gemma-scope-2b-pt-mlp": 260,
        "google/gemma-scope-2b-pt-att": 260,
        "google/gemma-scope-9b-pt-res": 536,
        "google/gemma-scope-9b-pt-mlp": 492,
        "google/gemma-scope-9b-pt-att": 492,
        "google/gemma-scope-9b-it-res": 30,
        "google/gemma-scope-27b-pt-res": 18,
        "google/gemma-scope-2b-pt-transcoders": 183,
        # 270m: 18 layers; 72*3 + 144 + 52 + 36*2 + 72 (+ CLT/crosscoder)
        "google/gemma-scope-2-270m-pt": 72 * 3 + 144 + 52 + 72 + 72 + 3,
        "google/gemma-scope-2-270m-it": 72 * 3 + 144 + 52 + 72 + 72,
        "google/gemma-scope-2-1b-pt": 104 * 3 + 208 + 52 + 36 + 48 + 72 + 5,
        "google/gemma-scope-2-1b-it": 104 * 3 + 208 + 52 + 36 + 48 + 72 + 2,
        "google/gemma-scope-2-4b-pt": 136 * 3 + 272 + 52 + 72 + 72,
        "google/gemma-scope-2-4b-it": 136 * 3 + 272 + 52 + 72 + 72 + 1,
        "google/gemma-scope-2-12b-pt": 192 * 3 + 384 + 52 + 72 + 72,
        "google/gemma-scope-2-12b-it": 192 * 3 + 384 + 52 + 72 + 72,
        "google/gemma-scope-2-27b-pt": 248 * 3 + 496 + 52 + 72 + 72 + 1,
        "google/gemma-scope-2-27b-it": 248 * 3 + 496 + 52 + 72 + 72 + 6,
    }
    assert dict(per_repo) == expected


def test_every_reference_folder_is_enumerated() -> None:
    gs1 = _reference("gs1-inventory.json")["inventory"]
    want = set()
    for repo, layers in gs1.items():
        for lk, widths in layers.items():
            if lk.startswith("_"):
                continue
            for wk, l0s in widths.items():
                if wk.startswith("_"):
                    continue
                for l0 in l0s:
                    want.add((f"google/{repo}", f"{lk}/{wk}/average_l0_{l0}"))
    gs2 = _reference("gs2-inventory.json")["repos"]
    for repo, r in gs2.items():
        for fam, f in r["families"].items():
            if isinstance(f, dict):
                want |= {(repo, f"{fam}/{row[0]}") for row in f["rows"]}
            else:
                want |= {(repo, e["path"]) for e in f or [] if "?" not in e["path"]}
    have = {(e.repo_id, e.path) for e in registry.iter_entries()}
    assert want - have == set()
    # transcoder folders evidenced after the inventories were compiled (see the listing notes in the YAML)
    added = {
        12: [18, 60, 111, 204, 359, 604],
        16: [17, 87, 598],
        17: [20, 60, 112, 272, 481, 797, 1665],
        19: [19, 32, 53, 89, 194, 562, 882, 1259],
        20: [19],
        21: [22, 60, 102, 630, 988, 1411],
    }
    extra = {
        ("google/gemma-scope-2b-pt-transcoders", f"layer_{layer}/width_16k/average_l0_{l0}")
        for layer, l0s in added.items()
        for l0 in l0s
    }
    assert have - want == extra


def test_saelens_back_compat(saelens_gs: dict) -> None:
    """Every release/sae_id SAELens 6.54.12 defines for a Gemma Scope repo resolves to the same repo + path."""
    n = 0
    for rel, block in saelens_gs.items():
        for s in block["saes"]:
            e = registry.get(rel, s["id"])
            assert (e.repo_id, e.path) == (block["repo_id"], str(s["path"])), (rel, s["id"])
            n += 1
    assert n > 11_600


def test_gs2_l0_is_the_documented_formula() -> None:
    """Independent float64 re-implementation of the GS2 target formula, for every GS2 entry."""
    consts = {
        True: {"small": (10, 20), "big": (60, 120)},
        False: {"small": (10, 20), "medium": (30, 60), "big": (60, 150)},
    }
    n = 0
    for e in registry.iter_entries():
        if e.generation != 2 or e.is_multilayer:
            continue
        is_all = e.path.split("/")[0].endswith("_all")
        lo, hi = consts[is_all][e.l0_label]
        n_layers = e.model_facts.n_layers
        want = math.floor(lo + (hi - lo) * min(1.0, e.layer * 3.0 / n_layers))
        assert e.l0 == want, e
        n += 1
    assert n == 9504


def test_gs2_l0_matches_saelens_values(saelens_gs: dict) -> None:
    for rel, block in saelens_gs.items():
        if not rel.startswith("gemma-scope-2-"):
            continue
        for s in block["saes"]:
            assert registry.get(rel, s["id"]).l0 == s["l0"], (rel, s["id"])


def test_metadata_fixes_over_saelens(saelens_gs: dict) -> None:
    # 9b-it SAEs were trained on the IT model (SAELens says gemma-2-9b for the non-canonical release)
    assert saelens_gs["gemma-scope-9b-it-res"]["model"] == "gemma-2-9b"
    e = registry.get("gemma-scope-9b-it-res", "layer_20/width_16k/average_l0_91")
    assert e.hf_model_id == "google/gemma-2-9b-it"
    assert registry.release_info("gemma-scope-9b-it-res")["saelens_model"] == "gemma-2-9b-it"
    # stale l0 78 on the 524k canonical: the folder is average_l0_48
    stale = {s["id"]: s for s in saelens_gs["gemma-scope-9b-pt-res-canonical"]["saes"]}
    assert stale["layer_20/width_524k/canonical"].get("l0") == 78
    e = registry.get("gemma-scope-9b-pt-res-canonical", "layer_20/width_524k/canonical")
    assert (e.path, e.l0) == ("layer_20/width_524k/average_l0_48", 48)
    # canonical aliases SAELens lacks, by the closest-to-100 rule
    assert registry.get("gemma-scope-9b-pt-res-canonical", "layer_20/width_262k/canonical").l0 == 50
    assert registry.get("gemma-scope-2b-pt-res-canonical", "layer_12/width_131k/canonical").l0 == 129
    # wrong Neuronpedia ids in SAELens are not carried over
    wrong = {s["id"]: s.get("neuronpedia") for s in saelens_gs["gemma-scope-9b-pt-res"]["saes"]}
    assert wrong["layer_2/width_16k/average_l0_8"] == "gemma-2-9b/20-gemmascope-res-131k__l0-10"
    assert registry.get("gemma-scope-9b-pt-res", "layer_2/width_16k/average_l0_8").neuronpedia_id is None
    assert wrong["layer_20/width_131k/average_l0_114"] == "gemma-2-9b/20-gemmascope-res-131k__l0-12"
    assert (
        registry.get("gemma-scope-9b-pt-res", "layer_20/width_131k/average_l0_114").neuronpedia_id
        == "gemma-2-9b/20-gemmascope-res-131k"
    )
    # 270m has no -pt on the hub
    assert (
        registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium").hf_model_id
        == "google/gemma-3-270m"
    )


def test_neuronpedia_ids_match_saelens_where_saelens_is_right(saelens_gs: dict) -> None:
    bad = {
        ("gemma-scope-9b-pt-res", "layer_2/width_16k/average_l0_8"),
        ("gemma-scope-9b-pt-res", "layer_20/width_131k/average_l0_114"),
    }
    for rel, block in saelens_gs.items():
        for s in block["saes"]:
            if s.get("neuronpedia") and (rel, s["id"]) not in bad:
                assert registry.get(rel, s["id"]).neuronpedia_id == s["neuronpedia"], (rel, s["id"])


def test_neuronpedia_ids_unique_per_artifact() -> None:
    owner: dict[str, tuple[str, str]] = {}
    for e in registry.iter_entries(include_aliases=True):
        if e.neuronpedia_id:
            assert owner.setdefault(e.neuronpedia_id, (e.repo_id, e.path)) == (e.repo_id, e.path)


def test_canonical_is_closest_to_100() -> None:
    for e in registry.iter_entries(include_aliases=True):
        if e.alias_of is None:
            continue
        lw = e.sae_id.rsplit("/", 1)[0]
        rel = e.alias_of[0]
        siblings = [x.l0 for x in registry.entries(rel) if x.sae_id.startswith(lw + "/average_l0_")]
        assert abs(e.l0 - 100) == min(abs(x - 100) for x in siblings)
        assert registry.get(*e.alias_of).canonical


def test_multilayer_widths() -> None:
    clt = registry.get("gemma-scope-2-1b-pt-clt", "width_262k_l0_big")
    assert (clt.d_sae, clt.d_sae_per_layer, len(clt.layers)) == (262080, 10080, 26)
    assert clt.files[-1] == "params_layer_25.safetensors"
    cc = registry.get("gemma-scope-2-27b-it-crosscoder", "layer_16_31_40_53_width_65k_l0_medium")
    assert (cc.d_sae_per_layer, cc.layers, cc.l0) == (16384, (16, 31, 40, 53), 50)
    assert registry.get("gemma-scope-2-1b-pt-clt", "clt/width_262k_l0_big") == clt


def test_status_is_honest() -> None:
    assert registry.get("gemma-scope-2-27b-pt-att-all", "layer_0_width_16k_l0_small").status == "expected"
    assert (
        registry.get("gemma-scope-2-27b-pt-transcoders", "transcoder/layer_31_width_262k_l0_small").status
        == "observed"
    )
    assert (
        registry.get("gemma-scope-2-27b-pt-transcoders", "transcoder/layer_31_width_262k_l0_big").status
        == "expected"
    )
    assert (
        registry.get(
            "gemma-scope-2-270m-pt-transcoders", "transcoder/layer_9_width_16k_l0_small_affine"
        ).status
        == "observed"
    )
    assert (
        registry.get("gemma-scope-2-27b-pt-transcoders-all", "layer_4_width_16k_l0_small").status
        == "expected"
    )
    assert (
        registry.get("gemma-scope-2-27b-it-transcoders-all", "layer_4_width_16k_l0_small").status
        == "observed"
    )


def test_lookup_api_and_errors() -> None:
    e = registry.get("gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_262k_l0_medium")
    assert (e.kind, e.d_in, e.d_sae, e.l0, e.l0_label) == ("transcoder", 1152, 262144, 60, "medium")
    assert registry.get("gemma-scope-2-1b-pt-att-all", "layer_3_width_16k_l0_small").d_in == 1024
    assert registry.get("gemma-scope-2b-pt-att", "layer_3/width_16k/average_l0_117").d_in == 2048
    with pytest.raises(UnknownReleaseError, match="gemma-scope-2b-pt-res"):
        registry.get("gemma-scope-2b-pt-rez", "x")
    with pytest.raises(UnknownReleaseError, match="Its releases are: gemma-scope-2b-pt-res"):
        registry.get("google/gemma-scope-2b-pt-res", "x")
    with pytest.raises(UnknownSaeIdError, match="layer_20/width_16k/average_l0_71"):
        registry.get("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_70")
    hits = registry.find(model="google/gemma-3-4b-it", site="resid_post", layer=17, l0="medium")
    assert {h.width for h in hits} == {"16k", "65k", "262k", "1m"}
    near = registry.nearest(100, model="gemma-2-9b", site="mlp_out", layer=20, width="16k")
    assert near.l0 == 108


def test_compiled_index_is_fresh() -> None:
    want = _compile.render_index(_compile.build_index())
    have = {p.name: p.read_text(encoding="utf-8") for p in INDEX_DIR.glob("*.json")}
    assert sorted(want) == sorted(have)
    stale = [k for k in want if want[k] != have[k]]
    assert not stale, f"run `gemmascope compile`: stale {stale[:3]}"


def test_import_and_lookup_parse_no_yaml() -> None:
    code = (
        "import sys; sys.modules['yaml'] = None\n"
        "import sae_lens_gemmascope\n"
        "from sae_lens_gemmascope import registry\n"
        "print(registry.get('gemma-scope-2-1b-pt-res', 'layer_13_width_16k_l0_medium').l0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "60"
