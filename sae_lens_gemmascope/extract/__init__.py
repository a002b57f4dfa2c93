"""``gemmascope extract`` / ``gemmascope merge``: Gemma Scope features over a corpus, sharded and resumable.

One forward pass of the Hugging Face model serves every requested SAE (hooks at all their sites; the
pass stops after the deepest layer needed). Each token's top ``K`` non-zero features become Parquet
rows ``seq, pos, feature, value`` (plus ``release, sae_id`` when several SAEs run); per shard, per-feature
statistics that merge exactly (count, sum, max, a fixed-bin histogram, the top-N examples) are written
next to them. ``gemmascope merge DIR`` combines the shards and writes one Gemma-Scope-2-format
``examples.safetensors`` per SAE.

Modules: :mod:`.spec` (the job and its command line), :mod:`.corpus` (documents -> token blocks),
:mod:`.setup` (model and SAEs), :mod:`.runner` (one block through the model and the SAEs),
:mod:`.stats` (mergeable statistics), :mod:`.shards` (atomic shard output, resume, the local executor),
:mod:`.merge`, :mod:`.logits` (decoder directions through the unembedding), :mod:`.ray_exec`.

Example (the layout of an output directory):
    >>> from sae_lens_gemmascope.extract.shards import shard_name
    >>> shard_name(1, 4)
    'shard-00001-of-00004'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .merge import merge
    from .run import run_extract
    from .spec import ExtractSpec

__all__ = ["ExtractSpec", "merge", "run_extract"]

_LAZY = {"ExtractSpec": ".spec", "run_extract": ".run", "merge": ".merge"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
