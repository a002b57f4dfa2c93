"""Compare the registry with what is on the Hugging Face hub: ``gemmascope check-hub``.

For every selected repo it lists the files on the hub and reports, as :class:`Finding` objects:

=================  ========  ===========================================================================
code               severity  meaning
=================  ========  ===========================================================================
``missing``        error     an ``observed`` registry entry has no folder on the hub
``missing-file``   error     the folder exists but a file the entry needs is not there
``extra``          error     a hub folder that the registry does not list (``--write`` adds GS1 L0s and
                             GS2 single-layer folders of known families)
``unparsed``       error     a weights file in a folder whose name follows no known pattern
``shape``          error     (``--shapes``) a safetensors header disagrees with ``Entry.tensor_shapes()``
``size``           error     (``--shapes``) a GS1 ``params.npz`` size disagrees with the shapes
``unreadable``     error     a header could not be read
``neuronpedia``    error     (``--neuronpedia``) a Neuronpedia id answers with no feature
``no-listing``     error     the repo could not be listed (network, auth, missing recording)
``confirmed``      note      an ``expected`` entry is on the hub: ``--write`` marks it ``observed``
``expected-absent`` info     an ``expected`` entry is still not on the hub (not a failure)
``stray``          info      a file that is no artifact (``.gitattributes`` in ``embedding/width_4k``,
                             loose ``attribution_graph_*.json``, a ``README.md`` in a folder, ...)
``np-alias``       info      a Neuronpedia id answers only under a known alternative spelling
=================  ========  ===========================================================================

The exit code of :func:`cli_check_hub` is 1 when any error remains or an ``expected`` entry was
found on the hub without ``--write`` (``confirmed``: the registry is too cautious, and a scheduled
check should stay red until someone records it), else 0. 2 means the command could not run
(unknown repo, bad replay directory).

The hub is reached through a small :class:`HubClient` protocol, so the same check runs on recorded
listings (:class:`ReplayHub`, ``--replay DIR``) in the tests.

GS1 ``params.npz`` files have no remote header; with ``--shapes`` their size from the tree listing
is compared with ``4 * (2 * d_in * d_sae + 2 * d_sae + d_in)`` bytes (five float32 arrays) plus at
most :data:`NPZ_SLACK` bytes of zip and ``.npy`` headers.

Example:
    >>> from pathlib import Path
    >>> fixtures = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hub"
    >>> reports = check_hub(["google/gemma-scope-27b-pt-res"], ReplayHub(fixtures))  # doctest: +SKIP
    >>> [str(f) for f in reports[0].findings]  # doctest: +SKIP
    []
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml.comments import CommentedMap

from .._paths import registry_dir as default_registry_dir
from ..errors import close_matches
from ..registry import Entry
from . import compile_index as C
from . import yaml_rt as R

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


# -- hub access ----------------------------------------------------------------------------------


class HubClient(Protocol):
    """What the check needs from the hub. ``size`` is None where the listing gives none."""

    def list_files(self, repo_id: str, revision: str | None = None) -> list[tuple[str, int | None]]: ...

    def safetensors_shapes(self, repo_id: str, path: str) -> dict[str, tuple[int, ...]]: ...


class LinkClient(Protocol):
    """What the Neuronpedia check needs: the HTTP status of a GET (404 also for an empty answer)."""

    def status(self, url: str) -> int: ...


class LiveHub:
    """The real hub, through ``huggingface_hub.HfApi`` (token from ``HF_TOKEN`` or the login cache)."""

    def __init__(self, revision: str | None = None) -> None:
        from huggingface_hub import HfApi

        self.api = HfApi()
        self.revision = revision

    def list_files(self, repo_id: str, revision: str | None = None) -> list[tuple[str, int | None]]:
        from huggingface_hub.hf_api import RepoFile

        tree = self.api.list_repo_tree(repo_id, recursive=True, revision=revision or self.revision)
        return [(f.path, f.size) for f in tree if isinstance(f, RepoFile)]

    def safetensors_shapes(self, repo_id: str, path: str) -> dict[str, tuple[int, ...]]:
        meta = self.api.parse_safetensors_file_metadata(repo_id, path, revision=self.revision)
        return {k: tuple(int(x) for x in v.shape) for k, v in meta.tensors.items()}


class LiveLinks:
    """HTTP GET with a timeout (urllib; Neuronpedia needs no token)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def status(self, url: str) -> int:
        req = urllib.request.Request(url, headers={"User-Agent": "sae-lens-gemmascope check-hub"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(4096).strip()
                return 404 if body in (b"", b"null", b"{}") else int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)


def fixture_name(repo_id: str) -> str:
    """The recording file of a repo: ``google/gemma-scope-2b-pt-res`` -> ``google__gemma-scope-2b-pt-res.json``."""
    return repo_id.replace("/", "__") + ".json"


class ReplayHub:
    """Recorded listings: one JSON file per repo (see ``tests/fixtures/hub/README.md``).

    A recording may cover only some path ``prefixes``; the check then skips registry entries outside
    them. Requests that were not recorded raise ``KeyError``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"replay directory {self.directory} does not exist")
        self._cache: dict[str, dict[str, Any]] = {}

    def _load(self, repo_id: str) -> dict[str, Any]:
        if repo_id not in self._cache:
            p = self.directory / fixture_name(repo_id)
            if not p.is_file():
                raise KeyError(f"no recording of {repo_id} in {self.directory} (expected {p.name})")
            self._cache[repo_id] = json.loads(p.read_text(encoding="utf-8"))
        return self._cache[repo_id]

    def list_files(self, repo_id: str, revision: str | None = None) -> list[tuple[str, int | None]]:
        return [(p, s) for p, s in self._load(repo_id)["files"]]

    def safetensors_shapes(self, repo_id: str, path: str) -> dict[str, tuple[int, ...]]:
        rec = self._load(repo_id).get("safetensors", {})
        if path not in rec:
            raise KeyError(f"no recorded header of {path}")
        return {k: tuple(v) for k, v in rec[path].items()}

    def prefixes(self, repo_id: str) -> list[str] | None:
        """The path prefixes the recording covers (None = the whole repo)."""
        return self._load(repo_id).get("prefixes")


class ReplayLinks:
    """Recorded Neuronpedia answers: ``neuronpedia.json`` = {url: status} in the replay directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        p = Path(directory) / "neuronpedia.json"
        self.answers: dict[str, int] = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    def status(self, url: str) -> int:
        if url not in self.answers:
            raise KeyError(f"no recorded answer for {url}")
        return int(self.answers[url])


def record(
    repo_ids: Iterable[str],
    out_dir: str | os.PathLike[str],
    client: HubClient | None = None,
    shapes: bool = False,
    prefixes: Sequence[str] | None = None,
) -> list[Path]:
    """Write recordings of the live hub (the format :class:`ReplayHub` reads). Needs the network."""
    client = client or LiveHub()
    out = []
    for repo_id in repo_ids:
        files = client.list_files(repo_id)
        if prefixes:
            files = [f for f in files if any(f[0].startswith(p) for p in prefixes)]
        rec: dict[str, Any] = {
            "repo_id": repo_id,
            "revision": "main",
            "prefixes": list(prefixes or []) or None,
        }
        rec["files"] = sorted(files)
        if shapes:
            rec["safetensors"] = {
                p: client.safetensors_shapes(repo_id, p)
                for p, _ in files
                if p.endswith(".safetensors") and not p.endswith("examples.safetensors")
            }
        out.append(write_recording(rec, Path(out_dir)))
    return out


def write_recording(rec: dict[str, Any], out_dir: Path) -> Path:
    """Write one recording, one file or header per line (small, reviewable diffs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["{"]
    for k in ("repo_id", "revision", "note", "prefixes"):
        if k in rec:
            lines.append(f"  {json.dumps(k)}: {json.dumps(rec[k])},")
    lines.append('  "files": [')
    lines.append(",\n".join(f"    {json.dumps([p, s])}" for p, s in rec["files"]))
    st = rec.get("safetensors") or {}
    lines.append("  ]" + ("," if st else ""))
    if st:
        lines.append('  "safetensors": {')
        lines.append(
            ",\n".join(f"    {json.dumps(p)}: {json.dumps(v, sort_keys=True)}" for p, v in sorted(st.items()))
        )
        lines.append("  }")
    lines.append("}")
    path = out_dir / fixture_name(rec["repo_id"])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- findings ------------------------------------------------------------------------------------


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
    out = []
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


def _collapse(findings: Sequence[Finding], limit: int = 8) -> list[str]:
    """Finding lines; more than ``limit`` ``confirmed`` notes in one family folder become one line."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        if f.code == "confirmed":
            groups.setdefault(f.path.split("/")[0], []).append(f)
    big = {k for k, v in groups.items() if len(v) > limit}
    out, done = [], set()
    for f in findings:
        top = f.path.split("/")[0]
        if f.code != "confirmed" or top not in big:
            out.append(str(f))
        elif top not in done:
            done.add(top)
            out.append(
                f"NOTE  confirmed: {top}/: {len(groups[top])} folders with status expected are on the hub "
                "(--write: observed)"
            )
    return out


def format_report(reports: Sequence[RepoReport], show_info: bool = True) -> str:
    """Human-readable report: one block per repo, then a summary line."""
    out = []
    for rep in reports:
        scope = f", listing covers {', '.join(rep.prefixes)}" if rep.prefixes else ""
        out.append(
            f"{rep.repo_id} ({rep.registry_file}): {rep.n_files} hub files, {rep.n_entries} registry entries{scope}"
        )
        shown = [f for f in rep.findings if show_info or f.severity != "info"]
        out.extend(f"  {line}" for line in _collapse(shown))
        quiet = []
        if rep.n_optional:
            quiet.append(f"{rep.n_optional} optional examples.safetensors")
        if rep.n_root:
            quiet.append(f"{rep.n_root} repo metadata files")
        if quiet:
            out.append(f"  (ignored: {', '.join(quiet)})")
        if not shown:
            out.append("  OK")
    n = {s: sum(1 for r in reports for f in r.findings if f.severity == s) for s in ("error", "note", "info")}
    out.append(
        f"summary: {n['error']} errors, {n['note']} to confirm, {n['info']} info in {len(reports)} repos"
    )
    return "\n".join(out)


# -- --write ---------------------------------------------------------------------------------------


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
                plain = C.yaml.safe_load(R.dump(doc))
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


def _entry_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Side effects worth a review: existing ids whose fields other than status changed."""
    out = []
    for rel, ents in after["releases"].items():
        old = {e["sae_id"]: e for e in before["releases"].get(rel, [])}
        for e in ents:
            o = old.get(e["sae_id"])
            if o is None:
                continue
            changed = [k for k in e if k not in ("status",) and e.get(k) != o.get(k)]
            if changed:
                out.append(
                    f"review: {rel} {e['sae_id']}: "
                    + ", ".join(f"{k} {o.get(k)!r} -> {e.get(k)!r}" for k in changed)
                )
    return out


def validate_dir(directory: Path) -> list[str]:
    """Validate the registry in ``directory`` (``validate.validate`` when present, else compile it)."""
    try:
        from .validate import validate
    except ImportError:
        C.build_index(directory)
        return []
    return [str(v) for v in validate(directory)]


def cli_check_hub(args: Any) -> int:
    """``gemmascope check-hub``: print the report, optionally ``--write`` the fixes. Returns the exit code."""
    directory = Path(getattr(args, "registry_dir", None) or default_registry_dir())
    replay = getattr(args, "replay", None)
    try:
        hub: HubClient = ReplayHub(replay) if replay else LiveHub()
        links: LinkClient | None = None
        if getattr(args, "neuronpedia", False):
            links = ReplayLinks(replay) if replay else LiveLinks()
        reports = check_hub(
            getattr(args, "repo", None),
            hub,
            shapes=bool(getattr(args, "shapes", False)),
            links=links,
            directory=directory,
        )
    except (KeyError, FileNotFoundError) as err:
        print(f"check-hub: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    print(format_report(reports))
    errors = [f for r in reports for f in r.errors]
    pending = [f for r in reports for f in r.findings if f.code == "confirmed"]
    if getattr(args, "write", False):
        pending = []  # write_fixes records every confirmed entry as observed
        before = C.build_index(directory)
        log = write_fixes(reports, directory)
        if not log:
            print("write: nothing to change")
        else:
            print(f"write: {len(log)} changes")
            for line in log:
                print(f"  {line}")
            after = C.build_index(directory)
            for line in _entry_diff(before, after):
                print(f"  {line}")
            if directory.resolve() == default_registry_dir().resolve():
                C.compile_index(directory=directory)
                print("write: recompiled sae_lens_gemmascope/_index")
            problems = validate_dir(directory)
            for p in problems:
                print(f"  validate: {p}")
            if problems:
                return 1
            print("write: the edited registry compiles and validates")
            fixed = {(r.repo_id, f"{a}/{b}/average_l0_{c}") for r in reports for a, b, c in r.new_gs1}
            fixed |= {(r.repo_id, f"{a}/{b}") for r in reports for a, b in r.new_gs2}
            errors = [f for f in errors if not (f.code == "extra" and (f.repo_id, f.path) in fixed)]
    if any(f.code == "no-listing" for f in errors):
        return 2 if len(errors) == sum(f.code == "no-listing" for f in errors) else 1
    if pending and not errors:
        print(f"check-hub: {len(pending)} expected entries are on the hub; record them with --write")
    return 1 if errors or pending else 0
