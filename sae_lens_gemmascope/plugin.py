"""Make every single-layer Gemma Scope release loadable by ``sae_lens.SAE.from_pretrained``.

What :func:`register` does (idempotent):

* adds our converters to SAELens' ``NAMED_PRETRAINED_SAE_LOADERS`` and
  ``NAMED_PRETRAINED_SAE_CONFIG_GETTERS`` under our own names (``gemmascope_gs1_npz``,
  ``gemmascope_gs2_safetensors``, ``gemmascope_multilayer``);
* wraps ``SAE.from_pretrained_with_cfg_and_sparsity`` (which ``SAE.from_pretrained`` calls) with
  :func:`resolve_for_saelens`: a Gemma Scope release with an unknown sae_id, a misspelt Gemma Scope
  release, or a raw Gemma Scope repo id with a folder that does not exist raise our errors with close
  matches; a raw repo id with a real folder (``SAE.from_pretrained("google/gemma-scope-2b-pt-res",
  "layer_20/width_16k/average_l0_71")``) is loaded through its release, with its metadata;
* wraps ``get_pretrained_saes_directory`` (SAELens' ``functools.cache``-d YAML parse, imported by name
  into several modules) so that the first call after registration adds one :class:`LazyReleaseLookup`
  per registry release to the **same cached dict** SAELens hands everyone. Our lookups replace
  SAELens' own entries of the same name (e.g. ``gemma-scope-2b-pt-res``). Each lookup's id maps are
  :class:`LazyIdMap` views that read the release's JSON shard on first use: no YAML, no enumeration
  of ~12k ids at import or registration.

``import sae_lens_gemmascope`` calls :func:`register` at once when SAELens is already imported, and
otherwise right after SAELens finishes importing (a one-shot import hook), so importing our package
stays cheap (SAELens itself takes seconds to import) and the order of imports does not matter.

Example:
    >>> from sae_lens_gemmascope.plugin import LazyIdMap
    >>> ids = LazyIdMap("gemma-scope-2b-pt-res-canonical", "path")
    >>> ids["layer_20/width_16k/canonical"]
    'layer_20/width_16k/average_l0_71'
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from . import registry

LOADER_NAMES = {
    "gs1_npz": "gemmascope_gs1_npz",
    "gs2_safetensors": "gemmascope_gs2_safetensors",
    "multilayer": "gemmascope_multilayer",
}
RELEASE_KEY = "gemmascope_release"

_lock = threading.RLock()
_state: dict[str, Any] = {"registered": False, "original": None, "injected_into": None}


class LazyIdMap(Mapping[str, Any]):
    """A read-only ``sae_id -> value`` view of one release, built from its shard on first access.

    ``field`` is an :class:`~sae_lens_gemmascope.registry.Entry` attribute (``path``, ``l0``),
    ``"directory_neuronpedia_id"`` (:func:`directory_neuronpedia_id`) or ``None`` for a constant
    ``default``.
    """

    def __init__(self, release: str, field: str | None, default: Any = None) -> None:
        self._release, self._field, self._default = release, field, default
        self._data: dict[str, Any] | None = None

    def _map(self) -> dict[str, Any]:
        if self._data is None:
            shard = registry._shard(self._release)
            if self._field is None:
                self._data = dict.fromkeys(shard, self._default)
            elif self._field == "directory_neuronpedia_id":
                self._data = {sid: directory_neuronpedia_id(e) for sid, e in shard.items()}
            else:
                self._data = {sid: getattr(e, self._field) for sid, e in shard.items()}
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._map()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())

    def __contains__(self, key: object) -> bool:
        return key in self._map()

    def __repr__(self) -> str:
        state = "loaded" if self._data is not None else "not loaded yet"
        return f"LazyIdMap({self._release!r}, {self._field!r}, {state})"


def _neuronpedia_owners() -> dict[str, tuple[str, str]]:
    """Neuronpedia id -> the one ``(release, sae_id)`` that carries it in SAELens' directory.

    The registry links a canonical alias (``layer_20/width_16k/canonical``) and the ``average_l0_*``
    entry it points to with the same Neuronpedia source (both links are right: see
    :attr:`Entry.neuronpedia_url`). SAELens' directory must map each Neuronpedia id back to one
    ``(release, sae_id)`` (its ``test_get_pretrained_saes_directory_unique_np_ids``), so there the id
    stays on the alias, as in SAELens' own YAML, and any other holder gets ``None``.
    """
    owners = _state.get("np_owners")
    if owners is None:
        owners = {}
        ranked = sorted(
            (e.alias_of is None, rel_i, e.release, e.sae_id, e.neuronpedia_id)
            for rel_i, rel in enumerate(registry.releases())
            for e in registry._shard(rel).values()
            if e.neuronpedia_id
        )
        for _, _, rel, sid, np_id in ranked:
            owners.setdefault(np_id, (rel, sid))
        _state["np_owners"] = owners
    return owners


def directory_neuronpedia_id(entry: registry.Entry) -> str | None:
    """The Neuronpedia id SAELens' directory (and the loaded ``cfg.metadata``) shows for ``entry``.

    ``entry.neuronpedia_id`` unless another entry (a canonical alias) owns the same id; the link
    itself stays on ``entry.neuronpedia_url``.

    >>> from sae_lens_gemmascope import registry
    >>> e = registry.get("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    >>> e.neuronpedia_url, directory_neuronpedia_id(e)
    ('https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-16k', None)
    >>> directory_neuronpedia_id(registry.get("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical"))
    'gemma-2-2b/20-gemmascope-res-16k'
    """
    np_id = entry.neuronpedia_id
    if not np_id:
        return None
    return np_id if _neuronpedia_owners().get(np_id) == (entry.release, entry.sae_id) else None


def saelens_compat(cfg: dict[str, Any], entry: registry.Entry) -> dict[str, Any]:
    """Set the config fields SAELens 6.54.12 sets for ``entry``, with its values (in place).

    ``context_size`` (1024 for Gemma Scope 1, which ``ActivationsStore.from_sae`` needs; unset for
    Gemma Scope 2) and ``model_name`` come from :func:`sae_lens_gemmascope.convert.sae_config`; here:

    * ``neuronpedia_id``: unique across the directory (:func:`directory_neuronpedia_id`).
    """
    md = cfg.setdefault("metadata", {})
    md["neuronpedia_id"] = directory_neuronpedia_id(entry)
    if md.get("hook_name_out") is not None:
        md.setdefault("hook_head_index_out", None)
    return cfg


def _lookup_for(release: str) -> Any:
    """A SAELens ``PretrainedSAELookup`` for one registry release (fields found by introspection)."""
    from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

    info = registry.release_info(release)
    multilayer = bool(set(info["kinds"]) & {"clt", "crosscoder"})
    values: dict[str, Any] = {
        "release": release,
        "repo_id": info["repo_id"],
        "model": info.get("saelens_model") or info["hf_model_id"],
        "conversion_func": LOADER_NAMES["multilayer" if multilayer else info["format"]],
        "saes_map": LazyIdMap(release, "path"),
        "expected_var_explained": LazyIdMap(release, None, 1.0),
        "expected_l0": LazyIdMap(release, "l0"),
        "neuronpedia_id": LazyIdMap(release, "directory_neuronpedia_id"),
        "norm_scaling_factor": {},
        "config_overrides": {RELEASE_KEY: release},
    }
    names = {f.name for f in dataclasses.fields(PretrainedSAELookup)}
    return PretrainedSAELookup(**{k: v for k, v in values.items() if k in names})


def inject(directory: dict[str, Any]) -> dict[str, Any]:
    """Put one lazy lookup per registry release into SAELens' directory dict (in place, idempotent)."""
    with _lock:
        done = _state["injected_into"] is directory
        if not done:
            for release in registry.releases():
                directory[release] = _lookup_for(release)
            _state["injected_into"] = directory
    return directory


def _directory_wrapper() -> Any:
    original = _state["original"]

    def get_pretrained_saes_directory() -> dict[str, Any]:
        return inject(original())

    get_pretrained_saes_directory.cache_clear = original.cache_clear  # type: ignore[attr-defined]
    get_pretrained_saes_directory.cache_info = original.cache_info  # type: ignore[attr-defined]
    get_pretrained_saes_directory.__wrapped__ = original  # type: ignore[attr-defined]
    get_pretrained_saes_directory.__doc__ = (
        "SAELens' pretrained SAE directory, plus every Gemma Scope release of sae_lens_gemmascope."
    )
    get_pretrained_saes_directory._gemmascope = True  # type: ignore[attr-defined]
    return get_pretrained_saes_directory


def _pop_ours(cfg_overrides: dict[str, Any] | None) -> tuple[str | None, str, dict[str, Any]]:
    over = dict(cfg_overrides or {})
    release = over.pop(RELEASE_KEY, None)
    dtype = over.pop("dtype", "float32")
    over.pop("device", None)
    return release, dtype, over


def _apply_overrides(cfg: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    from sae_lens.loading.pretrained_sae_loaders import LLM_METADATA_KEYS

    for k, v in over.items():
        if k == "neuronpedia_id":
            continue  # set from the registry by saelens_compat (unique across the directory)
        if k in LLM_METADATA_KEYS:
            cfg["metadata"][k] = v
        else:
            cfg[k] = v
    return cfg


def saelens_loader(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """SAELens loader protocol for every single-layer Gemma Scope format (registered per format name).

    Also usable directly: ``SAE.from_pretrained("google/gemma-scope-2b-pt-res", "<folder>", converter=saelens_loader)``.
    """
    from ._args import check_load_args
    from .loading import convert_entry, entry_for_folder

    release, dtype, over = _pop_ours(cfg_overrides)
    check_load_args(device, dtype)
    entry = entry_for_folder(repo_id, folder_name, release)
    cfg, state_dict, sparsity = convert_entry(
        entry, device=device, dtype=dtype, force_download=force_download
    )
    return _apply_overrides(saelens_compat(cfg, entry), over), state_dict, sparsity


def saelens_config_getter(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,  # noqa: ARG001
    cfg_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SAELens config-getter protocol: the config from registry facts alone (no file is read)."""
    from ._args import check_dtype
    from .convert import sae_config
    from .loading import entry_for_folder

    release, dtype, over = _pop_ours(cfg_overrides)
    e = entry_for_folder(repo_id, folder_name, release)
    cfg = sae_config(
        e, d_in=e.d_in, d_sae=e.d_sae, d_out=e.d_out, dtype=check_dtype(dtype), device=str(device)
    )
    return _apply_overrides(saelens_compat(cfg, e), over)


def resolve_for_saelens(release: str, sae_id: str) -> tuple[str, str]:
    """What ``SAE.from_pretrained(release, sae_id)`` should load, or a teaching error.

    * a registry release: ``sae_id`` must be one of its ids (:class:`UnknownSaeIdError` with close
      matches otherwise);
    * a Gemma Scope repo id (``google/gemma-scope-2b-pt-res``): ``sae_id`` is a folder of it, mapped to
      its ``(release, sae_id)`` (``UnknownSaeIdError`` naming the releases otherwise);
    * another release of SAELens' directory passes through unchanged;
    * a name close to a Gemma Scope release or repo (a typo): :class:`UnknownReleaseError` with the
      close matches;
    * anything else is SAELens' business and passes through unchanged.

    >>> resolve_for_saelens("google/gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    ('gemma-scope-2b-pt-res', 'layer_20/width_16k/average_l0_71')
    """
    from .errors import UnknownReleaseError, UnknownSaeIdError, close_matches
    from .loading import entry_for_folder

    if registry.is_release(release):
        entry = registry.get(release, sae_id)  # raises with close matches
        return release, entry.sae_id
    repos = registry.repos()
    if release in repos:
        try:
            e = entry_for_folder(release, sae_id)
        except UnknownSaeIdError as err:
            raise UnknownSaeIdError(
                f"{err} {release} is a Gemma Scope repo; its releases are {', '.join(repos[release])}: "
                f"use SAE.from_pretrained({repos[release][0]!r}, sae_id) with an id from "
                f"`gemmascope list --release {repos[release][0]}`."
            ) from None
        return e.release, e.sae_id
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    if release in get_pretrained_saes_directory():
        return release, sae_id  # another SAELens release
    if "/" not in release and close_matches(release, registry.releases()):
        registry.release_info(release)  # raises UnknownReleaseError with the close matches
    near_repos = close_matches(release, repos) if "/" in release else []
    if near_repos:
        raise UnknownReleaseError(
            f"{release!r} is not a Gemma Scope repo. Did you mean {', '.join(near_repos)}? "
            "Or pass a release name (`gemmascope list`)."
        )
    return release, sae_id


def _guarded_from_pretrained(original: Any) -> Any:
    def from_pretrained_with_cfg_and_sparsity(
        cls: Any, release: str, sae_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        release, sae_id = resolve_for_saelens(release, sae_id)
        return original.__func__(cls, release, sae_id, *args, **kwargs)

    from_pretrained_with_cfg_and_sparsity.__doc__ = original.__doc__
    from_pretrained_with_cfg_and_sparsity.__wrapped__ = original  # type: ignore[attr-defined]
    from_pretrained_with_cfg_and_sparsity._gemmascope = True  # type: ignore[attr-defined]
    return classmethod(from_pretrained_with_cfg_and_sparsity)


def multilayer_loader(repo_id: str, folder_name: str, *args: Any, **kwargs: Any) -> Any:
    """Registered for CLT/crosscoder releases: always raises a typed error naming the right API."""
    from .loading import _multilayer_error, entry_for_folder

    release = (kwargs.get("cfg_overrides") or {}).get(RELEASE_KEY)
    entry = entry_for_folder(repo_id, folder_name, release)  # raises MultiLayerReleaseError
    raise _multilayer_error(entry)  # pragma: no cover (a single-layer folder in a multi-layer release)


def register() -> None:
    """Register our loaders and releases with SAELens (imports SAELens; idempotent)."""
    import sae_lens.loading.pretrained_sae_loaders as loaders
    import sae_lens.loading.pretrained_saes_directory as directory_mod
    from sae_lens.saes.sae import SAE

    with _lock:
        current_fp = SAE.__dict__["from_pretrained_with_cfg_and_sparsity"]
        if not getattr(current_fp.__func__, "_gemmascope", False):
            SAE.from_pretrained_with_cfg_and_sparsity = _guarded_from_pretrained(current_fp)
        for fmt in ("gs1_npz", "gs2_safetensors"):
            loaders.NAMED_PRETRAINED_SAE_LOADERS[LOADER_NAMES[fmt]] = saelens_loader
            loaders.NAMED_PRETRAINED_SAE_CONFIG_GETTERS[LOADER_NAMES[fmt]] = saelens_config_getter
        loaders.NAMED_PRETRAINED_SAE_LOADERS[LOADER_NAMES["multilayer"]] = multilayer_loader
        loaders.NAMED_PRETRAINED_SAE_CONFIG_GETTERS[LOADER_NAMES["multilayer"]] = multilayer_loader
        current = directory_mod.get_pretrained_saes_directory
        if _state["original"] is None:
            _state["original"] = (
                getattr(current, "__wrapped__", current) if hasattr(current, "_gemmascope") else current
            )
            _state["wrapper"] = _directory_wrapper()
        original, wrapper = _state["original"], _state["wrapper"]
        # Every module that did `from ...pretrained_saes_directory import get_pretrained_saes_directory`
        for name, mod in list(sys.modules.items()):
            if (
                name.startswith("sae_lens")
                and getattr(mod, "get_pretrained_saes_directory", None) is original
            ):
                mod.get_pretrained_saes_directory = wrapper  # type: ignore[attr-defined]
        # If SAELens already parsed its YAML, inject now (the dict is shared by reference).
        if original.cache_info().currsize:
            inject(original())
        _state["registered"] = True


def is_registered() -> bool:
    """True once :func:`register` has run in this process."""
    return bool(_state["registered"])


class _RegisterAfterSaeLensImport(importlib.abc.MetaPathFinder):
    """One-shot hook: run :func:`register` right after ``import sae_lens`` completes."""

    def __init__(self) -> None:
        self._busy = False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "sae_lens" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module
        hook = self

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            if hook in sys.meta_path:
                sys.meta_path.remove(hook)
            register()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_when_sae_lens_is_imported() -> None:
    """Call :func:`register` now if SAELens is imported, else as soon as it is."""
    if "sae_lens" in sys.modules:
        register()
        return
    if not any(isinstance(f, _RegisterAfterSaeLensImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterSaeLensImport())
