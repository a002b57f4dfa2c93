"""Registry and hub plumbing of the multi-layer modules: kind check, file fetch, config.json.

Example:
    >>> from sae_lens_gemmascope import registry
    >>> from sae_lens_gemmascope.multilayer import CrossLayerTranscoder
    >>> check_kind(CrossLayerTranscoder, registry.get("gemma-scope-2-1b-pt-crosscoder", "layer_7_13_17_22_width_262k_l0_medium"))
    Traceback (most recent call last):
    ...
    sae_lens_gemmascope.multilayer.pretrained.WrongKindError: gemma-scope-2-1b-pt-crosscoder/layer_7_13_17_22_width_262k_l0_medium is a crosscoder, not a clt; CrossLayerTranscoder cannot load it. Use sae_lens_gemmascope.multilayer.Crosscoder.from_pretrained('gemma-scope-2-1b-pt-crosscoder', 'layer_7_13_17_22_width_262k_l0_medium').
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..artifacts import CONFIG_FILE, has_config, read_config
from ..errors import GemmaScopeError, InvalidArgumentError
from ..registry import Entry

PathLike = str | os.PathLike[str]


class WrongKindError(GemmaScopeError, TypeError):
    """The artifact asked for is not of the kind this class loads (e.g. a crosscoder given to the CLT class)."""


_CLASS_FOR_KIND = {"clt": "CrossLayerTranscoder", "crosscoder": "Crosscoder"}


def check_kind(cls: type[Any], entry: Entry) -> None:
    """Refuse an entry whose kind is not ``cls.kind`` (``cls`` is a MultiLayerModule subclass)."""
    if entry.kind == cls.kind:
        return
    if entry.kind in _CLASS_FOR_KIND:
        use = f"sae_lens_gemmascope.multilayer.{_CLASS_FOR_KIND[entry.kind]}.from_pretrained"
    else:
        use = "sae_lens.SAE.from_pretrained (single-layer SAEs and transcoders)"
    raise WrongKindError(
        f"{entry.release}/{entry.sae_id} is a {entry.kind}, not a {cls.kind}; "
        f"{cls.__name__} cannot load it. Use {use}({entry.release!r}, {entry.sae_id!r})."
    )


def fetch_file(
    entry: Entry,
    filename: str,
    *,
    revision: str | None,
    force_download: bool,
    local_files_only: bool | None,
    cache_dir: PathLike | None = None,
) -> Path:
    """Path of ``entry.path/filename`` in the local HF cache, downloading it when allowed.

    Goes through :func:`sae_lens_gemmascope.hub.fetch` (cache first, ``hf_hub_download`` only when the
    file is missing and the hub may be used; :class:`ArtifactNotCachedError` names the
    ``gemmascope download`` command otherwise).
    """
    from ..hub import fetch

    if filename not in entry.files:
        raise InvalidArgumentError(
            f"{entry.release}/{entry.sae_id} has no file {filename!r}; it has {', '.join(entry.files)}."
        )
    return fetch(
        entry,
        filename,
        revision=revision,
        force_download=force_download,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
    )


def open_config(
    entry: Entry,
    *,
    revision: str | None,
    force_download: bool,
    local_files_only: bool | None,
    cache_dir: PathLike | None = None,
) -> tuple[Path, dict[str, Any]] | None:
    """``(path, parsed config.json)`` of a multi-layer entry (fetched offline-first), or None if it has none."""
    if not has_config(entry):
        return None
    path = fetch_file(
        entry,
        CONFIG_FILE,
        revision=revision,
        force_download=force_download,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
    )
    return path, read_config(entry, path)
