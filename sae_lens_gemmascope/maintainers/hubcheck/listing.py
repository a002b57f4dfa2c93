"""Hub access for ``gemmascope check-hub``: the live hub, recorded listings, and recording them.

The check reaches the hub through the two-method :class:`HubClient` protocol, so the same code runs
on recorded listings (:class:`ReplayHub`, ``--replay DIR``) in the tests; Neuronpedia answers go
through :class:`LinkClient` the same way.

Example:
    >>> fixture_name("google/gemma-scope-2b-pt-res")
    'google__gemma-scope-2b-pt-res.json'
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol


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
