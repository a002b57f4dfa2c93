"""Validate the YAML registry: a JSON schema (unknown keys rejected) plus semantic rules.

Every violation names the file, the entry and the rule. ``gemmascope validate`` prints them and exits
non-zero when there is any.

Example:
    >>> from sae_lens_gemmascope.maintainers.validate import validate
    >>> validate()
    []
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._paths import registry_dir
from . import compile_index as C
from .strict_yaml import RegistryFileError

# Documented Gemma Scope 2 L0 targets (gemma-scope-2.md §3): (lo, hi) per label.
GS2_L0_TARGETS: dict[str, dict[str, list[int]]] = {
    "all": {"small": [10, 20], "big": [60, 120]},
    "subset": {"small": [10, 20], "medium": [30, 60], "big": [60, 150]},
}
MULTILAYER_L0 = {"medium": 50, "big": 150}
MAX_ENTRIES_PER_FILE = 10_000  # the largest file today enumerates about 1,450
MAX_ENTRIES = 40_000  # the whole registry today: about 12,500

RULES: dict[str, str] = {
    "schema": "the file matches registry/schema.json (no unknown keys, right types)",
    "unique-ids": "every (release, sae_id) and every release name is defined once",
    "path": "the hub path follows from site/layer/width/L0 and is a clean relative path",
    "dims": "layers exist in the model and d_in/width agree with the model facts and site",
    "l0-formula": "GS2 L0 targets follow the documented formula and constants",
    "it-model": "an -it repo is trained on an IT model and a -pt repo on a PT model",
    "neuronpedia": "Neuronpedia ids are unique per artifact and produced by the one rule",
    "canonical": "each canonical alias is the L0 closest to 100",
    "references": "exceptions, ties, sweeps and extra folders name things that exist",
    "model": "the repo's model and saelens_model agree with models.yaml",
    "size": f"a file enumerates at most {10_000:,} artifacts and the registry {40_000:,} (validation time is bounded)",
    "yaml": "each file is plain UTF-8 YAML within the size limits: no duplicate keys, anchors, aliases, "
    "control characters or non-finite numbers",
}

_CLEAN_PATH = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9_./-]+$")


@dataclass(frozen=True)
class Violation:
    """One broken rule: which file, which entry, which rule, and what is wrong."""

    file: str
    entry: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.entry}: [{self.rule}] {self.message}"


def _schema() -> dict[str, Any]:
    with open(registry_dir() / "schema.json", encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def _schema_violations(fname: str, doc: Any, schema: dict[str, Any], ref: str) -> list[Violation]:
    from jsonschema import Draft202012Validator

    sub = {"$defs": schema["$defs"], "$ref": f"#/$defs/{ref}"}
    out = []
    for err in sorted(Draft202012Validator(sub).iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(Violation(fname, where, "schema", err.message))
    return out


def _semantic(
    models: dict[str, Any], docs: dict[str, dict[str, Any]], per_file: dict[str, list[dict[str, Any]]]
) -> list[Violation]:
    v: list[Violation] = []
    seen_ids: dict[tuple[str, str], str] = {}
    release_file: dict[str, str] = {}
    np_owner: dict[str, tuple[str, str]] = {}
    for fname, entries in per_file.items():
        doc = docs[fname]
        model = models.get(doc.get("model", ""))
        if model is None:
            v.append(Violation(fname, "model", "model", f"model {doc.get('model')!r} is not in models.yaml"))
            continue
        repo = doc["repo_id"]
        # model / IT rules
        is_it_repo = repo.endswith("-it") or "-it-" in repo
        if is_it_repo != (model["variant"] == "it"):
            v.append(
                Violation(
                    fname, "model", "it-model", f"{repo} is trained on {doc['model']} ({model['variant']})"
                )
            )
        want_sl = model["hf_id"] if doc["generation"] == 2 else doc["model"]
        if doc.get("saelens_model") != want_sl:
            v.append(
                Violation(
                    fname, "saelens_model", "model", f"is {doc.get('saelens_model')!r}, expected {want_sl!r}"
                )
            )
        size = re.search(r"gemma-scope-(?:2-)?([0-9]+[mb])", repo)
        if size and f"-{size.group(1)}" not in model["hf_id"]:
            v.append(
                Violation(
                    fname, "model", "model", f"{repo} names size {size.group(1)}, model is {model['hf_id']}"
                )
            )
        for e in entries:
            key = (e["release"], e["sae_id"])
            where = f"{e['release']}/{e['sae_id']}"
            if key in seen_ids:
                v.append(Violation(fname, where, "unique-ids", f"also defined in {seen_ids[key]}"))
            seen_ids[key] = fname
            if release_file.setdefault(e["release"], fname) != fname:
                v.append(
                    Violation(
                        fname, where, "unique-ids", f"release also defined in {release_file[e['release']]}"
                    )
                )
            v.extend(_check_entry(fname, where, e, model))
            npid = e.get("neuronpedia_id")
            if npid:
                owner = (e["repo_id"], e["path"])
                if np_owner.setdefault(npid, owner) != owner:
                    v.append(
                        Violation(fname, where, "neuronpedia", f"id {npid} also used by {np_owner[npid][1]}")
                    )
        v.extend(_check_doc_refs(fname, doc, model, entries))
    return v


def _check_entry(fname: str, where: str, e: dict[str, Any], model: dict[str, Any]) -> list[Violation]:
    v = []
    path = e["path"]
    if not _CLEAN_PATH.match(path) or path.startswith("/") or ".." in path.split("/"):
        v.append(Violation(fname, where, "path", f"{path!r} is not a clean relative path"))
    n_layers = int(model["n_layers"])
    for layer in e["layers"]:
        if not 0 <= layer < n_layers:
            v.append(Violation(fname, where, "dims", f"layer {layer} outside 0..{n_layers - 1}"))
    want_d_in = (
        int(model["n_heads"]) * int(model["d_head"]) if e["site"] == "attn_out" else int(model["d_model"])
    )
    if e["d_in"] != want_d_in:
        v.append(Violation(fname, where, "dims", f"d_in {e['d_in']} != {want_d_in} for site {e['site']}"))
    if e["generation"] == 1:
        lk = "embedding" if e["layer"] is None else f"layer_{e['layer']}"
        want = f"{lk}/width_{e['width']}/average_l0_{e['l0']}"
        if path != want:
            v.append(
                Violation(fname, where, "path", f"path {path!r} != {want!r} derived from layer/width/L0")
            )
        if C.WIDTH_TOKENS.get(e["width"]) != e["d_sae"]:
            v.append(Violation(fname, where, "dims", f"width {e['width']} != d_sae {e['d_sae']}"))
    elif e["kind"] in ("clt", "crosscoder"):
        n = len(e["layers"])
        if e["d_sae"] != e["d_sae_per_layer"] * n:
            v.append(
                Violation(
                    fname, where, "dims", f"width {e['d_sae']} != {n} files x {e['d_sae_per_layer']} per file"
                )
            )
        if e["kind"] == "crosscoder":
            want_layers = list(model.get("subset_layers") or [])
            m = re.match(r"layer_([\d_]+?)_width", e["sae_id"])
            name_layers = [int(x) for x in m.group(1).split("_")] if m else []
            if e["layers"] != want_layers or name_layers != want_layers:
                v.append(
                    Violation(
                        fname,
                        where,
                        "dims",
                        f"layers {e['layers']} / name {name_layers} != model subset {want_layers}",
                    )
                )
            if C.WIDTH_TOKENS.get(e["width"] or "") != e["d_sae"]:
                v.append(Violation(fname, where, "dims", f"width token {e['width']} != width {e['d_sae']}"))
        elif e["kind"] == "clt" and len(e["layers"]) != n_layers:
            v.append(Violation(fname, where, "dims", f"a CLT covers all {n_layers} layers"))
        if e["l0"] != MULTILAYER_L0.get(e["l0_label"]):
            v.append(
                Violation(
                    fname,
                    where,
                    "l0-formula",
                    f"l0 {e['l0']} != documented {e['l0_label']} target {MULTILAYER_L0.get(e['l0_label'])}",
                )
            )
    else:
        folder = path.split("/", 1)[1]
        m = C.GS2_FOLDER_RE.match(folder)
        if (
            m is None
            or int(m["layer"]) != e["layer"]
            or m["width"] != e["width"]
            or m["label"] != e["l0_label"]
        ):
            v.append(
                Violation(fname, where, "path", f"folder {folder!r} disagrees with layer/width/L0 label")
            )
        elif bool(m["affine"]) != e["affine"]:
            v.append(
                Violation(fname, where, "path", f"folder {folder!r} disagrees with affine={e['affine']}")
            )
        if C.WIDTH_TOKENS.get(e["width"]) != e["d_sae"]:
            v.append(Violation(fname, where, "dims", f"width {e['width']} != d_sae {e['d_sae']}"))
    return v


def _check_doc_refs(
    fname: str, doc: dict[str, Any], model: dict[str, Any], entries: list[dict[str, Any]]
) -> list[Violation]:
    v: list[Violation] = []
    if doc["generation"] == 1:
        folders = doc["folders"]
        pairs = {f"{lk}/{wk}": l0s for lk, ws in folders.items() for wk, l0s in ws.items()}
        for lw, l0s in pairs.items():
            if len(set(l0s)) != len(l0s):
                v.append(Violation(fname, lw, "unique-ids", f"duplicate L0 values {l0s}"))
        for lw in doc.get("status_exceptions") or {}:
            if lw not in pairs and lw.rsplit("/", 1)[0] not in pairs:
                v.append(Violation(fname, f"status_exceptions/{lw}", "references", "names no folder"))
        ties = doc.get("canonical_ties") or {}
        for lw, pick in ties.items():
            l0s = pairs.get(lw)
            if l0s is None or pick not in l0s:
                v.append(
                    Violation(fname, f"canonical_ties/{lw}", "references", f"{pick} is not an L0 of {lw}")
                )
            elif abs(pick - 100) != min(abs(x - 100) for x in l0s):
                v.append(
                    Violation(fname, f"canonical_ties/{lw}", "canonical", f"{pick} is not closest to 100")
                )
        for e in entries:
            if e["alias_of"] is not None:
                lw = e["sae_id"].rsplit("/", 1)[0]
                best = min(abs(x - 100) for x in pairs[lw])
                if abs(e["l0"] - 100) != best:
                    v.append(
                        Violation(
                            fname,
                            f"{e['release']}/{e['sae_id']}",
                            "canonical",
                            f"L0 {e['l0']} is not closest to 100",
                        )
                    )
        np_cfg = doc.get("neuronpedia") or {}
        for lw in np_cfg.get("canonical_without_id") or []:
            if lw not in pairs:
                v.append(
                    Violation(
                        fname, f"neuronpedia/canonical_without_id/{lw}", "references", "names no folder"
                    )
                )
        for lw, l0s in (np_cfg.get("sweeps") or {}).items():
            if lw not in pairs or not set(l0s) <= set(pairs[lw]):
                v.append(
                    Violation(
                        fname, f"neuronpedia/sweeps/{lw}", "references", f"{l0s} are not all folders of {lw}"
                    )
                )
        return v
    for fam, f in doc["families"].items():
        if f["kind"] in ("clt", "crosscoder"):
            continue
        grid = GS2_L0_TARGETS[f["layers"]]
        if f["l0_targets"] != grid:
            v.append(
                Violation(
                    fname,
                    f"families/{fam}/l0_targets",
                    "l0-formula",
                    f"{f['l0_targets']} != documented {grid}",
                )
            )
        names = {e["path"].split("/", 1)[1] for e in entries if e["path"].startswith(fam + "/")}
        for name in f.get("status_exceptions") or {}:
            if name not in names:
                v.append(
                    Violation(
                        fname, f"families/{fam}/status_exceptions/{name}", "references", "names no folder"
                    )
                )
        extras = f.get("extra_folders") or []
        if len(set(extras)) != len(extras):
            v.append(Violation(fname, f"families/{fam}/extra_folders", "unique-ids", "duplicate folder"))
        np_cfg = f.get("neuronpedia") or {}
        for w in np_cfg.get("widths") or {}:
            if w not in f["widths"]:
                v.append(
                    Violation(
                        fname, f"families/{fam}/neuronpedia/widths/{w}", "references", "width not in grid"
                    )
                )
    return v


def entry_count(doc: dict[str, Any], models: dict[str, Any]) -> int:
    """How many entries a schema-valid file enumerates, counted without enumerating them.

    >>> entry_count({"generation": 1, "folders": {"layer_0": {"width_16k": [10, 20]}}}, {})
    2
    """
    if doc["generation"] == 1:
        return sum(len(l0s) for ws in doc["folders"].values() for l0s in ws.values())
    m = models.get(doc["model"]) or {}
    n = 0
    for f in doc["families"].values():
        if f["kind"] in ("clt", "crosscoder"):
            n += len(f["folders"])
            continue
        layers = int(m.get("n_layers", 0)) if f["layers"] == "all" else len(m.get("subset_layers") or [])
        n += layers * len(f["widths"]) * len(f["l0_targets"]) * len(f.get("affine") or [False])
        n += len(f.get("extra_folders") or [])
    return n


def _size_violations(models: dict[str, Any], docs: dict[str, dict[str, Any]]) -> list[Violation]:
    out, total = [], 0
    for fname, doc in docs.items():
        try:
            n = entry_count(doc, models)
        except (KeyError, TypeError, AttributeError, ValueError):
            continue  # malformed: the schema check names the problem
        total += n
        if n > MAX_ENTRIES_PER_FILE:
            out.append(
                Violation(
                    fname,
                    "(file)",
                    "size",
                    f"enumerates {n} artifacts, over the limit of {MAX_ENTRIES_PER_FILE}. "
                    "Check the folder lists and grids for runaway values",
                )
            )
    if total > MAX_ENTRIES and not out:
        out.append(
            Violation(
                "registry",
                "(all files)",
                "size",
                f"enumerates {total} artifacts, over the limit of {MAX_ENTRIES}. Remove the files that do not belong",
            )
        )
    return out


def validate(directory: Path | str | None = None) -> list[Violation]:
    """Validate every file of the registry directory (default: the shipped one)."""
    d = Path(directory) if directory is not None else registry_dir()
    schema = _schema()
    try:
        models, docs = C.load_yaml_docs(d)
    except RegistryFileError as err:  # the first file that is not plain YAML (see strict_yaml)
        where = f"line {err.line}" if err.line else "(file)"
        return [Violation(Path(err.file).name, where, "yaml", str(err))]
    out = _size_violations(models, docs)  # before the schema: its cost grows with the file
    if out:
        return out
    out = _schema_violations("models.yaml", models, schema, "models_file")
    ok_docs: dict[str, dict[str, Any]] = {}
    for fname, doc in docs.items():
        gen = doc.get("generation") if isinstance(doc, dict) else None
        errs = _schema_violations(fname, doc, schema, {1: "gs1", 2: "gs2"}.get(gen, "gs1"))  # type: ignore[arg-type]
        out.extend(errs)
        if not errs:
            ok_docs[fname] = doc
    if out:
        return out  # semantic rules assume well-formed files
    per_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for fname, doc in ok_docs.items():
        try:
            per_file[fname] = C.expand_all(models, {fname: doc})[fname]
        except (KeyError, ValueError, AttributeError) as exc:
            out.append(Violation(fname, "(expand)", "path", f"cannot enumerate: {exc}"))
    return out + _semantic(models, ok_docs, per_file)
