"""Read the compiled registry index (``_index/manifest.json`` and one JSON shard per release).

The lowest layer of the package: :mod:`~sae_lens_gemmascope.registry` (artifacts) and
:mod:`~sae_lens_gemmascope.models` (model facts) both read from here, so neither imports the other
to get its data.

Example:
    >>> "gemma-scope-2b-pt-res" in manifest()["releases"]
    True
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ._paths import INDEX_DIR


@lru_cache(maxsize=1)
def manifest() -> dict[str, Any]:
    """Release list, repo -> releases map and model facts (parsed once)."""
    with open(INDEX_DIR / "manifest.json", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def read_shard(release: str) -> dict[str, Any]:
    """The packed entries of one release (``common``, ``columns``, ``rows``)."""
    with open(INDEX_DIR / f"{release}.json", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data
