"""Write Gemma-Scope-format artifacts with synthetic weights into a Hugging Face cache.

Used by the tests, the offline demo and the tutorials: the files have the exact on-hub layout and
tensor names/shapes of the real releases (small or real shapes, random weights), and they are placed
in the standard cache layout (``models--<org>--<name>/{blobs,snapshots/<sha>,refs/main}``) so that
the real ``huggingface_hub`` code paths find them with ``HF_HUB_OFFLINE=1``.

The weights are random: **they are not Gemma Scope weights** and say nothing about Gemma.

Example:
    >>> import tempfile
    >>> from sae_lens_gemmascope import registry
    >>> from sae_lens_gemmascope.offline.synthetic import write_entry
    >>> cache = tempfile.mkdtemp()
    >>> e = registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    >>> paths = write_entry(e, cache, d_sae=32)
    >>> sorted(p.name for p in paths)
    ['config.json', 'params.safetensors']
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import Entry

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def repo_cache_dir(cache_dir: str | os.PathLike[str], repo_id: str) -> Path:
    """``<cache>/models--org--name`` for a model repo."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def put_file(
    cache_dir: str | os.PathLike[str],
    repo_id: str,
    path_in_repo: str,
    data: bytes,
    commit: str = DEFAULT_COMMIT,
) -> Path:
    """Store ``data`` as ``path_in_repo`` of ``repo_id`` at ``commit`` (blob + snapshot symlink + refs/main)."""
    root = repo_cache_dir(cache_dir, repo_id)
    blob = root / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        blob.write_bytes(data)
    snap = root / "snapshots" / commit / path_in_repo
    snap.parent.mkdir(parents=True, exist_ok=True)
    if snap.exists() or snap.is_symlink():
        snap.unlink()
    try:
        snap.symlink_to(os.path.relpath(blob, snap.parent))
    except OSError:  # filesystems without symlinks: huggingface_hub copies too
        snap.write_bytes(data)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snap


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def jumprelu_params(
    d_in: int,
    d_sae: int,
    d_out: int | None = None,
    *,
    affine: bool = False,
    seed: int | None = 0,
    scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Random float32 JumpReLU weights in the Gemma Scope 2 naming (lower-case keys).

    Thresholds are positive and of the same order as the pre-activations, so that some but not all
    latents fire on unit-scale inputs.
    """
    d_out = d_in if d_out is None else d_out
    g = _rng(seed)
    p = {
        "w_enc": (g.standard_normal((d_in, d_sae)) * scale / np.sqrt(d_in)).astype(np.float32),
        "b_enc": (g.standard_normal(d_sae) * 0.1).astype(np.float32),
        "threshold": (np.abs(g.standard_normal(d_sae)) * 0.5 + 0.05).astype(np.float32),
        "w_dec": (g.standard_normal((d_sae, d_out)) / np.sqrt(d_sae)).astype(np.float32),
        "b_dec": (g.standard_normal(d_out) * 0.1).astype(np.float32),
    }
    if affine:
        p["affine_skip_connection"] = (g.standard_normal((d_in, d_out)) / np.sqrt(d_in)).astype(np.float32)
    return p


def npz_bytes(params: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed ``params.npz`` with GS1 key names (``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, ``threshold``)."""
    rename = {"w_enc": "W_enc", "w_dec": "W_dec"}
    buf = io.BytesIO()
    arrays: dict[str, Any] = {rename.get(k, k): v for k, v in params.items()}
    np.savez(buf, **arrays)
    return buf.getvalue()


def safetensors_bytes(params: Mapping[str, np.ndarray]) -> bytes:
    """A ``.safetensors`` file of the given arrays."""
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in params.items()})


def gs2_config(entry: Entry, width: int | None = None) -> dict[str, object]:
    """A ``config.json`` in the key order of the real Gemma Scope 2 files."""
    from ..hooks import hook_for

    def hf_point(site: str, layer: int) -> str:
        spec = hook_for(entry.model, site, layer, backend="hf")
        # GS2 configs always name the text decoder as model.layers.* (even for 4b/12b/27b)
        path = spec.hf_module.replace("model.language_model.layers", "model.layers")
        return f"{path}.{spec.hf_io}"

    if entry.kind == "clt":
        hin = "model.layers.{all}.pre_feedforward_layernorm.output"
        hout = "model.layers.{all}.post_feedforward_layernorm.output"
    elif entry.kind == "crosscoder":
        joined = ",".join(str(x) for x in entry.layers)
        hin = hout = f"model.layers.{{{joined}}}.output"
    else:
        assert entry.layer is not None
        hin = hf_point(entry.hook_site_in, entry.layer)
        hout = hf_point(entry.hook_site_out, entry.layer)
    model_name = entry.hf_model_id
    if model_name == "google/gemma-3-270m":
        model_name = "google/gemma-3-270m-pt"  # what the real configs say
    return {
        "hf_hook_point_in": hin,
        "hf_hook_point_out": hout,
        "width": int(width if width is not None else entry.d_sae),
        "model_name": model_name,
        "architecture": "jump_relu",
        "l0": entry.l0,
        "affine_connection": bool(entry.affine),
        "type": {"skip_transcoder": "transcoder"}.get(entry.kind, entry.kind),
    }


def write_entry(
    entry: Entry,
    cache_dir: str | os.PathLike[str],
    *,
    d_sae: int | None = None,
    d_in: int | None = None,
    d_out: int | None = None,
    seed: int | None = 0,
    commit: str = DEFAULT_COMMIT,
    params: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = None,
) -> list[Path]:
    """Write one registry entry's files, in its real on-hub format, into ``cache_dir``.

    ``d_sae`` / ``d_in`` / ``d_out`` shrink the tensors (default: the real shapes, which can be
    gigabytes). For multi-layer entries ``d_sae`` is the width *per file*. Pass ``params`` to write
    exact arrays: one mapping for a single-layer entry, one per block (file) for a CLT or crosscoder.
    Returns the snapshot paths written.
    """
    din = d_in or entry.d_in
    dout = d_out or entry.d_out
    written: list[Path] = []
    given: Any = params  # one mapping (single-layer) or one per block (multi-layer)
    if entry.format == "gs1_npz":
        p = given or jumprelu_params(din, d_sae or entry.d_sae, dout, seed=seed)
        written.append(put_file(cache_dir, entry.repo_id, f"{entry.path}/params.npz", npz_bytes(p), commit))
        return written
    if entry.is_multilayer:
        blocks: list[Any] | None = list(given) if given is not None else None
        n_t = len(entry.layers)
        if blocks is not None and len(blocks) != n_t:
            raise ValueError(f"{entry.sae_id} has {n_t} blocks; got params for {len(blocks)}")
        per = int(blocks[0]["w_enc"].shape[1]) if blocks else (d_sae or int(entry.d_sae_per_layer or 0))
        g = _rng(seed)
        for i in range(n_t):
            if blocks is not None:
                p = dict(blocks[i])
            else:
                p = jumprelu_params(din, per, dout, affine=entry.affine, seed=int(g.integers(1 << 30)))
                w = (g.standard_normal((per, n_t, dout)) / np.sqrt(per)).astype(np.float32)
                if entry.kind == "clt":
                    w[:, :i, :] = 0.0  # a CLT feature of layer i only writes to layers >= i
                p["w_dec"] = w
            written.append(
                put_file(
                    cache_dir,
                    entry.repo_id,
                    f"{entry.path}/params_layer_{i}.safetensors",
                    safetensors_bytes(p),
                    commit,
                )
            )
        cfg = gs2_config(entry, width=per * n_t)
    else:
        p = given or jumprelu_params(din, d_sae or entry.d_sae, dout, affine=entry.affine, seed=seed)
        written.append(
            put_file(
                cache_dir, entry.repo_id, f"{entry.path}/params.safetensors", safetensors_bytes(p), commit
            )
        )
        cfg = gs2_config(entry, width=p["w_enc"].shape[1])
    written.append(
        put_file(
            cache_dir, entry.repo_id, f"{entry.path}/config.json", json.dumps(cfg, indent=2).encode(), commit
        )
    )
    return written


def write_examples(
    entry: Entry,
    cache_dir: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    commit: str = DEFAULT_COMMIT,
) -> Path:
    """Store ``tensors`` as the entry's ``examples.safetensors`` (keys and dtypes as given: see
    :mod:`sae_lens_gemmascope.evidence.examples` for the official set)."""
    return put_file(
        cache_dir, entry.repo_id, f"{entry.path}/examples.safetensors", safetensors_bytes(tensors), commit
    )
