"""Offline-first access to Gemma Scope files, through ``huggingface_hub`` only.

The local cache is always tried first, by a pure file-system lookup
(``huggingface_hub.try_to_load_from_cache``): a cached file is returned without opening a socket,
whether or not ``HF_HUB_OFFLINE`` is set. (``hf_hub_download(..., local_files_only=True)`` is not
enough: huggingface_hub 2.4 builds its user-agent header first, and that fetches
``/api/agent-harnesses`` from the hub once a day.) The hub is contacted only when the file is missing,
or when ``force_download=True``, and never when ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``.
Before a download, a short probe (``GEMMASCOPE_HUB_PROBE_TIMEOUT`` seconds, default 5) checks that
the endpoint answers at all, so an unreachable hub fails in seconds with a message that says what to
do, instead of huggingface_hub's minutes of retries. A cache entry that is not a regular file (a
directory, a FIFO, a device) is refused before it is opened, so no read can block on it.

A cached file is used as is even if the hub has a newer commit on ``main``: pass ``revision=`` (a
commit hash) for exact reproducibility, or ``force_download=True`` to refresh.

Example:
    >>> import tempfile
    >>> from sae_lens_gemmascope import registry
    >>> from sae_lens_gemmascope.hub import cached_file
    >>> e = registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    >>> cached_file(e, "params.safetensors", cache_dir=tempfile.mkdtemp()) is None
    True
"""

from __future__ import annotations

import os
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import (
    ArtifactNotCachedError,
    CacheEntryError,
    HubRequestError,
    RemoteFileNotFoundError,
)
from .registry import Entry

PROBE_TIMEOUT_S = 5.0
_probe_cache: dict[str, tuple[float, str | None]] = {}


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read live, so tests and late ``os.environ`` edits count)."""
    import huggingface_hub.constants as hfc

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(hfc.HF_HUB_OFFLINE) or env in ("1", "ON", "YES", "TRUE")


def endpoint() -> str:
    """The hub endpoint in use (``HF_ENDPOINT``, read live)."""
    import huggingface_hub.constants as hfc

    return (os.environ.get("HF_ENDPOINT") or hfc.ENDPOINT).rstrip("/")


def download_command(entry: Entry) -> str:
    """The CLI command that fetches ``entry`` (for error messages)."""
    sae_id = entry.sae_id if " " not in entry.sae_id else repr(entry.sae_id)
    return f"gemmascope download {entry.release} {sae_id}"


def _what(entry: Entry, filename: str) -> str:
    return f"{entry.release}/{entry.sae_id} (file {entry.repo_id}/{entry.path}/{filename})"


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(path: Path, entry: Entry, filename: str) -> Path | None:
    """``path`` if it is (a link to) a regular file, None if absent or a dangling link; else raise."""
    try:
        st = os.stat(path)  # follows the snapshot symlink to the blob
    except FileNotFoundError:
        return None  # dangling link (blob deleted): not cached; a download repairs it
    except OSError as err:
        raise CacheEntryError(
            f"Cannot inspect {path}, the cached copy of {_what(entry, filename)}: {err}. "
            "Check the cache's permissions, or delete the entry and download it again."
        ) from err
    if not stat.S_ISREG(st.st_mode):
        raise CacheEntryError(
            f"The Hugging Face cache entry {path} for {_what(entry, filename)} is {_kind_of(st.st_mode)}, "
            "not a regular file, so it is not read (a read could block forever). Expected a file; "
            f"delete it and run `{download_command(entry)}`."
        )
    return path


def _snapshot_path(
    entry: Entry, filename: str, revision: str | None, cache_dir: str | os.PathLike[str] | None
) -> Path | None:
    """Where ``filename`` of ``entry`` would be in the snapshot of ``revision`` (not checked)."""
    import huggingface_hub.constants as hfc
    from huggingface_hub.file_download import repo_folder_name

    root = Path(cache_dir or hfc.HF_HUB_CACHE) / repo_folder_name(repo_id=entry.repo_id, repo_type="model")
    rev = revision or "main"
    ref = root / "refs" / rev
    try:
        if stat.S_ISREG(os.stat(ref).st_mode):
            rev = ref.read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        pass
    return root / "snapshots" / rev / entry.path / filename


def cached_file(
    entry: Entry,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The cached path of ``<entry.path>/<filename>``, or None. Never touches the network.

    Raises :class:`CacheEntryError` when the cache holds something other than a regular file there.
    """
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        entry.repo_id,
        f"{entry.path}/{filename}",
        cache_dir=None if cache_dir is None else str(cache_dir),
        revision=revision,
    )
    if isinstance(found, str):
        return _check_regular(Path(found), entry, filename)
    snap = _snapshot_path(entry, filename, revision, cache_dir)
    if snap is not None and os.path.lexists(snap):
        return _check_regular(snap, entry, filename)
    return None


def probe_hub(timeout: float | None = None) -> str | None:
    """None when the hub endpoint answers an HTTP request within ``timeout`` s, else why not.

    Any HTTP status counts as an answer. The result is remembered for 30 s.
    """
    url = endpoint()
    now = time.monotonic()
    hit = _probe_cache.get(url)
    if hit is not None and now - hit[0] < 30:
        return hit[1]
    if timeout is None:
        timeout = float(os.environ.get("GEMMASCOPE_HUB_PROBE_TIMEOUT", PROBE_TIMEOUT_S))
    box: dict[str, str | None] = {}

    def ask() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/", method="HEAD"), timeout=timeout):
                box["why"] = None
        except urllib.error.HTTPError:
            box["why"] = None  # it answered
        except (urllib.error.URLError, OSError, ValueError) as err:
            box["why"] = f"{url} did not answer ({getattr(err, 'reason', err)}; waited at most {timeout:g} s)"

    # A thread bounds the name lookup too, which urllib's timeout does not cover.
    t = threading.Thread(target=ask, daemon=True, name="gemmascope-hub-probe")
    t.start()
    t.join(timeout + 1.0)
    why = (
        box["why"] if "why" in box else f"{url} did not answer within {timeout:g} s (name lookup or connect)"
    )
    _probe_cache[url] = (now, why)
    return why


def _unreachable_message(entry: Entry, filename: str, why: str) -> str:
    return (
        f"{_what(entry, filename)} is not in the local Hugging Face cache, and the hub cannot be "
        f"reached: {why}. To work offline, set HF_HUB_OFFLINE=1 (then only cached files are used); "
        f"to fetch it, run on a machine with network:\n    {download_command(entry)}\n"
        f"Size: {entry.size_bytes() / 1e9:.2f} GB."
    )


def fetch(
    entry: Entry,
    filename: str,
    *,
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Path of ``<entry.path>/<filename>``: from the cache if there, else downloaded (unless offline).

    Raises :class:`ArtifactNotCachedError` (a ``huggingface_hub`` ``LocalEntryNotFoundError``, with
    the ``gemmascope download`` command to run) when the file is not cached and the hub may not or
    cannot be reached; :class:`RemoteFileNotFoundError` when the hub has no such file;
    :class:`HubRequestError` for other hub errors; :class:`CacheEntryError` for a cache entry that
    is not a regular file.
    """
    offline = is_offline() if local_files_only is None else bool(local_files_only)
    repo_file = f"{entry.path}/{filename}"
    if not force_download:
        path = cached_file(entry, filename, revision=revision, cache_dir=cache_dir)
        if path is not None:
            return path
    if offline:
        why = "HF_HUB_OFFLINE=1 is set" if local_files_only is None else "local_files_only=True was passed"
        if force_download:
            raise ArtifactNotCachedError(
                f"force_download=True for {_what(entry, filename)} needs the Hugging Face hub, but {why}. "
                "Drop one of the two."
            )
        raise ArtifactNotCachedError(
            f"{entry.release}/{entry.sae_id} needs {entry.repo_id}/{repo_file}, which is not in the local "
            f"Hugging Face cache, and {why}. Download it while online with:\n    {download_command(entry)}\n"
            f"(or unset HF_HUB_OFFLINE and load again). Size: {entry.size_bytes() / 1e9:.2f} GB."
        )
    why_not = probe_hub()
    if why_not is not None:
        raise ArtifactNotCachedError(_unreachable_message(entry, filename, why_not))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
    )

    try:
        got = Path(
            hf_hub_download(
                entry.repo_id,
                repo_file,
                revision=revision,
                cache_dir=None if cache_dir is None else str(cache_dir),
                force_download=force_download,
            )
        )
    except RemoteEntryNotFoundError as exc:
        raise RemoteFileNotFoundError(
            f"The hub has no file {repo_file} in {entry.repo_id} ({entry.release}/{entry.sae_id}; registry "
            f"evidence: {entry.status}). Browse {entry.hub_url} to see what the folder holds, and report "
            "the registry entry."
        ) from exc
    except LocalEntryNotFoundError as exc:  # the hub did not answer usefully (timeouts, 5xx after retries)
        raise ArtifactNotCachedError(_unreachable_message(entry, filename, str(exc).split(".")[0])) from exc
    except HfHubHTTPError as exc:
        raise HubRequestError(
            f"Downloading {_what(entry, filename)} failed: {exc}. Nothing was stored as complete; run "
            f"`{download_command(entry)}` again later (huggingface_hub resumes partial files)."
        ) from exc
    except OSError as exc:  # disk full, permissions in the cache
        raise HubRequestError(
            f"Downloading {_what(entry, filename)} failed while writing the cache: {exc}. Free space or "
            f"fix the cache permissions, then run `{download_command(entry)}`."
        ) from exc
    checked = _check_regular(got, entry, filename)
    if checked is None:
        raise HubRequestError(
            f"huggingface_hub returned {got} for {_what(entry, filename)}, which does not exist."
        )
    return checked
