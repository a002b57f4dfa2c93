"""Load one single-layer Gemma Scope SAE or transcoder as a SAELens object: :func:`load`.

``load`` resolves the registry entry, fetches the weights offline-first (:mod:`.hub`), converts them
exactly (:mod:`.convert`) and builds the SAELens class the way ``SAE.from_pretrained`` does (on the
``meta`` device, then ``load_state_dict(assign=True)``: one copy of the weights, never two). It does not
need SAELens' YAML directory, so the first load skips its parse.

Example:
    >>> import tempfile, torch
    >>> from sae_lens_gemmascope import load, registry
    >>> from sae_lens_gemmascope.offline.synthetic import write_entry
    >>> cache = tempfile.mkdtemp()
    >>> e = registry.get("gemma-scope-2-270m-pt-transcoders", "transcoder/layer_9_width_16k_l0_small_affine")
    >>> _ = write_entry(e, cache, d_sae=16)
    >>> tc = load(e.release, e.sae_id, cache_dir=cache, check_shapes=False, local_files_only=True)
    >>> type(tc).__name__, tc.cfg.metadata.hook_name, tc.cfg.metadata.hook_name_out
    ('JumpReLUSkipTranscoder', 'blocks.9.mlp.hook_in', 'blocks.9.hook_mlp_out')
    >>> tc(torch.zeros(2, 640)).shape
    torch.Size([2, 640])
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from . import registry
from ._args import check_load_args
from .artifacts import CONFIG_FILE, EXAMPLES_FILE, check_config, has_config, params_file, read_config
from .convert import convert_file
from .errors import (
    GemmaScopeError,
    InvalidArgumentError,
    ShapeMismatchError,
    UnknownSaeIdError,
    close_matches,
)
from .hub import cached_file, fetch
from .partial import SAEDecoder, SAEEncoder
from .registry import Entry


class MultiLayerReleaseError(GemmaScopeError, ValueError):
    """A CLT or crosscoder was asked for through the single-layer SAE API."""


def _multilayer_error(entry: Entry) -> MultiLayerReleaseError:
    cls = "CrossLayerTranscoder" if entry.kind == "clt" else "Crosscoder"
    return MultiLayerReleaseError(
        f"{entry.release}/{entry.sae_id} is a {entry.kind} spanning layers {list(entry.layers)}, not a "
        f"single-layer SAE, so SAE.from_pretrained cannot hold it. Load it with:\n"
        f"    sae_lens_gemmascope.{cls}.from_pretrained({entry.release!r}, {entry.sae_id!r})"
    )


def resolve(release: str, sae_id: str) -> Entry:
    """The single-layer registry entry for ``(release, sae_id)``; typed errors with close matches."""
    entry = registry.get(release, sae_id)
    if entry.is_multilayer:
        raise _multilayer_error(entry)
    return entry


def entry_for_folder(repo_id: str, folder: str, release: str | None = None) -> Entry:
    """The entry stored at ``repo_id``/``folder`` (inside ``release`` when given)."""
    rels = [release] if release else registry.repos().get(repo_id, [])
    if not rels:
        raise UnknownSaeIdError(
            f"{repo_id!r} is not a Gemma Scope repo of this registry. Repos: "
            f"{', '.join(sorted(registry.repos()))}."
        )
    hits = [e for rel in rels for e in registry.entries(rel) if e.path == folder and e.repo_id == repo_id]
    if not hits:
        paths = {e.path for rel in rels for e in registry.entries(rel)}
        near = close_matches(folder, paths)
        raise UnknownSaeIdError(
            f"No Gemma Scope artifact in {repo_id} at {folder!r}."
            + (f" Close matches: {', '.join(near)}." if near else "")
        )
    hits.sort(key=lambda e: e.alias_of is not None)
    if hits[0].is_multilayer:
        raise _multilayer_error(hits[0])
    return hits[0]


def _cross_check_config(entry: Entry, cfg: dict[str, Any], cache_dir: Any, revision: str | None) -> None:
    """Compare a cached ``config.json`` (if any) with the registry and the weights; never downloads."""
    if not has_config(entry):
        return
    path = cached_file(entry, CONFIG_FILE, revision=revision, cache_dir=cache_dir)
    if path is None:
        return
    width = int(cfg["metadata"].get("gemmascope_d_sae_file", cfg["d_sae"]))
    check_config(entry, read_config(entry, path), path, width=width)


def log10_sparsity(
    entry: Entry,
    *,
    with_sparsity: bool | None = None,
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
    cache_dir: Any = None,
) -> torch.Tensor | None:
    """log10 of ``feature_frequencies`` from ``examples.safetensors`` (float64, shape ``(d_sae,)``).

    ``with_sparsity=None``: only if the file is already cached (never downloads: it is large).
    ``True``: fetch it (offline-first). ``False``: None. Gemma Scope 1 ships no such file.
    """
    if with_sparsity is False:
        return None
    if entry.generation != 2:
        if with_sparsity:
            raise InvalidArgumentError(
                f"{entry.release} is Gemma Scope 1, which ships no feature-frequency data "
                "(only params.npz); load without with_sparsity=True."
            )
        return None
    if with_sparsity:
        path = fetch(
            entry,
            EXAMPLES_FILE,
            revision=revision,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
    else:
        found = cached_file(entry, EXAMPLES_FILE, revision=revision, cache_dir=cache_dir)
        if found is None:
            return None
        path = found
    from .reading import TensorFile

    freq = TensorFile(path, f"{entry.release}/{entry.sae_id}").read_numpy("feature_frequencies")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) = -inf for dead latents
        return torch.from_numpy(freq.astype("float64")).log10()


def convert_entry(
    entry: Entry,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    check_shapes: bool = True,
    check_dtypes: bool = True,
    with_sparsity: bool | None = None,
    parts: str = "all",
    latents: slice | Sequence[int] | None = None,
    mmap: bool = False,
    verify: str = "default",
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """``(cfg_dict, state_dict, log10_sparsity)`` for one entry: the SAELens loader protocol."""
    if entry.is_multilayer:
        raise _multilayer_error(entry)
    path = fetch(
        entry,
        params_file(entry),
        revision=revision,
        force_download=force_download,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
    )
    cfg, state_dict = convert_file(
        entry,
        path,
        dtype=dtype,
        device=device,
        check_shapes=check_shapes,
        check_dtypes=check_dtypes,
        parts=parts,
        latents=latents,
        mmap=mmap,
        verify=verify,
    )
    _cross_check_config(entry, cfg, cache_dir, revision)
    sparsity = log10_sparsity(
        entry,
        with_sparsity=with_sparsity,
        revision=revision,
        force_download=force_download,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
    )
    d_file = int(cfg["metadata"].get("gemmascope_d_sae_file", cfg["d_sae"]))
    if sparsity is not None and sparsity.shape != (d_file,):
        raise ShapeMismatchError(
            f"feature_frequencies of {entry.release}/{entry.sae_id} has shape {tuple(sparsity.shape)}, "
            f"the SAE has d_sae={d_file}. Re-download examples.safetensors with force_download=True."
        )
    sel = cfg["metadata"].get("gemmascope_latents")
    if sparsity is not None and sel is not None:
        sparsity = sparsity[torch.tensor(sel, dtype=torch.long)]
    return cfg, state_dict, sparsity


def build_sae(cfg_dict: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Any:
    """Instantiate the SAELens class of ``cfg_dict`` on ``meta`` and assign ``state_dict`` (no copy)."""
    sae_cfg = saelens_cfg(cfg_dict)
    from sae_lens import SAE

    sae_cls = SAE.get_sae_class_for_architecture(sae_cfg.architecture())
    device = sae_cfg.device
    sae_cfg.device = "meta"
    sae = sae_cls(sae_cfg)
    sae.cfg.device = device
    sae.process_state_dict_for_loading(state_dict)
    sae.load_state_dict(state_dict, assign=True)
    if torch.device(device).type != "cpu":
        sae = sae.to(device=device)
    return sae


def saelens_cfg(cfg_dict: dict[str, Any]) -> Any:
    """The SAELens config object of a config dict (defaults filled as SAELens fills them)."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    cfg_dict = handle_config_defaulting(dict(cfg_dict))
    return SAE.get_sae_config_class_for_architecture(cfg_dict["architecture"]).from_dict(cfg_dict)


def build_part(cfg_dict: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> SAEEncoder | SAEDecoder:
    """An :class:`~sae_lens_gemmascope.partial.SAEEncoder` / ``SAEDecoder`` from a partial state dict."""
    cfg = saelens_cfg(cfg_dict)
    if cfg_dict["metadata"].get("gemmascope_parts") == "encoder":
        return SAEEncoder(state_dict["W_enc"], state_dict["b_enc"], state_dict["threshold"], cfg)
    return SAEDecoder(state_dict["W_dec"], state_dict["b_dec"], cfg, W_skip=state_dict.get("W_skip"))


def load_with_cfg_and_sparsity(
    release: str,
    sae_id: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    check_shapes: bool = True,
    check_dtypes: bool = True,
    with_sparsity: bool | None = None,
    parts: str = "all",
    latents: slice | Sequence[int] | None = None,
    mmap: bool = False,
    verify: str = "default",
) -> tuple[Any, dict[str, Any], torch.Tensor | None]:
    """Like :func:`load`, returning ``(sae, cfg_dict, log10_sparsity)`` as SAELens'
    ``SAE.from_pretrained_with_cfg_and_sparsity`` does."""
    check_load_args(device, dtype)
    entry = resolve(release, sae_id)
    cfg, state_dict, sparsity = convert_entry(
        entry,
        device=device,
        dtype=dtype,
        revision=revision,
        force_download=force_download,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
        check_shapes=check_shapes,
        check_dtypes=check_dtypes,
        with_sparsity=with_sparsity,
        parts=parts,
        latents=latents,
        mmap=mmap,
        verify=verify,
    )
    obj = build_sae(cfg, state_dict) if parts == "all" else build_part(cfg, state_dict)
    return obj, cfg, sparsity


def load(
    release: str,
    sae_id: str,
    *,
    parts: str = "all",
    latents: slice | Sequence[int] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    mmap: bool = False,
    verify: str = "default",
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    check_shapes: bool = True,
    check_dtypes: bool = True,
    with_sparsity: bool = False,
) -> Any:
    """Load one Gemma Scope SAE / transcoder, whole or in part.

    * ``parts="all"`` (default): a SAELens ``JumpReLUSAE`` / ``JumpReLUTranscoder`` /
      ``JumpReLUSkipTranscoder``; ``parts="encoder"``: an :class:`~sae_lens_gemmascope.partial.SAEEncoder`
      (``.encode(x)``, ``.cfg``) and nothing of the decoder is read; ``parts="decoder"``: an
      :class:`~sae_lens_gemmascope.partial.SAEDecoder` (``.decode(f)``).
    * ``latents``: a slice or a list of latent ids; exactly those latents are read, in the order given
      (``cfg.d_sae`` is their number, ``cfg.metadata.gemmascope_latents`` lists them).
    * Default on CPU in float32: each weight matrix is a private, copy-on-write mapping of the cached
      file whose pages are all read now (memory = the weights; in-place edits never reach the file).
      ``mmap=True``: the same mappings, but nothing is read until used (memory grows with the pages
      touched). Other dtypes (``"bfloat16"`` converts while reading; the JumpReLU threshold stays
      float32), devices and ``latents=`` selections are read straight into their own buffers.
    * ``verify``: ``"default"`` refuses NaN/inf in biases and thresholds and negative thresholds;
      ``"full"`` also scans every matrix for NaN/inf (one more pass over the weights); ``"none"``
      checks only structure (names, dtypes, shapes, which are always checked before any data is read).
    * ``check_shapes=False`` accepts files whose shapes differ from the registry (e.g. small synthetic
      test files; they must still be self-consistent); ``check_dtypes=False`` accepts a file stored in
      another float dtype than Gemma Scope's float32 (converted on load).

    Offline-first: a cached file is used without opening a socket; with ``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True`` a missing file raises ``ArtifactNotCachedError`` naming the
    ``gemmascope download`` command. ``with_sparsity=True`` fetches ``examples.safetensors`` (Gemma
    Scope 2) and returns ``(sae, log10_feature_frequencies)`` instead of the SAE alone.
    """
    sae, _, sparsity = load_with_cfg_and_sparsity(
        release,
        sae_id,
        device=device,
        dtype=dtype,
        revision=revision,
        force_download=force_download,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
        check_shapes=check_shapes,
        check_dtypes=check_dtypes,
        with_sparsity=True if with_sparsity else False,
        parts=parts,
        latents=latents,
        mmap=mmap,
        verify=verify,
    )
    return (sae, sparsity) if with_sparsity else sae
