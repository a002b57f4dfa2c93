"""Attribution graphs on Gemma Scope: circuit-tracer objects built from our registry and lazy readers.

* :func:`transcoder_set` -> circuit-tracer's ``TranscoderSet`` with **every** layer of a Gemma Scope 2
  ``transcoder_all`` family (``gemma-scope-2-*-transcoders-all``) or of the Gemma Scope 1 2B
  transcoders (``gemma-scope-2b-pt-transcoders``). A family that lacks layers is refused, naming them.
* :func:`clt` -> a circuit-tracer ``CrossLayerTranscoder`` (subclass) reading the GS2 per-layer files
  ``params_layer_{i}.safetensors`` directly: all L layers, no conversion cache, affine skips in fp32
  and bf16.

``lazy=True`` (default): nothing but the small vectors (``b_enc``, ``b_dec``, ``threshold``) is read when
the object is built; each layer's encoder (and affine skip) is read on first use and then held, and
decoder rows are read per call, for the features asked for only (``_get_decoder_vectors``), never held.
``lazy=False`` reads everything now (one copy, one layer's file at a time).

Files come from the Hugging Face cache through our offline-first :func:`sae_lens_gemmascope.hub.fetch`
(every layer is resolved when the object is built, so a missing file fails early, naming all missing
layers). ``**load_kwargs`` are our loaders' options: ``revision``, ``cache_dir``, ``local_files_only``,
``force_download``, ``check_shapes`` / ``strict_shapes`` (False accepts shrunken synthetic files),
``dtype`` (``"float32"`` default, or ``"bfloat16"`` / a ``torch.dtype``) and ``device``.

Hooks: circuit-tracer names them relative to a block, the same for its ``transformerlens`` and
``nnsight`` backends; they come from our hook table (GS2 ``mlp.hook_in`` = ``pre_feedforward_layernorm``
output, ``hook_mlp_out`` = ``post_feedforward_layernorm`` output; GS1 ``ln2.hook_normalized``).
IT models' untrained chat-prefix positions come from the registry (:func:`zero_positions`).

Install (circuit-tracer 0.5.0 pins ``transformers<=4.57.3`` and ``huggingface-hub<1.0``, which our stack
exceeds, so install it without its dependencies)::

    pip install "sae-lens-gemmascope[circuit-tracer]"   # einops, pydantic, nnsight 0.6.x
    pip install --no-deps circuit-tracer==0.5.0

Example:
    >>> from sae_lens_gemmascope.integrations.circuit_tracer import feature_hooks, zero_positions
    >>> feature_hooks("gemma-3-270m", "gs2_transcoder_in", "transcoder_out")
    ('mlp.hook_in', 'hook_mlp_out')
    >>> zero_positions("gemma-3-1b-it"), zero_positions("gemma-3-1b-pt")
    (slice(0, 4, None), slice(0, 1, None))
    >>> ts = transcoder_set("gemma-scope-2-270m-pt-transcoders-all", width="16k", l0="small")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from .. import registry
from ..errors import ArtifactNotCachedError, GemmaScopeError, ShapeMismatchError, UnknownSaeIdError
from ..hooks import hook_for
from ..models import get_model
from ..registry import Entry
from ._files import TensorFile

if TYPE_CHECKING:
    from circuit_tracer.transcoder.single_layer_transcoder import TranscoderSet

    from ._ct_classes import GemmaScopeCLT

__all__ = [
    "CircuitTracerMissingError",
    "IncompleteFamilyError",
    "INSTALL_RECIPE",
    "clt",
    "family_entries",
    "feature_hooks",
    "replacement_model",
    "restore_rotary_tables",
    "transcoder_set",
    "zero_positions",
]

#: The documented install (circuit-tracer's own pins would downgrade transformers and huggingface_hub).
INSTALL_RECIPE = (
    'pip install "sae-lens-gemmascope[circuit-tracer]" && pip install --no-deps circuit-tracer==0.5.0'
)

_NAMES = {
    "gs2_safetensors": {
        "enc": "w_enc",
        "dec": "w_dec",
        "b_enc": "b_enc",
        "b_dec": "b_dec",
        "threshold": "threshold",
    },
    "gs1_npz": {"enc": "W_enc", "dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec", "threshold": "threshold"},
}
_PARAMS_FILE = {"gs2_safetensors": "params.safetensors", "gs1_npz": "params.npz"}
_LOAD_KWARGS = {
    "revision",
    "cache_dir",
    "local_files_only",
    "force_download",
    "check_shapes",
    "strict_shapes",
    "dtype",
    "device",
}


class CircuitTracerMissingError(GemmaScopeError, ImportError):
    """circuit-tracer (the optional extra) is not installed."""


class IncompleteFamilyError(GemmaScopeError, ValueError):
    """A transcoder family does not cover every layer of its model (circuit-tracer needs all of them)."""


def _require_circuit_tracer() -> None:
    try:
        import circuit_tracer.transcoder  # noqa: F401
    except ImportError as err:
        raise CircuitTracerMissingError(
            f"circuit-tracer is not installed ({err}). Its pins conflict with transformers 5, so install it "
            f"without dependencies: {INSTALL_RECIPE}"
        ) from err


def feature_hooks(model: str, site_in: str, site_out: str) -> tuple[str, str]:
    """circuit-tracer's ``(feature_input_hook, feature_output_hook)``: our HookedTransformer hooks of
    ``site_in`` / ``site_out`` without the ``blocks.L.`` prefix (both circuit-tracer backends use them)."""

    def rel(site: str) -> str:
        name = hook_for(model, site, 0).hook_name
        if name is None or not name.startswith("blocks.0."):
            raise GemmaScopeError(
                f"Site {site!r} of {model} is not a per-block hook; circuit-tracer cannot use it."
            )
        return name.removeprefix("blocks.0.")

    return rel(site_in), rel(site_out)


def zero_positions(model: str) -> slice:
    """Leading positions circuit-tracer must zero: the registry's chat prefix for IT models, else ``<bos>``.

    Set it on a ReplacementModel (``rm.zero_positions = zero_positions(entry.model)``) when its own
    name-based rule does not know the model.
    """
    facts = get_model(model)
    n = len(facts.chat_prefix_tokens) if facts.variant == "it" else 0
    return slice(0, max(1, n))


def _norm_kwargs(load_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(load_kwargs) - _LOAD_KWARGS)
    if unknown:
        raise TypeError(f"Unknown load option(s) {unknown}; accepted: {', '.join(sorted(_LOAD_KWARGS))}.")
    kw = dict(load_kwargs)
    checks = [kw.pop(k) for k in ("check_shapes", "strict_shapes") if k in kw]
    dtype = kw.pop("dtype", torch.float32)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    return {
        "check_shapes": all(bool(c) for c in checks),
        "dtype": dtype,
        "device": torch.device(kw.pop("device", "cpu")),
        "fetch": {k: kw.get(k) for k in ("revision", "cache_dir", "local_files_only")}
        | {"force_download": bool(kw.get("force_download", False))},
    }


def family_entries(
    release: str, *, width: int | str, l0: float | str | Mapping[int, float], affine: bool | None = None
) -> dict[int, Entry]:
    """``{layer: Entry}`` for every layer of ``release``'s model, or :class:`IncompleteFamilyError`.

    ``l0`` is a GS2 label (``"small"``/``"big"``), a number (per layer, the entry with the nearest L0:
    Gemma Scope 1 L0s are measured and differ by layer) or ``{layer: l0}``. ``affine=None`` takes the
    affine-skip variant where the release has one (GS2; these are the transcoders Gemma Scope 2 made
    its own attribution graphs with), the plain one otherwise.
    """
    pool = [
        e
        for e in registry.find(release=release, width=width)
        if e.kind in ("transcoder", "skip_transcoder") and e.layer is not None
    ]
    if not pool:
        kinds = sorted({e.kind for e in registry.entries(release)})
        raise UnknownSaeIdError(
            f"{release!r} has no single-layer transcoders of width {width!r} (it holds {', '.join(kinds)}). "
            "Use a transcoders-all release, e.g. gemma-scope-2-270m-pt-transcoders-all or gemma-scope-2b-pt-transcoders."
        )
    want_affine = any(e.affine for e in pool) if affine is None else bool(affine)
    pool = [e for e in pool if e.affine == want_affine]
    facts = get_model(pool[0].model) if pool else get_model(registry.release_info(release)["model"])
    chosen: dict[int, Entry] = {}
    for layer in range(facts.n_layers):
        here = [e for e in pool if e.layer == layer]
        target = l0.get(layer) if isinstance(l0, Mapping) else l0
        if isinstance(target, str):
            here = [e for e in here if e.l0_label == target]
        elif isinstance(l0, Mapping):
            here = [e for e in here if target is not None and e.l0 == target]
        if here:
            num = target if isinstance(target, (int, float)) else 0.0
            chosen[layer] = min(here, key=lambda e: (abs(e.l0 - num), e.l0))
    missing = [x for x in range(facts.n_layers) if x not in chosen]
    if missing:
        labels = sorted({str(e.l0_label) for e in pool if e.l0_label})
        raise IncompleteFamilyError(
            f"{release} with width={width!r} l0={l0!r} affine={want_affine} has no transcoder for layer(s) "
            f"{missing} of {facts.key}'s {facts.n_layers} (it covers {sorted(chosen) or 'none'}). circuit-tracer "
            f"needs every layer: use a *-transcoders-all release"
            + (f", or another l0 ({', '.join(labels)})" if labels else "")
            + "."
        )
    return chosen


def _fetch_all(entries: Mapping[int, Entry], filename: Any, fetch_kw: Mapping[str, Any]) -> dict[int, Path]:
    """Resolve one file per layer (offline-first); one error naming every layer whose file is missing."""
    from ..hub import download_command, fetch

    paths: dict[int, Path] = {}
    missing: dict[int, str] = {}
    for layer, e in entries.items():
        name = filename(layer) if callable(filename) else filename
        try:
            paths[layer] = Path(fetch(e, name, **fetch_kw))
        except ArtifactNotCachedError:
            missing[layer] = f"{e.path}/{name}"
    if missing:
        e0 = entries[next(iter(missing))]
        raise ArtifactNotCachedError(
            f"Layer(s) {sorted(missing)} of {e0.release} are not in the local cache and the hub is not used "
            f"(offline or local_files_only): {', '.join(list(missing.values())[:4])}"
            + (" ..." if len(missing) > 4 else "")
            + f". Download them first, e.g. {download_command(e0)}"
        )
    return paths


def _check_layer_file(e: Entry, f: TensorFile, strict: bool, first: TensorFile) -> None:
    for name, shape in e.tensor_shapes().items():
        got = f.shape(name)
        want = shape if strict else first.shape(name)
        if got != want:
            raise ShapeMismatchError(
                f"{f.path} ({e.release}/{e.sae_id}): {name!r} is {got} on disk; expected {want} "
                + (
                    "from the registry (check_shapes=False accepts other shapes)."
                    if strict
                    else "as in layer 0."
                )
            )


def transcoder_set(
    release: str,
    *,
    width: int | str,
    l0: float | str | Mapping[int, float],
    affine: bool | None = None,
    lazy: bool = True,
    **load_kwargs: Any,
) -> TranscoderSet:
    """circuit-tracer's ``TranscoderSet`` with every layer of a Gemma Scope transcoder family.

    See :func:`family_entries` for ``width`` / ``l0`` / ``affine`` and the module docstring for ``lazy``
    and ``load_kwargs``. The set's ``scan`` is ``"<release>/width_<w>_l0_<l0>[_affine]"``.
    """
    _require_circuit_tracer()
    from circuit_tracer.transcoder.single_layer_transcoder import TranscoderSet
    from tqdm.auto import tqdm

    from ._ct_classes import GemmaScopeTranscoder

    entries = family_entries(release, width=width, l0=l0, affine=affine)
    kw = _norm_kwargs(load_kwargs)
    e0 = entries[0]
    paths = _fetch_all(entries, _PARAMS_FILE[e0.format], kw["fetch"])
    files = {layer: TensorFile(p) for layer, p in paths.items()}
    names = dict(_NAMES[e0.format])
    if e0.affine:
        names["skip"] = "affine_skip_connection"
    for layer, f in files.items():
        _check_layer_file(entries[layer], f, kw["check_shapes"], files[0])
    layers: dict[int, Any] = {
        layer: GemmaScopeTranscoder(
            files[layer], layer, names, lazy=lazy, dtype=kw["dtype"], device=kw["device"]
        )
        for layer in tqdm(sorted(files), desc=f"{release} transcoders", disable=len(files) < 4, leave=False)
    }
    hin, hout = feature_hooks(e0.model, e0.hook_site_in, e0.hook_site_out)
    suffix = "_affine" if e0.affine else ""
    scan = f"{release}/width_{e0.width}_l0_{l0 if not isinstance(l0, Mapping) else 'custom'}{suffix}"
    return TranscoderSet(layers, feature_input_hook=hin, feature_output_hook=hout, scan=scan)


def clt(release: str, sae_id: str, *, lazy: bool = True, **load_kwargs: Any) -> GemmaScopeCLT:
    """A circuit-tracer ``CrossLayerTranscoder`` over every layer of a Gemma Scope 2 CLT.

    Fetching and validation go through :meth:`sae_lens_gemmascope.multilayer.CrossLayerTranscoder.from_pretrained`
    (``lazy=True``: config check, then each ``params_layer_{i}.safetensors`` fetched and shape-checked);
    the weights are then read straight from those files (no conversion, no cache of our own).
    """
    _require_circuit_tracer()
    from tqdm.auto import tqdm

    from ..multilayer import CrossLayerTranscoder as OurCLT
    from ._ct_classes import GemmaScopeCLT

    kw = _norm_kwargs(load_kwargs)
    inner = OurCLT.from_pretrained(
        release,
        sae_id,
        lazy=True,
        strict_shapes=kw["check_shapes"],
        dtype=kw["dtype"],
        **kw["fetch"],
    )
    entry = inner.entry
    assert entry is not None
    n = inner.n_blocks
    widths = set(inner.block_widths)
    if len(widths) != 1:
        raise ShapeMismatchError(
            f"{release}/{sae_id} has blocks of widths {sorted(widths)}; circuit-tracer needs one."
        )
    by_layer = {b: entry for b in range(n)}
    from ..multilayer import layer_file_name

    _fetch_all(by_layer, layer_file_name, kw["fetch"])  # every missing layer named at once

    def open_file(b: int) -> Path:
        return Path(inner._file(b).path)  # fetched and shape-checked against the registry / file 0

    hin, hout = feature_hooks(entry.model, "clt_in", "clt_out")
    return GemmaScopeCLT(
        open_file,
        n_layers=n,
        d_transcoder=widths.pop(),
        d_model=inner.d_model,
        affine=inner.affine,
        feature_input_hook=hin,
        feature_output_hook=hout,
        scan=f"{entry.release}/{entry.sae_id}",
        lazy=lazy,
        dtype=kw["dtype"],
        device=kw["device"],
        progress=lambda r: tqdm(r, desc=f"{entry.sae_id} layers", disable=len(r) < 4, leave=False),
    )


def _hf_hub_shim() -> None:
    """circuit-tracer 0.5.0's ``utils.hf_utils`` (imported by ``ReplacementModel``) imports
    ``huggingface_hub.constants.HF_HUB_ENABLE_HF_TRANSFER``, which huggingface_hub 1.x removed (hf_transfer
    became hf_xet). Define it as False when it is missing; nothing else reads it."""
    import huggingface_hub.constants as hfc

    if not hasattr(hfc, "HF_HUB_ENABLE_HF_TRANSFER"):
        hfc.HF_HUB_ENABLE_HF_TRANSFER = False  # type: ignore[attr-defined,unused-ignore]


def replacement_model(
    transcoders: Any,
    model: str,
    *,
    hf_model: Any = None,
    tokenizer: Any = None,
    backend: Literal["transformerlens", "nnsight"] = "transformerlens",
    model_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> Any:
    """circuit-tracer's ``ReplacementModel`` for ``model`` (key or HF id) with ``transcoders``.

    Applies the huggingface_hub shim circuit-tracer 0.5.0 needs on our stack, passes ``hf_model`` /
    ``tokenizer`` through (e.g. the offline Gemma 3 270M of :mod:`sae_lens_gemmascope.offline.realmodel`),
    and sets ``zero_positions`` from the registry. ``transformerlens`` (TransformerLens 3.9) builds from
    ``hf_model`` / ``tokenizer`` when given and gets its RoPE tables restored (:func:`restore_rotary_tables`);
    ``nnsight`` (needs ``nnsight>=0.6,<0.7``) loads the model itself from ``model_path`` (a local
    directory, e.g. :func:`sae_lens_gemmascope.offline.realmodel.ensure_converted`) or the hub id.
    Both run on transformers 5 (tests/integrations).
    """
    _require_circuit_tracer()
    _hf_hub_shim()
    from circuit_tracer import ReplacementModel

    facts = get_model(model)
    if backend == "transformerlens":
        if hf_model is not None:
            kwargs["hf_model"] = hf_model
        if tokenizer is not None:
            kwargs["tokenizer"] = tokenizer
    name = str(model_path) if model_path is not None else facts.hf_id
    if backend == "transformerlens":
        name = facts.hf_id  # TransformerLens picks its config by the official name
    rm = ReplacementModel.from_pretrained_and_transcoders(
        name, transcoders, backend=backend, device=torch.device(device), dtype=dtype, **kwargs
    )
    rm.zero_positions = zero_positions(facts.key)
    if backend == "transformerlens":
        restore_rotary_tables(rm)
    return rm


def restore_rotary_tables(model: Any) -> int:
    """Give every attention block of a TransformerLens ``model`` the RoPE table of its own base again.

    circuit-tracer 0.5.0's TransformerLens backend (``_deduplicate_attention_buffers``) makes all blocks
    share the *last* block's ``rotary_sin``/``rotary_cos``. Gemma 3 uses a different base for its local
    (sliding-window, 10k) and global (1M) layers, so every local layer then rotates with the global base and
    the activations drift from the model's (by ~2% of their scale at layer 0 of Gemma 3 270M). Tables are
    rebuilt with TransformerLens' own ``calculate_sin_cos_rotary`` and shared per base. Returns the number
    of distinct bases (1 for models with a single base: nothing changes).
    """
    tables: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    for block in getattr(model, "blocks", []):
        attn = block.attn
        if not hasattr(attn, "rotary_sin") or not hasattr(attn, "_rotary_base"):
            continue
        base = float(attn._rotary_base())
        if base not in tables:
            sin, cos = attn.calculate_sin_cos_rotary(
                model.cfg.rotary_dim,
                attn.rotary_sin.shape[0],
                base=attn._rotary_base(),
                dtype=model.cfg.dtype,
            )
            tables[base] = (sin.to(attn.rotary_sin.device), cos.to(attn.rotary_cos.device))
        attn.rotary_sin, attn.rotary_cos = tables[base]
    return len(tables)
