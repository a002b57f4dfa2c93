"""Turn a checked Gemma Scope weight file into a SAELens config and state dict, driven by the registry.

The file is opened and checked by :mod:`sae_lens_gemmascope.reading` (names, dtypes and shapes
against :mod:`sae_lens_gemmascope.artifacts`, before any data is read); this module decides which
tensors to read and how:

* ``parts``: ``"all"``, ``"encoder"`` (``W_enc``, ``b_enc``, ``threshold``) or ``"decoder"``
  (``W_dec``, ``b_dec`` and the skip ``W_skip``);
* ``latents``: a slice or list of latent ids, read in the order given (every other latent is never
  read from disk);
* on CPU in float32, each weight matrix is a private copy-on-write mapping of the cached file whose
  pages are all read at load (peak RSS = the weights; writes never reach the file); ``mmap=True``
  reads nothing until used (memory grows with the pages touched); other dtypes, devices and latent
  selections are read straight into their final buffers;
* ``verify``: ``"default"`` refuses NaN/inf in the small tensors (biases and thresholds) and
  negative thresholds; ``"full"`` also scans every matrix for NaN/inf (one more pass over the
  weights, about the cost of reading them from the page cache); ``"none"`` checks structure only.

Semantics kept exactly as trained: JumpReLU ``f = relu(pre) * (pre > threshold)`` with the threshold
held in float32 (:class:`~sae_lens_gemmascope.artifacts.Fp32Parameter`), no ``b_dec`` subtraction on
the input, latent order as stored, ``W_skip = affine_skip_connection.T`` (SAELens computes
``x @ W_skip.T``).

Example:
    >>> import tempfile
    >>> from sae_lens_gemmascope import registry
    >>> from sae_lens_gemmascope.convert import convert_file
    >>> from sae_lens_gemmascope.offline.synthetic import write_entry
    >>> e = registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    >>> path = write_entry(e, tempfile.mkdtemp(), d_sae=8)[0]
    >>> cfg, sd = convert_file(e, path, check_shapes=False)
    >>> cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["metadata"]["hook_name"]
    ('jumprelu', 640, 8, 'blocks.9.hook_resid_post')
    >>> sorted(sd), sd["threshold"].dtype
    (['W_dec', 'W_enc', 'b_dec', 'b_enc', 'threshold'], torch.float32)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch

from .artifacts import THRESHOLD_DTYPE, Fp32Parameter, saelens_name, tensor_specs
from .errors import CorruptArtifactError, InvalidArgumentError, LatentIndexError
from .hooks import hook_for
from .reading import WeightFile, check_file, open_weights
from .reading.stored import check_finite
from .registry import Entry

Parts = Literal["all", "encoder", "decoder"]
Verify = Literal["none", "default", "full"]
PARTS: tuple[str, ...] = ("all", "encoder", "decoder")
VERIFY: tuple[str, ...] = ("none", "default", "full")

ARCHITECTURES = {
    "sae": "jumprelu",
    "transcoder": "jumprelu_transcoder",
    "skip_transcoder": "jumprelu_skip_transcoder",
}


def sae_config(
    entry: Entry, *, d_in: int, d_sae: int, d_out: int, dtype: str = "float32", device: str = "cpu"
) -> dict[str, Any]:
    """The SAELens (>= 6) config dict of ``entry``: registry facts only, unknowns left unset.

    ``hook_name`` / ``hook_name_out`` / ``reshape_activations`` are the HookedTransformer hooks of the
    entry's sites; ``hf_hook_name`` / ``hf_hook_name_out`` name the Hugging Face module point
    (``<module>.input|output``). ``model_name`` and ``context_size`` are SAELens' values (``context_size``
    1024 for Gemma Scope 1, unset for Gemma Scope 2). ``dataset_path`` is not set: no public source
    states them for every release.
    """
    from importlib.metadata import version

    ht_in = hook_for(entry.model, entry.hook_site_in, entry.layer, backend="hooked_transformer")
    hf_in = hook_for(entry.model, entry.hook_site_in, entry.layer, backend="hf")
    metadata: dict[str, Any] = {
        "sae_lens_version": version("sae-lens"),
        "sae_lens_training_version": None,
        "model_name": entry.saelens_model_name,
        "context_size": entry.context_size,
        "hook_name": ht_in.hook_name,
        "hook_head_index": None,
        "hf_hook_name": f"{hf_in.hf_module}.{hf_in.hf_io}",
        "neuronpedia_id": entry.neuronpedia_id,
        # Gemma models are trained and run with <bos> first; both tutorials tokenize with it.
        "prepend_bos": True,
        "gemmascope_release": entry.release,
        "gemmascope_sae_id": entry.sae_id,
        "gemmascope_repo_id": entry.repo_id,
        "gemmascope_path": entry.path,
    }
    requires = set(ht_in.requires)
    cfg: dict[str, Any] = {
        "architecture": ARCHITECTURES[entry.kind],
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "dtype": dtype,
        "device": str(device),
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": ht_in.reshape,
    }
    if entry.kind != "sae":
        ht_out = hook_for(entry.model, entry.hook_site_out, entry.layer, backend="hooked_transformer")
        hf_out = hook_for(entry.model, entry.hook_site_out, entry.layer, backend="hf")
        metadata["hook_name_out"] = ht_out.hook_name
        metadata["hf_hook_name_out"] = f"{hf_out.hf_module}.{hf_out.hf_io}"
        cfg["d_out"] = int(d_out)
        requires |= set(ht_out.requires)
    kwargs = {}
    for req in sorted(requires):  # e.g. "fold_ln=False" for the GS2 transcoder input (needs the norm gain)
        key, _, val = req.partition("=")
        kwargs[key] = {"False": False, "True": True}.get(val, val)
    if kwargs:
        metadata["model_from_pretrained_kwargs"] = kwargs
    cfg["metadata"] = metadata
    return cfg


def _latent_index(latents: slice | Sequence[int] | None, d_sae: int, what: str) -> list[int] | None:
    if latents is None:
        return None
    if isinstance(latents, slice):
        idx = list(range(d_sae))[latents]
    else:
        try:
            idx = [int(i) for i in latents]
        except (TypeError, ValueError) as err:
            raise InvalidArgumentError(
                f"latents= must be a slice or a sequence of integer latent ids; got {latents!r} for {what}."
            ) from err
        bad = [i for i in idx if not 0 <= i < d_sae]
        if bad:
            raise LatentIndexError(
                f"latent id(s) {bad[:5]} outside 0..{d_sae - 1} for {what} (d_sae={d_sae})."
            )
    if not idx:
        raise InvalidArgumentError(f"latents={latents!r} selects no latent of {what} (d_sae={d_sae}).")
    return idx


def _check_values(name: str, t: torch.Tensor, f: WeightFile, verify: str) -> None:
    if verify == "none":
        return
    small = t.ndim == 1
    if small or verify == "full":
        check_finite(t, f.stored(name))
    if name == "threshold" and bool((t < 0).any()):
        n = int((t < 0).sum())
        raise CorruptArtifactError(
            f"{f.path} ({f.what}): {n} JumpReLU threshold(s) are negative (min {float(t.min()):.4g}). Gemma "
            "Scope thresholds are >= 0, and a negative one makes this package's relu(pre) * (pre > threshold) "
            "and circuit-tracer's pre * (pre > threshold) disagree. Re-download the file, or pass "
            "verify='none' to load it anyway."
        )


def read_state_dict(
    entry: Entry,
    f: WeightFile,
    *,
    d_sae: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    parts: str = "all",
    latents: slice | Sequence[int] | None = None,
    mmap: bool = False,
    verify: str = "default",
) -> dict[str, torch.Tensor]:
    """Read the tensors of ``parts`` (restricted to ``latents``) into a SAELens state dict."""
    idx = _latent_index(latents, d_sae, f"{entry.release}/{entry.sae_id}")
    specs = tensor_specs(entry)
    scale = math.sqrt(entry.d_in) if entry.site == "embedding" else None
    out: dict[str, torch.Tensor] = {}
    for name, spec in specs.items():
        if parts != "all" and spec.role != parts:
            continue
        key = saelens_name(entry, name)
        want = THRESHOLD_DTYPE if spec.is_threshold else dtype
        sel = idx if spec.latent_axis is not None else None
        s = None
        if scale is not None:
            # GS1 embedding SAEs were trained on the raw embedding rows e, but TransformerLens' hook_embed
            # (like the HF embed output) is x = sqrt(d) * e. With W_enc / sqrt(d) the encoder sees
            # x @ W_enc / sqrt(d) = e @ W_enc, so the latents are unchanged; the reconstruction must come
            # out in hook_embed space too, so W_dec **and** b_dec are multiplied by sqrt(d) (SAELens
            # 6.54.12 forgets b_dec).
            s = {"W_enc": 1.0 / scale, "W_dec": scale, "b_dec": scale}.get(key)
        on_cpu = torch.device(device).type == "cpu"
        stored_f32 = f.dtypes()[name] == "F32"
        # Default on CPU, whole float32 matrices: a private copy-on-write mapping of the cached file,
        # populated now (every page read; writes never reach the file). Copying into fresh anonymous
        # memory costs a page fault per 4 KB on top of the read (bench/bench_load.py). mmap=True maps
        # every tensor and reads nothing until used.
        mappable = f.stored(name).offset is not None  # a compressed npz member is not
        populate = (
            not mmap and on_cpu and stored_f32 and mappable and want == torch.float32 and len(spec.shape) == 2
        )
        zero_copy = (mmap or populate) and sel is None and s is None
        if zero_copy:
            t = f.memory_map(name)
            if populate and verify != "full":
                t.sum()  # touch every page now: the load reads the whole tensor, as a copy would
            _check_values(name, t, f, verify)
            if t.dtype != want:  # a float64 file accepted with check_dtypes=False
                t = t.to(want)
            if key == "W_skip":
                t = t.T
        else:
            t = f.read(
                name, latents=sel, axis=spec.latent_axis, dtype=torch.float32 if s is not None else want
            )
            _check_values(name, t, f, verify)
            if s is not None:
                t = (t * s).to(want)
            if key == "W_skip":
                t = t.T.contiguous()
        if torch.device(device).type != "cpu":
            t = t.to(device)
        out[key] = Fp32Parameter(t) if spec.is_threshold else t
    return out


def convert_file(
    entry: Entry,
    path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    check_shapes: bool = True,
    check_dtypes: bool = True,
    parts: str = "all",
    latents: slice | Sequence[int] | None = None,
    mmap: bool = False,
    verify: str = "default",
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Check then read the weight file of ``entry``: ``(sae_lens_cfg_dict, state_dict)``.

    With ``latents`` the config's ``d_sae`` is the number selected and ``metadata.gemmascope_latents``
    lists them (in the order given).
    """
    if parts not in PARTS:
        raise InvalidArgumentError(f"parts={parts!r} is not one of {', '.join(PARTS)}.")
    if verify not in VERIFY:
        raise InvalidArgumentError(f"verify={verify!r} is not one of {', '.join(VERIFY)}.")
    tdtype = torch_dtype(dtype)
    if mmap and tdtype != torch.float32:
        raise InvalidArgumentError(
            f"mmap=True returns views of the float32 file, so it cannot also convert to {tdtype}; pass "
            "dtype='float32' with mmap=True, or mmap=False to convert while reading."
        )
    if mmap and torch.device(device).type != "cpu":
        raise InvalidArgumentError(
            f"mmap=True maps the file into CPU memory; it cannot place tensors on {device}."
        )
    f = open_weights(entry, path)
    dims = check_file(entry, f, check_shapes=check_shapes, check_dtypes=check_dtypes)
    idx = _latent_index(latents, dims["d_sae"], f"{entry.release}/{entry.sae_id}")
    n_sae = len(idx) if idx is not None else dims["d_sae"]
    cfg = sae_config(
        entry,
        d_in=dims["d_in"],
        d_sae=n_sae,
        d_out=dims["d_out"],
        dtype=dtype_name(tdtype),
        device=str(device),
    )
    if idx is not None:
        cfg["metadata"]["gemmascope_latents"] = idx
        cfg["metadata"]["gemmascope_d_sae_file"] = dims["d_sae"]
    if parts != "all":
        cfg["metadata"]["gemmascope_parts"] = parts
    state = read_state_dict(
        entry,
        f,
        d_sae=dims["d_sae"],
        dtype=tdtype,
        device=device,
        parts=parts,
        latents=idx,
        mmap=mmap,
        verify=verify,
    )
    return cfg, state


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` / ``torch.bfloat16`` -> ``torch.bfloat16``; refuses non-float names."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise InvalidArgumentError(
                f"dtype {dtype} is not a floating-point dtype; use float32, bfloat16, float16 or float64."
            )
        return dtype
    name = str(dtype).removeprefix("torch.")
    t = getattr(torch, name, None)
    if not isinstance(t, torch.dtype) or not t.is_floating_point:
        raise InvalidArgumentError(
            f"Unsupported dtype {dtype!r}; use 'float32', 'bfloat16', 'float16' or 'float64'."
        )
    return t


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
