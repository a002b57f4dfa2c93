"""Offline-first access to Gemma Scope files, through ``huggingface_hub`` only.

The local cache is always tried first (``local_files_only=True``: no socket is opened); the hub is
contacted only when the file is missing, or when ``force_download=True``, and never when
``HF_HUB_OFFLINE=1`` or ``local_files_only=True``. Downloads use ``hf_hub_download`` (progress bars,
resume, ``revision``). A cached file is used as is even if the hub has a newer commit on ``main``:
pass ``revision=`` (a commit hash) for exact reproducibility, or ``force_download=True`` to refresh.

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
from pathlib import Path

from .errors import ArtifactNotCachedError, GemmaScopeError
from .registry import Entry


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read live, so tests and late ``os.environ`` edits count)."""
    import huggingface_hub.constants as hfc

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(hfc.HF_HUB_OFFLINE) or env in ("1", "ON", "YES", "TRUE")


def download_command(entry: Entry) -> str:
    """The CLI command that fetches ``entry`` (for error messages)."""
    sae_id = entry.sae_id if " " not in entry.sae_id else repr(entry.sae_id)
    return f"gemmascope download {entry.release} {sae_id}"


def cached_file(
    entry: Entry,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The cached path of ``<entry.path>/<filename>``, or None. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        entry.repo_id, f"{entry.path}/{filename}", cache_dir=cache_dir, revision=revision
    )
    return Path(found) if isinstance(found, str) else None


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

    Raises :class:`ArtifactNotCachedError` (with the ``gemmascope download`` command to run) when the
    file is not cached and the hub may not or cannot be reached.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    offline = is_offline() if local_files_only is None else bool(local_files_only)
    repo_file = f"{entry.path}/{filename}"
    if not force_download:
        try:
            return Path(
                hf_hub_download(
                    entry.repo_id, repo_file, revision=revision, cache_dir=cache_dir, local_files_only=True
                )
            )
        except (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError):
            pass
    if offline:
        why = "HF_HUB_OFFLINE=1 is set" if local_files_only is None else "local_files_only=True was passed"
        if force_download:
            raise ArtifactNotCachedError(
                f"force_download=True needs the Hugging Face hub, but {why}. Drop one of the two."
            )
        raise ArtifactNotCachedError(
            f"{entry.release}/{entry.sae_id} needs {entry.repo_id}/{repo_file}, which is not in the local "
            f"Hugging Face cache, and {why}. Download it while online with:\n    {download_command(entry)}\n"
            f"(or unset HF_HUB_OFFLINE and load again). Size: {entry.size_bytes() / 1e9:.2f} GB."
        )
    try:
        return Path(
            hf_hub_download(
                entry.repo_id,
                repo_file,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
            )
        )
    except LocalEntryNotFoundError as exc:  # raised when the hub could not be reached
        raise ArtifactNotCachedError(
            f"Could not reach the Hugging Face hub to fetch {entry.repo_id}/{repo_file} "
            f"({entry.release}/{entry.sae_id}), and it is not cached. Check your connection, then run:\n"
            f"    {download_command(entry)}"
        ) from exc
    except EntryNotFoundError as exc:
        raise GemmaScopeError(
            f"The hub has no file {repo_file} in {entry.repo_id} (registry status: {entry.status}). "
            f"Browse {entry.hub_url} to see what the folder holds."
        ) from exc
    except HfHubHTTPError as exc:
        raise GemmaScopeError(f"Downloading {entry.repo_id}/{repo_file} failed: {exc}") from exc
