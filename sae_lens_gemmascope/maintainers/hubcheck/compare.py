"""Compare one repo's hub listing with its registry entries: :class:`Finding` objects per repo.

The finding codes and what they mean are listed in the package docstring
(:mod:`sae_lens_gemmascope.maintainers.hubcheck`).

Example:
    >>> str(Finding("google/x", "missing", "layer_1", "layer_1: not on the hub"))
    'ERROR missing: layer_1: not on the hub'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._paths import registry_dir as default_registry_dir
from ...errors import close_matches
from ...registry import Entry
from .. import compile_index as C
from .listing import HubClient, LinkClient

NPZ_SLACK = 64 * 1024
NEURONPEDIA_API = "https://www.neuronpedia.org/api/feature"
ERROR_CODES = frozenset(
    {
        "missing",
        "missing-file",
        "extra",
        "unparsed",
        "shape",
        "size",
        "unreadable",
        "neuronpedia",
        "no-listing",
    }
)
NOTE_CODES = frozenset({"confirmed"})
OPTIONAL_FILES = frozenset({"examples.safetensors"})
ROOT_FILES = frozenset({"README.md", "LICENSE", ".gitattributes", "RENAME.md"})

GS1_PATH_RE = re.compile(
    r"^(?P<layer>layer_\d+|embedding)/(?P<width>width_[0-9a-z]+)/average_l0_(?P<l0>\d+)$"
)
LAYER_PARAMS_RE = re.compile(r"^params_layer_(\d+)\.safetensors$")


@dataclass(frozen=True)
class Finding:
    """One disagreement (or note) between the registry and the hub."""

    repo_id: str
    code: str
    path: str
    message: str

    @property
    def severity(self) -> str:
        if self.code in ERROR_CODES:
            return "error"
        return "note" if self.code in NOTE_CODES else "info"

    def __str__(self) -> str:
        return f"{self.severity.upper():5} {self.code}: {self.message}"


@dataclass
class RepoReport:
    """Everything found for one repo, plus what ``--write`` can fix."""

    repo_id: str
    registry_file: str
    n_files: int = 0
    n_entries: int = 0
    prefixes: list[str] | None = None
    findings: list[Finding] = field(default_factory=list)
    confirmed: list[Entry] = field(default_factory=list)
    new_gs1: list[tuple[str, str, int]] = field(default_factory=list)  # (layer key, width key, l0)
    new_gs2: list[tuple[str, str]] = field(default_factory=list)  # (family, folder name)
    n_optional: int = 0
    n_root: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def add(self, code: str, path: str, message: str) -> None:
        self.findings.append(Finding(self.repo_id, code, path, message))


def registry_entries(directory: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[Entry]]]:
    """(repo_id -> (file name, document), repo_id -> non-alias entries) read from YAML in ``directory``."""
    models, docs = C.load_yaml_docs(directory)
    per_file = C.expand_all(models, docs)
    by_repo: dict[str, list[Entry]] = {}
    repo_docs: dict[str, dict[str, Any]] = {}
    for fname, doc in docs.items():
        repo_docs[doc["repo_id"]] = {"file": fname, "doc": doc}
        by_repo[doc["repo_id"]] = [Entry.from_record(r) for r in per_file[fname] if r["alias_of"] is None]
    return repo_docs, by_repo


def resolve_repos(wanted: Sequence[str] | None, known: Iterable[str]) -> list[str]:
    """Turn ``--repo`` arguments (repo id, repo name or registry file name) into repo ids."""
    known = sorted(known)
    if not wanted:
        return known
    out: list[str] = []
    for w in wanted:
        w2 = w.removesuffix(".yaml")
        hits = [r for r in known if w2 in (r, r.split("/", 1)[1])]
        if not hits:
            near = close_matches(w2, [r.split("/", 1)[1] for r in known])
            hint = f" Did you mean: {', '.join(near)}?" if near else ""
            raise KeyError(
                f"{w!r} is not a repo of the registry.{hint} Known repos: `gemmascope list --repos`."
            )
        out.extend(h for h in hits if h not in out)
    return out


def _in_scope(path: str, prefixes: list[str] | None) -> bool:
    return prefixes is None or any((path + "/").startswith(p) or path.startswith(p) for p in prefixes)


def _gs1_siblings(path: str, hub_folders: dict[str, dict[str, int | None]]) -> list[str]:
    m = GS1_PATH_RE.match(path)
    if not m:
        return []
    l0 = int(m["l0"])
    base = f"{m['layer']}/{m['width']}/average_l0_"
    return [f"average_l0_{v}" for v in (l0 - 1, l0 + 1) if base + str(v) in hub_folders]


def _classify(
    rep: RepoReport, doc: dict[str, Any], files: list[tuple[str, int | None]]
) -> dict[str, dict[str, int | None]]:
    """Group hub files into artifact folders; strays and unparsable names become findings."""
    folders: dict[str, dict[str, int | None]] = {}
    gen = doc["generation"]
    multilayer_fams = {
        fam for fam, f in (doc.get("families") or {}).items() if f["kind"] in ("clt", "crosscoder")
    } | {"clt", "crosscoder"}
    for path, size in files:
        parts = path.split("/")
        if len(parts) == 1:
            if path in ROOT_FILES:
                rep.n_root += 1
            else:
                rep.add("stray", path, f"{path}: stray file at the repo root (ignored)")
            continue
        if gen == 1:
            folder, fname = "/".join(parts[:3]), "/".join(parts[3:])
            ok = len(parts) >= 4 and GS1_PATH_RE.match(folder) is not None
        else:
            folder, fname = "/".join(parts[:2]), "/".join(parts[2:])
            name = parts[1]
            if parts[0] in multilayer_fams:
                ok = len(parts) == 3
            else:
                ok = len(parts) == 3 and C.GS2_FOLDER_RE.match(name) is not None
        if ok:
            folders.setdefault(folder, {})[fname] = size
            continue
        is_weights = path.endswith(("params.npz", ".safetensors"))
        if gen == 1 and "/canonical/" in path:
            rep.add(
                "stray", path, f"{path}: copy in a '/canonical' folder (such copies were deleted; ignored)"
            )
        elif is_weights and not path.endswith("examples.safetensors"):
            rep.add(
                "unparsed", path, f"{path}: weights in a folder whose name follows no Gemma Scope pattern"
            )
        else:
            rep.add("stray", path, f"{path}: stray file (ignored)")
    return folders


def _expected_files(e: Entry) -> list[str]:
    if e.is_multilayer:
        return ["config.json"] + [f"params_layer_{i}.safetensors" for i in range(len(e.layers))]
    return list(e.files)


def _fmt_shape(s: Sequence[int]) -> str:
    return "(" + ", ".join(str(x) for x in s) + ("," if len(s) == 1 else "") + ")"


def npz_payload_bytes(e: Entry) -> int:
    """float32 bytes of the five arrays of a GS1 ``params.npz``."""
    n = 0
    for shape in e.tensor_shapes().values():
        k = 1
        for s in shape:
            k *= s
        n += k
    return 4 * n


def _check_present(
    rep: RepoReport,
    e: Entry,
    files: dict[str, int | None],
    shapes: bool,
    header_jobs: list[tuple[Entry, str]],
) -> None:
    need = _expected_files(e)
    missing = [f for f in need if f not in files]
    for f in missing:
        rep.add("missing-file", f"{e.path}/{f}", f"{e.path}/{f}: missing on the hub (the folder exists)")
    for f in sorted(set(files) - set(need)):
        if f in OPTIONAL_FILES:
            rep.n_optional += 1
        elif LAYER_PARAMS_RE.match(f):
            rep.add(
                "extra",
                f"{e.path}/{f}",
                f"{e.path}/{f}: on the hub but the entry has {len(e.layers)} layers (files 0..{len(e.layers) - 1})",
            )
        else:
            rep.add("stray", f"{e.path}/{f}", f"{e.path}/{f}: stray file (ignored)")
    if e.status == "expected" and not missing:
        rep.confirmed.append(e)
        rep.add("confirmed", e.path, f"{e.path}: status is expected but it is on the hub (--write: observed)")
    if not shapes:
        return
    if e.format == "gs1_npz":
        size = files.get("params.npz")
        if size is None:
            return
        want = npz_payload_bytes(e)
        if not 0 <= size - want <= NPZ_SLACK:
            shp = ", ".join(f"{k} {_fmt_shape(v)}" for k, v in e.tensor_shapes().items())
            rep.add(
                "size",
                f"{e.path}/params.npz",
                f"{e.path}/params.npz: {size} bytes on the hub; the registry shapes ({shp}) "
                f"give {want} bytes of float32 plus at most {NPZ_SLACK} of npz headers",
            )
        return
    for f in need:
        if f.endswith(".safetensors") and f not in missing:
            header_jobs.append((e, f"{e.path}/{f}"))


def _compare_shapes(rep: RepoReport, e: Entry, path: str, got: dict[str, tuple[int, ...]]) -> None:
    want = e.tensor_shapes()
    for k in sorted(set(want) | set(got)):
        if k not in got:
            rep.add("shape", path, f"{path}: tensor {k} {_fmt_shape(want[k])} is missing from the header")
        elif k not in want:
            rep.add("shape", path, f"{path}: unexpected tensor {k} {_fmt_shape(got[k])} in the header")
        elif tuple(got[k]) != tuple(want[k]):
            rep.add(
                "shape",
                path,
                f"{path}: {k} is {_fmt_shape(got[k])} on the hub, the registry says {_fmt_shape(want[k])}",
            )


def _neuronpedia_urls(np_id: str) -> list[str]:
    """The API URL of latent 0, then known alternative spellings (4b-it graph-server transcoders)."""
    urls = [f"{NEURONPEDIA_API}/{np_id}/0"]
    if "-gemmascope-2-transcoder-" in np_id:
        urls.append(
            f"{NEURONPEDIA_API}/{np_id.replace('-gemmascope-2-transcoder-', '-gemmascope-transcoder-')}/0"
        )
    return urls


def _check_neuronpedia(rep: RepoReport, entries: list[Entry], links: LinkClient) -> None:
    seen: set[str] = set()
    unrecorded: list[str] = []
    for e in entries:
        if not e.neuronpedia_id or e.neuronpedia_id in seen:
            continue
        seen.add(e.neuronpedia_id)
        urls = _neuronpedia_urls(e.neuronpedia_id)
        answers: list[str] = []
        ok = None
        for url in urls:
            try:
                st = links.status(url)
            except KeyError:  # a replay without this answer: reported once below
                unrecorded.append(e.neuronpedia_id)
                ok = ""
                break
            except Exception as err:  # noqa: BLE001 - any transport error is reported, not raised
                answers.append(f"{url} -> {type(err).__name__}")
                continue
            answers.append(f"{url} -> {st}")
            if st == 200:
                ok = url
                break
        if ok in (urls[0], ""):
            continue
        if ok is not None:
            rep.add(
                "np-alias",
                e.path,
                f"{e.path}: Neuronpedia id {e.neuronpedia_id} answers only as {ok.removeprefix(NEURONPEDIA_API + '/').removesuffix('/0')}",
            )
        else:
            rep.add(
                "neuronpedia",
                e.path,
                f"{e.path}: Neuronpedia id {e.neuronpedia_id} has no feature 0 ({'; '.join(answers)})",
            )
    if unrecorded:
        rep.add(
            "neuronpedia",
            "",
            f"{len(unrecorded)} Neuronpedia ids have no recorded answer in the replay (e.g. {unrecorded[0]})",
        )


def check_repo(
    repo_id: str,
    registry_file: str,
    doc: dict[str, Any],
    entries: list[Entry],
    hub: HubClient,
    shapes: bool = False,
    links: LinkClient | None = None,
    revision: str | None = None,
) -> RepoReport:
    """Check one repo; see the module docstring for the findings."""
    rep = RepoReport(repo_id, registry_file)
    try:
        files = hub.list_files(repo_id, revision)
    except Exception as err:  # noqa: BLE001 - network, auth and missing recordings all end up here
        rep.add("no-listing", "", f"could not list {repo_id}: {type(err).__name__}: {err}")
        return rep
    get_prefixes = getattr(hub, "prefixes", None)
    rep.prefixes = get_prefixes(repo_id) if callable(get_prefixes) else None
    rep.n_files = len(files)
    hub_folders = _classify(rep, doc, files)
    entries = [e for e in entries if _in_scope(e.path, rep.prefixes)]
    rep.n_entries = len(entries)
    by_path = {e.path: e for e in entries}
    header_jobs: list[tuple[Entry, str]] = []
    for e in entries:
        if e.path in hub_folders:
            _check_present(rep, e, hub_folders[e.path], shapes, header_jobs)
        elif e.status == "expected":
            rep.add("expected-absent", e.path, f"{e.path}: expected, still not on the hub")
        else:
            sib = _gs1_siblings(e.path, hub_folders) if doc["generation"] == 1 else []
            note = f" (its near-duplicate {', '.join(sib)} is there)" if sib else ""
            rep.add("missing", e.path, f"{e.path}: in the registry (observed) but not on the hub{note}")
    families = doc.get("families") or {}
    for folder in sorted(set(hub_folders) - set(by_path)):
        if doc["generation"] == 1:
            m = GS1_PATH_RE.match(folder)
            assert m is not None
            rep.new_gs1.append((m["layer"], m["width"], int(m["l0"])))
            how = "--write adds it"
        else:
            fam, name = folder.split("/", 1)
            f = families.get(fam)
            if f is not None and f["kind"] not in ("clt", "crosscoder"):
                rep.new_gs2.append((fam, name))
                how = f"--write adds it to {fam}.extra_folders"
            elif f is not None:
                how = f"add it to {fam}.folders by hand (width, width_per_layer, l0 from its config.json)"
            else:
                how = f"the registry has no family {fam!r}: add one by hand"
        rep.add("extra", folder, f"{folder}: on the hub but not in the registry ({how})")
    if header_jobs:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda job: _read_header(hub, repo_id, job[1]), header_jobs))
        for (e, path), got in zip(header_jobs, results, strict=True):
            if isinstance(got, Exception):
                rep.add("unreadable", path, f"{path}: header not readable ({type(got).__name__}: {got})")
            else:
                _compare_shapes(rep, e, path, got)
    if links is not None:
        _check_neuronpedia(rep, entries, links)
    order = {"error": 0, "note": 1, "info": 2}
    rep.findings.sort(key=lambda f: (order[f.severity], f.code, f.path))
    return rep


def _read_header(hub: HubClient, repo_id: str, path: str) -> dict[str, tuple[int, ...]] | Exception:
    try:
        return hub.safetensors_shapes(repo_id, path)
    except Exception as err:  # noqa: BLE001
        return err


def check_hub(
    repos: Sequence[str] | None,
    hub: HubClient,
    shapes: bool = False,
    links: LinkClient | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> list[RepoReport]:
    """Check the selected repos (all when ``repos`` is empty) of the registry in ``directory``."""
    d = Path(directory) if directory else default_registry_dir()
    repo_docs, by_repo = registry_entries(d)
    return [
        check_repo(r, repo_docs[r]["file"], repo_docs[r]["doc"], by_repo[r], hub, shapes=shapes, links=links)
        for r in resolve_repos(repos, repo_docs)
    ]
