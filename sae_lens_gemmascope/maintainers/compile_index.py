"""Expand the hand-written YAML registry into one flat record per artifact, and write the index.

The YAML files are compact (GS1: layer -> width -> L0 list; GS2: grids plus explicit exceptions).
This module is the only place that turns them into enumerable entries. ``compile_index`` writes
``sae_lens_gemmascope/_index/`` (a small manifest plus one JSON shard per release), which the
runtime reads instead of YAML so that ``import sae_lens_gemmascope`` and a lookup stay fast.

Run ``gemmascope compile`` after editing ``registry/``; a test fails when the two drift.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .._paths import INDEX_DIR, registry_dir
from . import strict_yaml

INDEX_VERSION = 1

WIDTH_TOKENS: dict[str, int] = {
    "4k": 4096,
    "16k": 16384,
    "32k": 32768,
    "65k": 65536,
    "131k": 131072,
    "262k": 262144,
    "524k": 524288,
    "1m": 1048576,
}

GS2_FOLDER_RE = re.compile(
    r"^layer_(?P<layer>\d+)_width_(?P<width>[0-9a-z]+?)_l0_(?P<label>small|medium|big)"
    r"(?P<affine>_affine)?(?P<seed>_seed_\d+)?$"
)


def hook_sites(site: str, kind: str, generation: int) -> tuple[str, str]:
    """Map a registry site to the hook-table sites of the artifact's input and output."""
    if kind in ("transcoder", "skip_transcoder", "clt"):
        return ("gs1_transcoder_in" if generation == 1 else "gs2_transcoder_in", "transcoder_out")
    return (site, site)


def l0_target(lo: float, hi: float, layer: int, n_layers: int) -> int:
    """The documented Gemma Scope 2 L0 target: ramps linearly over the first third of layers."""
    return math.floor(lo + (hi - lo) * min(1.0, layer / (n_layers / 3)))


def canonical_l0(values: list[int]) -> int:
    """The L0 closest to 100; a tie goes to the larger L0 (as in SAELens' 9b-pt-att layer 27)."""
    return min(values, key=lambda v: (abs(v - 100), -v))


#: Bytes per feature of an ``examples.safetensors``: K = 1000 examples x (f32 activation, i64 seq id,
#: i32 position, f32 logit effect) + T = 10 x (i32 + f32) top and 10 bottom logit tokens + one f64
#: frequency (gemma-scope-2.md §2.3). Plus 4 bytes per corpus token. For a 4b 16k SAE with a
#: 236963 x 512 corpus this gives 815.8 MB, the 816 MB a third-party note reports.
EXAMPLES_BYTES_PER_FEATURE = 1000 * (4 + 8 + 4 + 4) + 2 * 10 * (4 + 4) + 8


def examples_facts(spec: dict[str, Any] | None, d_sae: int, generation: int) -> dict[str, Any]:
    """``examples`` (observed / expected / absent / unknown) and ``examples_bytes`` (an estimate where the
    corpus shape is known, else None) of one folder, from its family's ``examples`` field."""
    if generation == 1:  # Gemma Scope 1 folders hold params.npz only
        return {"examples": "absent", "examples_bytes": None}
    if not spec:
        return {"examples": "unknown", "examples_bytes": None}
    corpus = spec.get("corpus")
    size = None
    if corpus:
        size = d_sae * EXAMPLES_BYTES_PER_FEATURE + int(corpus[0]) * int(corpus[1]) * 4
    return {"examples": spec["status"], "examples_bytes": size}


def load_yaml_docs(directory: Path | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read ``models.yaml`` and every repo file. Returns (models, {file name: document}).

    Files are read strictly (:mod:`.strict_yaml`): duplicate keys, anchors, aliases, control
    characters, non-UTF-8 bytes and oversized files raise a ``RegistryValidationError`` that names
    the file and line.
    """
    d = directory or registry_dir()
    paths = sorted(d.glob("*.yaml"))
    strict_yaml.check_total_size(paths)
    budget = strict_yaml.NodeBudget()
    models = strict_yaml.load_file(d / "models.yaml", budget)
    docs: dict[str, dict[str, Any]] = {}
    for path in paths:
        if path.name != "models.yaml":
            docs[path.name] = strict_yaml.load_file(path, budget)
    return models, docs


def _attn_width(m: dict[str, Any]) -> int:
    return int(m["n_heads"]) * int(m["d_head"])


def _d_in(site: str, m: dict[str, Any]) -> int:
    return _attn_width(m) if site == "attn_out" else int(m["d_model"])


def _base(doc: dict[str, Any], models: dict[str, Any], release: str) -> dict[str, Any]:
    m = models[doc["model"]]
    return {
        "release": release,
        "repo_id": doc["repo_id"],
        "model": doc["model"],
        "hf_model_id": m["hf_id"],
        "generation": doc["generation"],
        "format": doc["format"],
    }


def expand_gs1(doc: dict[str, Any], models: dict[str, Any]) -> list[dict[str, Any]]:
    """Enumerate a Gemma Scope 1 repo file (plus its canonical aliases)."""
    m = models[doc["model"]]
    np_cfg = doc.get("neuronpedia") or {}
    np_source = np_cfg.get("source")
    rule = np_cfg.get("rule")
    without_id = set(np_cfg.get("canonical_without_id") or [])
    sweeps = {k: set(v) for k, v in (np_cfg.get("sweeps") or {}).items()}
    status_exc = doc.get("status_exceptions") or {}
    out: list[dict[str, Any]] = []
    aliases: list[dict[str, Any]] = []
    for layer_key, widths in doc["folders"].items():
        is_emb = layer_key == "embedding"
        layer = None if is_emb else int(layer_key.split("_")[1])
        site = "embedding" if is_emb else doc["site"]
        for width_key, l0s in widths.items():
            wtok = width_key.removeprefix("width_")
            d_sae = WIDTH_TOKENS[wtok]
            d_in = _d_in(site, m)
            lw = f"{layer_key}/{width_key}"
            canon = None
            if doc.get("canonical_release"):
                canon = (doc.get("canonical_ties") or {}).get(lw, canonical_l0(l0s))
            lowest = min(l0s)
            for l0 in l0s:
                path = f"{layer_key}/{width_key}/average_l0_{l0}"
                is_canon = l0 == canon
                np_id = None
                np_layer = "embedding" if is_emb else str(layer)
                plain = f"{m['neuronpedia_model']}/{np_layer}-{np_source}-{wtok}"
                # a listed sweep source wins in the full release; the canonical alias keeps the plain id
                canon_id = plain if (rule == "canonical" and is_canon and lw not in without_id) else None
                if l0 in sweeps.get(lw, ()):
                    np_id = f"{plain}__l0-{l0}"
                elif canon_id or (rule == "lowest_l0" and l0 == lowest):
                    np_id = plain
                kind = doc["kind"]
                hin, hout = hook_sites(site, kind, 1)
                e = {
                    **_base(doc, models, doc["release"]),
                    "sae_id": path,
                    "path": path,
                    "kind": kind,
                    "site": site,
                    "hook_site_in": hin,
                    "hook_site_out": hout,
                    "layer": layer,
                    "layers": [] if layer is None else [layer],
                    "width": wtok,
                    "d_sae": d_sae,
                    "d_in": d_in,
                    "d_out": d_in,
                    "l0": l0,
                    "l0_label": None,
                    "l0_is_target": False,
                    "canonical": is_canon,
                    "affine": False,
                    "neuronpedia_id": np_id,
                    "status": status_exc.get(lw, status_exc.get(path, doc["status"])),
                    "files": ["params.npz"],
                    "alias_of": None,
                    **examples_facts(None, d_sae, 1),
                }
                out.append(e)
                if is_canon:
                    aliases.append(
                        {
                            **e,
                            "release": doc["canonical_release"],
                            "sae_id": f"{layer_key}/{width_key}/canonical",
                            "alias_of": [doc["release"], path],
                            "neuronpedia_id": canon_id,
                        }
                    )
    return out + aliases


def expand_gs2(doc: dict[str, Any], models: dict[str, Any]) -> list[dict[str, Any]]:
    """Enumerate a Gemma Scope 2 repo file: single-layer grids, CLTs and crosscoders."""
    m = models[doc["model"]]
    n_layers = int(m["n_layers"])
    out: list[dict[str, Any]] = []
    for fam, f in doc["families"].items():
        release = f["release"]
        kind0 = f["kind"]
        site = f["site"]
        if kind0 in ("clt", "crosscoder"):
            out.extend(_expand_multilayer(doc, models, fam, f))
            continue
        layers = list(range(n_layers)) if f["layers"] == "all" else list(m["subset_layers"])
        affs = f.get("affine") or [False]
        targets = f["l0_targets"]
        names: list[str] = []
        for layer in layers:
            for w in f["widths"]:
                for label in targets:
                    for aff in affs:
                        names.append(f"layer_{layer}_width_{w}_l0_{label}" + ("_affine" if aff else ""))
        names += list(f.get("extra_folders") or [])
        np_cfg = f.get("neuronpedia") or {}
        exc = f.get("status_exceptions") or {}
        prefix = f.get("id_prefix", "")
        for name in names:
            mt = GS2_FOLDER_RE.match(name)
            if mt is None:
                raise ValueError(f"{doc['repo_id']}: folder {fam}/{name} does not follow the GS2 naming")
            layer = int(mt["layer"])
            wtok = mt["width"]
            label = mt["label"]
            aff = bool(mt["affine"])
            lo, hi = targets[label]
            kind = "skip_transcoder" if (kind0 == "transcoder" and aff) else kind0
            d_in = _d_in(site, m)
            np_id = None
            if np_cfg:
                sel = label + ("_affine" if aff else "")
                wl = (np_cfg.get("widths") or {}).get(wtok)
                if sel == np_cfg["l0"] and not mt["seed"] and wl is not None and (wl == "all" or layer in wl):
                    np_id = f"{m['neuronpedia_model']}/{layer}-{np_cfg['source']}-{wtok}"
            hin, hout = hook_sites(site, kind, 2)
            files = ["config.json", "params.safetensors"]
            out.append(
                {
                    **_base(doc, models, release),
                    "sae_id": prefix + name,
                    "path": f"{fam}/{name}",
                    "kind": kind,
                    "site": site,
                    "hook_site_in": hin,
                    "hook_site_out": hout,
                    "layer": layer,
                    "layers": [layer],
                    "width": wtok,
                    "d_sae": WIDTH_TOKENS[wtok],
                    "d_in": d_in,
                    "d_out": d_in,
                    "l0": l0_target(lo, hi, layer, n_layers),
                    "l0_label": label,
                    "l0_is_target": True,
                    "canonical": False,
                    "affine": aff,
                    "neuronpedia_id": np_id,
                    "status": exc.get(name, f["status"]),
                    "files": files,
                    "alias_of": None,
                    **examples_facts(f.get("examples"), WIDTH_TOKENS[wtok], 2),
                }
            )
    return out


def _expand_multilayer(
    doc: dict[str, Any], models: dict[str, Any], fam: str, f: dict[str, Any]
) -> list[dict[str, Any]]:
    m = models[doc["model"]]
    n_layers = int(m["n_layers"])
    out = []
    for fd in f["folders"]:
        name = fd["name"]
        kind = f["kind"]
        layers = list(range(n_layers)) if kind == "clt" else list(fd["layers"])
        wtok = re.search(r"width_([0-9a-z]+?)_l0", name)
        hin, hout = hook_sites(f["site"], kind, 2)
        out.append(
            {
                **_base(doc, models, f["release"]),
                "sae_id": name,
                "path": f"{fam}/{name}",
                "kind": kind,
                "site": f["site"],
                "hook_site_in": hin,
                "hook_site_out": hout,
                "layer": None,
                "layers": layers,
                "width": wtok.group(1) if wtok else None,
                "d_sae": int(fd["width"]),
                "d_sae_per_layer": int(fd["width_per_layer"]),
                "d_in": int(m["d_model"]),
                "d_out": int(m["d_model"]),
                "l0": fd["l0"],
                "l0_label": fd["l0_label"],
                "l0_is_target": True,
                "canonical": False,
                "affine": bool(fd.get("affine", False)),
                "neuronpedia_id": None,
                "status": fd["status"],
                "files": ["config.json"] + [f"params_layer_{i}.safetensors" for i in range(len(layers))],
                "alias_of": None,
                **examples_facts(f.get("examples"), int(fd["width"]), 2),
            }
        )
    return out


def expand_all(models: dict[str, Any], docs: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Expand every repo document. Returns {file name: entries}."""
    result: dict[str, list[dict[str, Any]]] = {}
    for fname, doc in docs.items():
        if doc.get("generation") == 1:
            result[fname] = expand_gs1(doc, models)
        else:
            result[fname] = expand_gs2(doc, models)
    return result


def build_index(directory: Path | None = None) -> dict[str, Any]:
    """Build the index in memory: {"manifest": ..., "releases": {release: [entries]}}."""
    models, docs = load_yaml_docs(directory)
    per_file = expand_all(models, docs)
    releases: dict[str, list[dict[str, Any]]] = {}
    meta: dict[str, dict[str, Any]] = {}
    repos: dict[str, list[str]] = {}
    for fname, entries in per_file.items():
        doc = docs[fname]
        for e in entries:
            rel = e["release"]
            releases.setdefault(rel, []).append(e)
            if rel not in meta:
                meta[rel] = {
                    "repo_id": e["repo_id"],
                    "model": e["model"],
                    "hf_model_id": e["hf_model_id"],
                    "saelens_model": doc.get("saelens_model", e["hf_model_id"]),
                    "generation": e["generation"],
                    "format": e["format"],
                    "registry_file": fname,
                    "canonical_aliases": e["alias_of"] is not None,
                    "kinds": [],
                    "sites": [],
                    "count": 0,
                }
                repos.setdefault(e["repo_id"], []).append(rel)
            mm = meta[rel]
            mm["count"] += 1
            if e["kind"] not in mm["kinds"]:
                mm["kinds"].append(e["kind"])
            if e["site"] not in mm["sites"]:
                mm["sites"].append(e["site"])
    manifest = {
        "version": INDEX_VERSION,
        "models": models,
        "releases": dict(sorted(meta.items())),
        "repos": {k: sorted(v) for k, v in sorted(repos.items())},
    }
    return {"manifest": manifest, "releases": releases}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def render_index(index: dict[str, Any]) -> dict[str, str]:
    """File name -> text, exactly as written to ``_index/``."""
    files = {"manifest.json": _dumps(index["manifest"])}
    for rel, entries in index["releases"].items():
        files[f"{rel}.json"] = _dumps(pack_shard(entries))
    return files


SHARD_COMMON = ("release", "repo_id", "model", "hf_model_id", "generation", "format")


def pack_shard(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Columnar form of one release: fields shared by every entry once, then one row per entry."""
    common = {k: entries[0][k] for k in SHARD_COMMON}
    for e in entries:
        assert all(e[k] == common[k] for k in SHARD_COMMON), e["sae_id"]
    columns = sorted({k for e in entries for k in e} - set(SHARD_COMMON))
    columns.remove("sae_id")
    columns.insert(0, "sae_id")
    rows = [[e.get(c) for c in columns] for e in entries]
    return {"common": common, "columns": columns, "rows": rows}


def compile_index(out_dir: Path | None = None, directory: Path | None = None) -> dict[str, str]:
    """Write the compiled index (removing stale shards). Returns what was written."""
    target = out_dir or INDEX_DIR
    target.mkdir(parents=True, exist_ok=True)
    files = render_index(build_index(directory))
    for old in target.glob("*.json"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (target / name).write_text(text, encoding="utf-8")
    return files


if __name__ == "__main__":  # pragma: no cover
    written = compile_index()
    print(f"wrote {len(written)} files to {INDEX_DIR}")
