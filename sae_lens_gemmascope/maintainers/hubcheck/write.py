"""``gemmascope check-hub --write``: record what the hub shows in the registry YAML, minimally.

Edits go through :mod:`..yaml_rt` (ruamel.yaml round trip), so comments, quotes and layout stay and
a change is a few lines: ``status: expected`` -> ``observed`` (whole family, or per folder in
``status_exceptions``), a new GS1 L0 in its ``layer_N: {width_W: [...]}`` line, a new GS2 folder in
``extra_folders``.

Example:
    >>> _gs1_key_order("embedding") < _gs1_key_order("layer_2") < _gs1_key_order("layer_10")
    True
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap

from .. import compile_index as C
from .. import yaml_rt as R
from .compare import RepoReport


def _today() -> str:
    return _dt.date.today().isoformat()


def _drop_exc(node: CommentedMap, key: str) -> None:
    exc = node["status_exceptions"]
    left = R.delete_key(exc, key)
    if not exc:
        R.delete_key(node, "status_exceptions", tail=left)


def _set_exc(node: CommentedMap, key: str, value: str, comment: str) -> None:
    exc = node.get("status_exceptions")
    if exc is None:
        indent = (R.indent_of(node) or 0) + 2
        exc = R.block_map({key: value})
        exc.yaml_add_eol_comment("# " + comment, key, column=indent + len(f"{key}: {value}") + 3)
        R.add_key(node, "status_exceptions", exc)
    elif key in exc:
        exc[key] = value
    else:
        R.add_key(exc, key, value, comment=comment)


def _observe(node: CommentedMap, evidence: str) -> None:
    """``status: expected`` -> observed; the evidence keeps what it said before."""
    R.set_value(node, "status", "observed")
    if "evidence" in node:
        R.set_value(node, "evidence", f"{evidence}; was expected: {node['evidence']}")


def _promote(node: CommentedMap, evidence: str) -> None:
    """``status: expected`` -> observed, evidence extended, every exception dropped."""
    _observe(node, evidence)
    for k in list(node.get("status_exceptions") or {}):
        _drop_exc(node, k)


def _gs2_status(
    node: CommentedMap, where: str, names: list[str], confirmed: set[str], evidence: str
) -> list[str]:
    """Mark ``confirmed`` folder names of one GS2 family observed (``names`` = all its folders)."""
    exc = dict(node.get("status_exceptions") or {})
    status = node["status"]
    if status == "expected" and all(exc.get(n, status) == "observed" or n in confirmed for n in names):
        _promote(node, evidence)
        return [f"{where}: status expected -> observed ({len(confirmed)} confirmed)"]
    log = []
    for n in sorted(confirmed):
        if exc.get(n) == "expected" and status == "observed":
            _drop_exc(node, n)
            log.append(f"{where}/{n}: dropped its 'expected' exception")
        elif exc.get(n, status) == "expected":
            _set_exc(node, n, "observed", evidence)
            log.append(f"{where}/{n}: status_exceptions -> observed")
    return log


def _gs1_status(doc: CommentedMap, confirmed: set[str], evidence: str) -> list[str]:
    """Mark ``confirmed`` GS1 folder paths observed. Exceptions are keyed 'layer/width' (which wins,
    as in ``compile_index.expand_gs1``) or by the full folder path."""
    groups = {
        f"{lk}/{wk}": [f"{lk}/{wk}/average_l0_{v}" for v in l0s]
        for lk, ws in doc["folders"].items()
        for wk, l0s in ws.items()
    }
    status = doc["status"]
    exc = dict(doc.get("status_exceptions") or {})

    def eff(lw: str, p: str) -> str:
        return str(exc.get(lw, exc.get(p, status)))

    if status == "expected" and all(
        eff(lw, p) == "observed" or p in confirmed for lw, ps in groups.items() for p in ps
    ):
        _promote(doc, evidence)
        return [f"status expected -> observed ({len(confirmed)} confirmed)"]
    log = []
    for lw, ps in groups.items():
        conf = [p for p in ps if p in confirmed]
        if not conf:
            continue
        if lw in exc and exc[lw] == "expected":
            _drop_exc(doc, lw)
            log.append(f"{lw}: dropped its 'expected' exception")
            for p in ps:
                if status == "observed" and p not in confirmed:
                    _set_exc(doc, p, "expected", "still not on the hub")
                    log.append(f"{p}: status_exceptions -> expected (the rest of {lw} was confirmed)")
                elif status == "expected" and p in confirmed:
                    _set_exc(doc, p, "observed", evidence)
                    log.append(f"{p}: status_exceptions -> observed")
            continue
        for p in conf:
            if exc.get(p) == "expected" and status == "observed":
                _drop_exc(doc, p)
                log.append(f"{p}: dropped its 'expected' exception")
            elif eff(lw, p) == "expected":
                _set_exc(doc, p, "observed", evidence)
                log.append(f"{p}: status_exceptions -> observed")
    return log


def _gs1_key_order(k: str) -> tuple[int, int]:
    return (-1, 0) if k == "embedding" else (int(k.split("_")[1]), 0)


def _width_order(k: str) -> int:
    return C.WIDTH_TOKENS.get(k.removeprefix("width_"), 1 << 40)


def _add_gs1_folder(folders: CommentedMap, layer: str, width: str, l0: int) -> None:
    """Add one L0 to ``folders`` (``layer_N: {width_W: [...]}``), keeping layers and widths sorted."""
    if layer not in folders:
        later = [k for k in folders if _gs1_key_order(k) > _gs1_key_order(layer)]
        before = min(later, key=_gs1_key_order) if later else None
        R.add_key(folders, layer, R.flow_map({width: [l0]}), before=before)
        return
    ws = folders[layer]
    if width in ws:
        values = sorted({*ws[width], l0})
        ws[width].clear()
        ws[width].extend(values)
        return
    pos = sum(1 for k in ws if _width_order(k) < _width_order(width))
    ws.insert(pos, width, R.flow_seq([l0]))


def plan_write(rep: RepoReport, text: str, evidence: str, models: dict[str, Any]) -> tuple[str, list[str]]:
    """The edited YAML text of ``rep.registry_file`` and a log of what changed.

    The edit is checked: the new text must parse to exactly the edited document.
    """
    doc = R.load(text)
    log: list[str] = []
    confirmed = {e.path for e in rep.confirmed}
    if doc["generation"] == 1:
        if confirmed:
            log += _gs1_status(doc, confirmed, evidence)
        for layer, width, l0 in sorted(
            rep.new_gs1, key=lambda t: (_gs1_key_order(t[0]), _width_order(t[1]), t[2])
        ):
            if width.removeprefix("width_") not in C.WIDTH_TOKENS:
                rep.new_gs1.remove((layer, width, l0))  # stays an error: not written
                log.append(
                    f"skipped {layer}/{width}/average_l0_{l0}: unknown width token "
                    "(add it to compile_index.WIDTH_TOKENS)"
                )
                continue
            _add_gs1_folder(doc["folders"], layer, width, l0)
            log.append(f"folders/{layer}/{width}: added average_l0_{l0}")
    else:
        fams = doc["families"]
        for fam, f in fams.items():
            if f["kind"] in ("clt", "crosscoder"):
                for fd in f["folders"]:
                    if fd["status"] == "expected" and f"{fam}/{fd['name']}" in confirmed:
                        _observe(fd, evidence)
                        log.append(f"{fam}/{fd['name']}: status expected -> observed")
                continue
            names = {p.split("/", 1)[1] for p in confirmed if p.startswith(fam + "/")}
            if names:
                plain = yaml.safe_load(R.dump(doc))
                one = {**plain, "families": {fam: plain["families"][fam]}}
                all_names = [r["path"].split("/", 1)[1] for r in C.expand_gs2(one, models)]
                log += _gs2_status(f, f"families/{fam}", all_names, names, evidence)
        for fam, name in sorted(rep.new_gs2):
            if "extra_folders" in fams[fam]:
                R.append_item(fams[fam]["extra_folders"], name)
            else:
                R.add_key(fams[fam], "extra_folders", R.block_seq([name]))
            log.append(f"{fam}/{name}: added to extra_folders")
    new_text = R.dump(doc)
    R.check_same(new_text, doc)
    return new_text, log


def write_fixes(
    reports: Sequence[RepoReport], directory: str | os.PathLike[str], evidence: str | None = None
) -> list[str]:
    """Apply ``--write`` to the YAML files in ``directory``; returns the change log."""
    d = Path(directory)
    evidence = evidence or f"hub listing (gemmascope check-hub, {_today()})"
    models, _ = C.load_yaml_docs(d)
    log: list[str] = []
    for rep in reports:
        if not (rep.confirmed or rep.new_gs1 or rep.new_gs2):
            continue
        p = d / rep.registry_file
        text = p.read_text(encoding="utf-8")
        new_text, changes = plan_write(rep, text, evidence, models)
        if new_text != text:
            p.write_text(new_text, encoding="utf-8")
            log += [f"{rep.registry_file}: {c}" for c in changes]
    return log
