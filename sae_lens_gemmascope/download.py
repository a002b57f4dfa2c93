"""Fetch Gemma Scope files into the Hugging Face cache ahead of offline use: ``gemmascope download``.

Everything goes through ``huggingface_hub.hf_hub_download`` (progress bars, resume, ``revision``,
``force_download``); files land in the standard cache, where :func:`sae_lens_gemmascope.load` and
``SAE.from_pretrained`` find them with ``HF_HUB_OFFLINE=1``.

Example:
    >>> from argparse import Namespace
    >>> args = Namespace(release="gemma-scope-2b-pt-res", sae_ids=["layer_20/width_16k/average_l0_71"],
    ...                  release_all=False, yes=False, revision=None, force_download=False,
    ...                  cache_dir=None, dry_run=True)
    >>> cli_download(args)
    would download 1 artifact(s), 0.30 GB: gemma-scope-2b-pt-res
      layer_20/width_16k/average_l0_71  params.npz
    0
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from . import registry
from .errors import DownloadIncompleteError, GemmaScopeError, InvalidArgumentError
from .registry import Entry

CONFIRM_ABOVE_BYTES = 10 * 10**9


def _entries(release: str, sae_ids: list[str] | None, all_ids: bool) -> list[Entry]:
    if all_ids:
        if sae_ids:
            raise InvalidArgumentError("Pass either SAE ids or --release-all, not both.")
        return list(registry.entries(release))
    if not sae_ids:
        raise InvalidArgumentError(
            f"Name at least one sae_id of {release!r} (e.g. {registry.sae_ids(release)[0]!r}), "
            "or pass --release-all / all_ids=True for the whole release."
        )
    return [registry.get(release, s) for s in sae_ids]


def _files(entry: Entry, include_examples: bool) -> list[str]:
    if entry.is_multilayer:
        files = [f"params_layer_{i}.safetensors" for i in range(len(entry.layers))] + ["config.json"]
    else:
        files = list(entry.files)
    if include_examples and entry.generation == 2 and not entry.is_multilayer and entry.examples != "absent":
        files.append("examples.safetensors")
    return files


def _optional(entry: Entry, filename: str) -> bool:
    """Files a load can do without: a single-layer SAE's ``config.json``, ``examples.safetensors``."""
    return filename == "examples.safetensors" or (filename == "config.json" and not entry.is_multilayer)


def download(
    release: str,
    sae_ids: list[str] | None = None,
    *,
    all_ids: bool = False,
    revision: str | None = None,
    force_download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    include_examples: bool = False,
) -> list[Path]:
    """Download the files of the given ids (or the whole release) and return their cached paths.

    Files already in the cache are not fetched again (unless ``force_download=True``). A single-layer
    SAE's ``config.json`` and ``examples.safetensors`` (large; only with ``include_examples=True``) may
    be absent from the hub: a definite "no such file" (HTTP 404) skips them. Every other failure,
    and any file a load needs that is not in the cache afterwards, raises
    :class:`~sae_lens_gemmascope.errors.DownloadIncompleteError` naming each missing file and why.
    """
    from .errors import ArtifactNotCachedError, HubRequestError, RemoteFileNotFoundError
    from .hub import cached_file, fetch, is_offline

    out: list[Path] = []
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()
    offline = is_offline()
    for e in _entries(release, sae_ids, all_ids):
        for f in _files(e, include_examples):
            key = (e.repo_id, f"{e.path}/{f}")
            if key in seen:
                continue
            seen.add(key)
            where = f"{e.repo_id}/{e.path}/{f} ({e.release}/{e.sae_id})"
            if offline:
                p = None if force_download else cached_file(e, f, revision=revision, cache_dir=cache_dir)
                if p is None and not _optional(e, f):
                    missing.append(f"{where}: not cached, and HF_HUB_OFFLINE=1 forbids the hub")
                elif p is not None:
                    out.append(p)
                continue
            try:
                p = fetch(
                    e,
                    f,
                    revision=revision,
                    force_download=force_download,
                    local_files_only=False,
                    cache_dir=cache_dir,
                )
            except RemoteFileNotFoundError as exc:
                if _optional(e, f):
                    continue
                missing.append(f"{where}: the hub has no such file ({str(exc).split('. ')[0]})")
                continue
            except (ArtifactNotCachedError, HubRequestError) as exc:
                missing.append(f"{where}: {exc}")
                continue
            out.append(p)
    if missing:
        hint = (
            "Unset HF_HUB_OFFLINE (e.g. `export HF_HUB_OFFLINE=0`) on a machine with network, then run "
            "`gemmascope download` again."
            if offline
            else "Run the same `gemmascope download` command again: files already fetched are kept and "
            "partial ones resume."
        )
        raise DownloadIncompleteError(
            f"{len(missing)} file(s) needed by {release} are not in the cache:\n  "
            + "\n  ".join(missing)
            + f"\n{hint}"
        )
    return out


def _confirm(total: int, args: Any) -> bool:
    if total <= CONFIRM_ABOVE_BYTES or getattr(args, "yes", False):
        return True
    if not sys.stdin or not sys.stdin.isatty():
        print(
            f"Refusing to download {total / 1e9:.1f} GB without confirmation (no interactive stdin). "
            "Re-run with --yes.",
            file=sys.stderr,
        )
        return False
    answer = input(f"Download {total / 1e9:.1f} GB? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def cli_download(args: Any) -> int:
    """``gemmascope download RELEASE [SAE_ID ...] [--release-all] [--yes] [--revision R]
    [--force-download] [--cache-dir D] [--dry-run]``. Returns the exit code."""
    try:
        entries = _entries(args.release, list(args.sae_ids or []), bool(args.release_all))
    except GemmaScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(e.size_bytes() for e in entries)
    with_examples = bool(getattr(args, "examples", False))  # --examples: also examples.safetensors
    if args.dry_run:
        print(f"would download {len(entries)} artifact(s), {total / 1e9:.2f} GB: {args.release}")
        for e in entries[:50]:
            print(f"  {e.sae_id}  {' '.join(f for f in _files(e, with_examples) if f != 'config.json')}")
        if len(entries) > 50:
            print(f"  ... and {len(entries) - 50} more")
        return 0
    print(f"{len(entries)} artifact(s), about {total / 1e9:.2f} GB (float32 weights).")
    if not _confirm(total, args):
        return 1
    try:
        paths = download(
            args.release,
            None if args.release_all else list(args.sae_ids),
            all_ids=bool(args.release_all),
            revision=args.revision,
            force_download=bool(args.force_download),
            cache_dir=args.cache_dir,
            include_examples=with_examples,
        )
    except DownloadIncompleteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except GemmaScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0
