"""Look up Gemma Scope artifacts: ``get``, ``releases``, ``find``, ``nearest``.

Reads the compiled index shipped in ``sae_lens_gemmascope/_index/`` (generated from the YAML files
in ``registry/``), one small JSON shard per release, so a cold lookup parses no YAML.

Example:
    >>> from sae_lens_gemmascope import registry
    >>> e = registry.get("gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_262k_l0_medium")
    >>> (e.repo_id, e.path, e.d_sae, e.l0)
    ('google/gemma-scope-2-1b-pt', 'transcoder/layer_13_width_262k_l0_medium', 262144, 60)
    >>> registry.get("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical").path
    'layer_20/width_16k/average_l0_71'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from ._index import manifest as _manifest
from ._index import read_shard
from .errors import InvalidArgumentError, UnknownReleaseError, UnknownSaeIdError, close_matches

Kind = Literal["sae", "transcoder", "skip_transcoder", "clt", "crosscoder"]
Status = Literal["observed", "expected"]
ExamplesStatus = Literal["observed", "expected", "absent", "unknown"]

NEURONPEDIA_URL = "https://www.neuronpedia.org"
# Sequence length SAELens 6.54.12 records for every Gemma Scope 1 SAE/transcoder (its gemma_2 loaders
# set ``context_size: 1024``; gemma-scope-1.md section 3 lists it among the cfg fields it keeps).
GS1_CONTEXT_SIZE = 1024


@dataclass(frozen=True)
class Entry:
    """Every fact the registry holds about one loadable artifact.

    ``path`` is the folder inside ``repo_id`` on the Hugging Face hub. ``l0`` is the measured average
    L0 for Gemma Scope 1 and the training *target* for Gemma Scope 2 (``l0_is_target``).
    ``alias_of`` is set on SAELens-style ``.../canonical`` ids: (release, sae_id) of the real entry.
    """

    release: str
    sae_id: str
    repo_id: str
    path: str
    kind: Kind
    site: str
    hook_site_in: str
    hook_site_out: str
    layer: int | None
    layers: tuple[int, ...]
    width: str | None
    d_sae: int
    d_in: int
    d_out: int
    l0: float
    l0_label: str | None
    l0_is_target: bool
    canonical: bool
    affine: bool
    neuronpedia_id: str | None
    status: Status
    model: str
    hf_model_id: str
    generation: int
    format: str
    files: tuple[str, ...]
    alias_of: tuple[str, str] | None = None
    d_sae_per_layer: int | None = None
    #: does the folder ship ``examples.safetensors``? observed / expected / absent / unknown (registry evidence)
    examples: ExamplesStatus = "unknown"
    #: its estimated size where a source gives the corpus shape, else None
    examples_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Entry:
        rec = dict(rec)
        rec["layers"] = tuple(rec.get("layers") or ())
        rec["files"] = tuple(rec.get("files") or ())
        if rec.get("alias_of") is not None:
            rec["alias_of"] = tuple(rec["alias_of"])
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        extra = {k: rec.pop(k) for k in list(rec) if k not in known}
        return cls(**rec, extra=extra)

    @property
    def is_multilayer(self) -> bool:
        """True for CLTs and crosscoders (loaded with ``sae_lens_gemmascope.multilayer``)."""
        return self.kind in ("clt", "crosscoder")

    @property
    def model_facts(self) -> Any:
        """The :class:`sae_lens_gemmascope.models.ModelFacts` of the model it was trained on."""
        from .models import get_model

        return get_model(self.model)

    @property
    def neuronpedia_url(self) -> str | None:
        """The Neuronpedia source page, or None where no source is known."""
        return f"{NEURONPEDIA_URL}/{self.neuronpedia_id}" if self.neuronpedia_id else None

    @property
    def context_size(self) -> int | None:
        """Training sequence length recorded in the SAELens config (``cfg.metadata.context_size``).

        A registry row may state it (``context_size``); otherwise 1024 for Gemma Scope 1, as SAELens
        sets it, and None for Gemma Scope 2, for which no source states it (gemma-scope-2.md 5.3).
        """
        if self.extra.get("context_size") is not None:
            return int(self.extra["context_size"])
        return GS1_CONTEXT_SIZE if self.generation == 1 else None

    @property
    def saelens_model_name(self) -> str:
        """The ``model_name`` SAELens 6.54.12 writes into this artifact's config.

        Gemma Scope 1: the TransformerLens name (``gemma-2-2b``, ``gemma-2-9b-it``); Gemma Scope 2: the
        Hugging Face id (``google/gemma-3-1b-pt``, ``google/gemma-3-270m``).
        """
        return self.model if self.generation == 1 else self.hf_model_id

    def feature_url(self, index: int) -> str | None:
        """The Neuronpedia page of one latent."""
        return f"{NEURONPEDIA_URL}/{self.neuronpedia_id}/{index}" if self.neuronpedia_id else None

    @property
    def hub_url(self) -> str:
        """Browse the folder on the Hugging Face hub."""
        return f"https://huggingface.co/{self.repo_id}/tree/main/{self.path}"

    def file_paths(self) -> tuple[str, ...]:
        """Repo-relative paths of the files that make up this artifact."""
        return tuple(f"{self.path}/{f}" for f in self.files)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the weight tensors as stored on the hub (per file for multi-layer models).

        Defined once, in :func:`sae_lens_gemmascope.artifacts.tensor_specs`.
        """
        from .artifacts import tensor_specs

        return {name: spec.shape for name, spec in tensor_specs(self).items()}

    def size_bytes(self, dtype_bytes: int = 4) -> int:
        """Bytes of all weights at ``dtype_bytes`` per value (4 = float32, as stored)."""
        n = 0
        for shape in self.tensor_shapes().values():
            k = 1
            for s in shape:
                k *= s
            n += k
        files = len(self.layers) if self.is_multilayer else 1
        return n * files * dtype_bytes


class _Shard(Mapping[str, Entry]):
    """One release's entries; rows become :class:`Entry` objects only when asked for."""

    def __init__(self, packed: dict[str, Any]) -> None:
        self._common = packed["common"]
        self._cols = packed["columns"]
        self._rows = {row[0]: row for row in packed["rows"]}
        self._made: dict[str, Entry] = {}

    def __getitem__(self, sae_id: str) -> Entry:
        e = self._made.get(sae_id)
        if e is None:
            rec = {**self._common, **dict(zip(self._cols, self._rows[sae_id], strict=True))}
            e = self._made[sae_id] = Entry.from_record(rec)
        return e

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, sae_id: object) -> bool:
        return sae_id in self._rows


@cache
def _shard(release: str) -> _Shard:
    return _Shard(read_shard(release))


def releases() -> list[str]:
    """Every release name, sorted."""
    return list(_manifest()["releases"])


def release_info(release: str) -> dict[str, Any]:
    """Release-level facts: repo_id, model, generation, format, kinds, sites, count, registry_file."""
    _check_release(release)
    return dict(_manifest()["releases"][release])


def repos() -> dict[str, list[str]]:
    """Hugging Face repo id -> the release names that point into it."""
    return {k: list(v) for k, v in _manifest()["repos"].items()}


def models() -> dict[str, dict[str, Any]]:
    """Raw model facts from ``registry/models.yaml`` (keyed by model key)."""
    facts: dict[str, dict[str, Any]] = _manifest()["models"]
    return facts


def _check_str(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"{what} must be a string such as 'gemma-scope-2b-pt-res', got {type(value).__name__} {value!r}. "
            "List the names with `gemmascope list`."
        )


def _check_release(release: str) -> None:
    _check_str("release", release)
    man = _manifest()
    if release in man["releases"]:
        return
    if f"google/{release}" in man["repos"]:  # the repo's name without its owner
        release = f"google/{release}"
    if release in man["repos"]:
        names = ", ".join(man["repos"][release])
        raise UnknownReleaseError(
            f"{release!r} is a Hugging Face repo id, not a release name. Its releases are: {names}. "
            f"Use e.g. SAE.from_pretrained({man['repos'][release][0]!r}, sae_id)."
        )
    near = close_matches(release, man["releases"])
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise UnknownReleaseError(
        f"Unknown Gemma Scope release {release!r}.{hint} "
        "List them with `gemmascope list` or sae_lens_gemmascope.registry.releases()."
    )


def is_release(name: str) -> bool:
    """True when ``name`` is a release of this registry."""
    return name in _manifest()["releases"]


def entries(release: str) -> list[Entry]:
    """All entries of one release, in registry order."""
    _check_release(release)
    return list(_shard(release).values())


def sae_ids(release: str) -> list[str]:
    """All sae_ids of one release."""
    _check_release(release)
    return list(_shard(release))


def get(release: str, sae_id: str) -> Entry:
    """The entry for ``(release, sae_id)``; raises with close matches when either is unknown.

    Multi-layer ids also accept the family folder as prefix (``clt/width_262k_l0_big``).
    """
    _check_release(release)
    _check_str("sae_id", sae_id)
    shard = _shard(release)
    if sae_id in shard:
        return shard[sae_id]
    path_col = shard._cols.index("path")
    for sid, row in shard._rows.items():
        if row[path_col] == sae_id and sid != sae_id and "/canonical" not in sid:
            return shard[sid]
    near = close_matches(sae_id, shard)
    hint = (
        f" Close matches: {', '.join(near)}."
        if near
        else f" It has {len(shard)} ids, e.g. {next(iter(shard))}."
    )
    raise UnknownSaeIdError(
        f"Release {release!r} has no sae_id {sae_id!r}.{hint} See `gemmascope list --release {release}`."
    )


def iter_entries(include_aliases: bool = False) -> Iterator[Entry]:
    """Every entry of every release (canonical aliases only when asked)."""
    for rel in releases():
        for e in _shard(rel).values():
            if include_aliases or e.alias_of is None:
                yield e


def _width_matches(e: Entry, width: int | str | None) -> bool:
    if width is None:
        return True
    if isinstance(width, int):
        return width in (e.d_sae, e.d_sae_per_layer)
    return e.width == str(width).removeprefix("width_")


def _model_matches(e: Entry, model: str | None) -> bool:
    if model is None:
        return True
    return model in (e.model, e.hf_model_id, e.hf_model_id.split("/")[-1])


def find(
    model: str | None = None,
    site: str | None = None,
    layer: int | None = None,
    width: int | str | None = None,
    l0: float | str | None = None,
    kind: str | None = None,
    release: str | None = None,
    include_aliases: bool = False,
) -> list[Entry]:
    """Filter the registry. ``l0`` is a number (exact) or a GS2 label (small/medium/big).

    Example:
        >>> from sae_lens_gemmascope import registry
        >>> hits = registry.find(model="gemma-2-2b", site="resid_post", layer=20, width="16k")
        >>> sorted(e.l0 for e in hits)
        [22, 38, 71, 139, 294]
    """
    pool = entries(release) if release else iter_entries(include_aliases)
    out = []
    for e in pool:
        if not include_aliases and e.alias_of is not None:
            continue
        if site is not None and e.site != site:
            continue
        if kind is not None and e.kind != kind:
            continue
        if layer is not None and layer not in e.layers:
            continue
        if not _model_matches(e, model) or not _width_matches(e, width):
            continue
        if l0 is not None:
            if isinstance(l0, str):
                if e.l0_label != l0:
                    continue
            elif e.l0 != l0:
                continue
        out.append(e)
    return out


def nearest(
    target_l0: float,
    model: str | None = None,
    site: str | None = None,
    layer: int | None = None,
    width: int | str | None = None,
    kind: str | None = None,
    release: str | None = None,
) -> Entry:
    """The entry whose L0 is closest to ``target_l0`` among those matching the filters.

    Example:
        >>> from sae_lens_gemmascope import registry
        >>> registry.nearest(100, model="gemma-2-2b", site="resid_post", layer=20, width="16k").sae_id
        'layer_20/width_16k/average_l0_71'
    """
    import math
    from numbers import Real

    if isinstance(target_l0, bool) or not isinstance(target_l0, Real) or not math.isfinite(float(target_l0)):
        raise InvalidArgumentError(
            f"nearest() needs a finite number as target_l0, got {target_l0!r}. Pass e.g. 100 (the L0 "
            "Gemma Scope calls canonical), or use find(l0='medium') for a Gemma Scope 2 label."
        )
    if float(target_l0) < 0:
        raise InvalidArgumentError(
            f"target_l0 must be >= 0 (an average number of active latents), got {target_l0!r}."
        )
    hits = find(model=model, site=site, layer=layer, width=width, kind=kind, release=release)
    if not hits:
        raise UnknownSaeIdError(
            f"No artifact matches model={model!r} site={site!r} layer={layer!r} width={width!r} "
            f"kind={kind!r} release={release!r}. Relax a filter or run `gemmascope search`."
        )
    return min(hits, key=lambda e: (abs(e.l0 - target_l0), -e.l0, e.release, e.sae_id))


def search(text: str, limit: int = 50) -> list[Entry]:
    """Entries whose release, sae_id, path, repo, model or Neuronpedia id contain every word of ``text``."""
    _check_str("text", text)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgumentError(f"limit must be a non-negative integer, got {limit!r}.")
    words = text.lower().split()
    out: list[Entry] = []
    if limit == 0:
        return out
    for e in iter_entries():
        hay = " ".join(
            [e.release, e.sae_id, e.path, e.repo_id, e.model, e.kind, e.site, e.neuronpedia_id or ""]
        ).lower()
        if all(w in hay for w in words):
            out.append(e)
            if len(out) >= limit:
                break
    return out
