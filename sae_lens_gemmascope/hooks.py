"""Where every Gemma Scope site lives in TransformerLens and Hugging Face models: explicit tables.

One table per model family, as data (no name matching): ``HOOK_TABLES["gemma2"]`` (Gemma 2 2b/9b/27b),
``HOOK_TABLES["gemma3_text"]`` (Gemma 3 270m, 1b: ``Gemma3ForCausalLM``) and
``HOOK_TABLES["gemma3_multimodal"]`` (Gemma 3 4b/12b/27b: ``Gemma3ForConditionalGeneration``, whose
decoder is ``model.language_model``). Each row gives

* the **HookedTransformer** hook, its reshape and the loading flags it needs,
* the **TransformerBridge** hook (canonical component names, which fire in ``TransformerBridge`` and
  ``SAETransformerBridge`` alike), its reshape and flags,
* the **Hugging Face** module path and whether the tensor is that module's ``input`` or ``output``
  (plus ``hf_transform`` when no module holds the tensor itself).

=================  ===============================  ============================  =====================================
site               HookedTransformer                TransformerBridge             Hugging Face (``{layers}.L`` …)
=================  ===============================  ============================  =====================================
resid_post         ``blocks.L.hook_resid_post``     ``blocks.L.hook_out``         ``layers.L`` output
attn_out           ``blocks.L.attn.hook_z`` +       ``blocks.L.attn.hook_z`` +    ``layers.L.self_attn.o_proj`` input
                   reshape ``hook_z``               reshape ``hook_z`` (4-D too)  (``n_heads*d_head`` wide)
mlp_out            ``blocks.L.hook_mlp_out``        ``blocks.L.ln2_post.hook_out``  ``post_feedforward_layernorm`` output
embedding          ``hook_embed``                   ``embed.hook_out``            ``embed_tokens`` output (×√d_model)
gs1_transcoder_in  ``blocks.L.ln2.hook_normalized``  same                         x/rms(x) of ``pre_feedforward_layernorm``
                                                                                  input (no gain; no module holds it)
gs2_transcoder_in  ``blocks.L.mlp.hook_in``,         ``blocks.L.mlp.hook_in``,    ``pre_feedforward_layernorm`` output
                   needs ``fold_ln=False`` and the   no compatibility mode
                   ``mlp.hook_in`` HookPoint
transcoder_out     = mlp_out                        = mlp_out                     = mlp_out
clt_in / clt_out   = gs2_transcoder_in / mlp_out    (same)                        (same)
crosscoder         = resid_post (one per layer)     (same)                        (same)
=================  ===============================  ============================  =====================================

Measured (``tests/test_hooks_tiny.py``, ``tests/test_hooks_real.py``): on tiny random Gemma 2 /
Gemma 3 text / Gemma 3 multimodal models with random norm gains the bridge hooks equal the HF tensors
exactly and the HookedTransformer hooks within fp32 rounding (≤ 2e-5 on activations of size ~10).

Loading flags. ``fold_ln`` (HookedTransformer default, and ``TransformerBridge`` compatibility mode)
moves the pre-MLP norm gain into the MLP weights, so *no* hook carries the GS2 transcoder / CLT input
any more: :func:`check_processing` refuses such models. Plain ``HookedTransformer`` has no
``blocks.L.mlp.hook_in``; ``sae_lens.HookedSAETransformer`` adds it, and so does
:func:`ensure_mlp_hook_in`. Every other site is unaffected by processing (≤ 2e-5).

Not used on purpose: ``blocks.L.hook_mlp_in`` (the *pre*-norm residual, which SAELens 6.54.12 gives
GS2 transcoders), bridge ``blocks.L.mlp.hook_out`` (before the post-feed-forward norm) and bridge
``blocks.L.attn.hook_out`` (before the post-attention norm).

Example:
    >>> from sae_lens_gemmascope.hooks import hook_for
    >>> hook_for("gemma-3-1b-pt", "gs2_transcoder_in", 13).hook_name
    'blocks.13.mlp.hook_in'
    >>> hook_for("gemma-3-4b-it", "resid_post", 9, backend="hf").hf_module
    'model.language_model.layers.9'
    >>> hook_for("gemma-2-2b", "attn_out", 3, backend="bridge").reshape
    'hook_z'
    >>> hook_for("gemma-3-270m", "clt_in", 4).requires
    ('fold_ln=False',)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import HookMappingError, close_matches
from .models import Family, get_model

Backend = Literal["hooked_transformer", "bridge", "hf"]
BACKENDS: tuple[str, ...] = ("hooked_transformer", "bridge", "hf")

SITES: tuple[str, ...] = (
    "resid_post",
    "attn_out",
    "mlp_out",
    "embedding",
    "gs1_transcoder_in",
    "gs2_transcoder_in",
    "transcoder_out",
    "clt_in",
    "clt_out",
    "crosscoder",
)

#: Sites that are another site under a second name (CLTs read/write where GS2 transcoders do).
SITE_ALIASES: dict[str, str] = {
    "clt_in": "gs2_transcoder_in",
    "clt_out": "transcoder_out",
    "crosscoder": "resid_post",
}

#: Sites whose tensor includes the pre-MLP norm gain, i.e. that ``fold_ln`` destroys.
GAIN_SITES: frozenset[str] = frozenset({"gs2_transcoder_in", "clt_in"})


@dataclass(frozen=True)
class SiteRow:
    """One site of one model family. ``{L}`` stands for the layer."""

    ht_hook: str | None
    ht_reshape: Literal["none", "hook_z"]
    ht_requires: tuple[str, ...]
    bridge_hook: str | None
    hf_module: str
    hf_io: Literal["input", "output"]
    hf_transform: Literal["none", "rms_normalize_no_gain"] = "none"
    note: str = ""
    bridge_reshape: Literal["none", "hook_z"] = "none"
    bridge_requires: tuple[str, ...] = ()
    ht_extra_hooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class HookSpec:
    """A resolved hook for one (model, site, layer, backend).

    ``requires`` are ``from_pretrained`` keyword settings (``"fold_ln=False"``) the hook needs;
    ``extra_hooks`` are HookPoints a plain ``HookedTransformer`` lacks (see :func:`ensure_mlp_hook_in`).
    ``hf_module`` / ``hf_io`` locate the tensor in the Hugging Face model (``hf_transform`` says how
    to derive it when it is not a module's input or output verbatim).
    """

    model: str
    site: str
    layer: int | None
    backend: str
    hook_name: str | None
    reshape: Literal["none", "hook_z"]
    requires: tuple[str, ...]
    hf_module: str
    hf_io: Literal["input", "output"]
    hf_transform: Literal["none", "rms_normalize_no_gain"]
    note: str
    extra_hooks: tuple[str, ...] = ()

    @property
    def hf_point(self) -> str:
        """``<module>.<input|output>``, as in the GS2 ``config.json`` (``hf_hook_point_in``)."""
        return f"{self.hf_module}.{self.hf_io}"


def _rows(layers: str, embed: str) -> dict[str, SiteRow]:
    mlp_out = SiteRow(
        "blocks.{L}.hook_mlp_out",
        "none",
        (),
        "blocks.{L}.ln2_post.hook_out",
        f"{layers}.{{L}}.post_feedforward_layernorm",
        "output",
        note="after the post-feed-forward RMSNorm (the tensor added to the residual); not mlp.hook_out",
    )
    rows = {
        "resid_post": SiteRow(
            "blocks.{L}.hook_resid_post",
            "none",
            (),
            "blocks.{L}.hook_out",
            f"{layers}.{{L}}",
            "output",
            note="decoder layer output; bridge alias blocks.L.hook_resid_post is the same tensor",
        ),
        "attn_out": SiteRow(
            "blocks.{L}.attn.hook_z",
            "hook_z",
            (),
            "blocks.{L}.attn.hook_z",
            f"{layers}.{{L}}.self_attn.o_proj",
            "input",
            note="hook_z is [batch, pos, n_heads, d_head] in both backends; flatten heads-major to n_heads*d_head",
            bridge_reshape="hook_z",
        ),
        "mlp_out": mlp_out,
        "embedding": SiteRow(
            "hook_embed",
            "none",
            (),
            "embed.hook_out",
            embed,
            "output",
            note="embed_tokens output, already x sqrt(d_model); bridge hook_embed alias does not fire in SAETransformerBridge",
        ),
        "gs1_transcoder_in": SiteRow(
            "blocks.{L}.ln2.hook_normalized",
            "none",
            (),
            "blocks.{L}.ln2.hook_normalized",
            f"{layers}.{{L}}.pre_feedforward_layernorm",
            "input",
            "rms_normalize_no_gain",
            note="x / rms(x) of the pre-MLP norm input, without the norm gain (GS1 model card); any processing is fine",
        ),
        "gs2_transcoder_in": SiteRow(
            "blocks.{L}.mlp.hook_in",
            "none",
            ("fold_ln=False",),
            "blocks.{L}.mlp.hook_in",
            f"{layers}.{{L}}.pre_feedforward_layernorm",
            "output",
            note=(
                "RMSNorm(x) * (1 + w): needs the gain, so no fold_ln (HookedTransformer.from_pretrained_no_processing, "
                "or a TransformerBridge without enable_compatibility_mode); plain HookedTransformer needs the "
                "mlp.hook_in HookPoint (HookedSAETransformer or hooks.ensure_mlp_hook_in)"
            ),
            bridge_requires=("fold_ln=False",),
            ht_extra_hooks=("mlp.hook_in",),
        ),
        "transcoder_out": mlp_out,
    }
    for alias, target in SITE_ALIASES.items():
        rows[alias] = rows[target]
    return rows


HOOK_TABLES: dict[Family, dict[str, SiteRow]] = {
    "gemma2": _rows("model.layers", "model.embed_tokens"),
    "gemma3_text": _rows("model.layers", "model.embed_tokens"),
    "gemma3_multimodal": _rows("model.language_model.layers", "model.language_model.embed_tokens"),
}


def hook_for(
    model: str, site: str, layer: int | None = None, backend: str = "hooked_transformer"
) -> HookSpec:
    """Resolve the hook of ``site`` at ``layer`` for ``model`` (key or HF id) on ``backend``.

    ``backend`` is ``"hooked_transformer"`` (TransformerLens HookedTransformer, what SAELens'
    ``hook_name`` means), ``"bridge"`` (TransformerLens TransformerBridge) or ``"hf"`` (a plain
    Hugging Face model; use ``hf_module`` / ``hf_io``).
    """
    facts = get_model(model)
    table = HOOK_TABLES[facts.family]
    if site not in table:
        near = close_matches(site, table)
        raise HookMappingError(
            f"Unknown site {site!r} for {facts.key}. Sites: {', '.join(table)}."
            + (f" Did you mean {near[0]!r}?" if near else "")
        )
    if backend not in BACKENDS:
        raise HookMappingError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    row = table[site]
    needs_layer = "{L}" in (row.ht_hook or "") or "{L}" in row.hf_module
    if needs_layer and (layer is None or not 0 <= layer < facts.n_layers):
        raise HookMappingError(
            f"Site {site!r} of {facts.key} needs a layer in 0..{facts.n_layers - 1}, got {layer!r}."
        )

    def fill(s: str | None) -> str | None:
        return None if s is None else s.replace("{L}", str(layer))

    hook = {"hooked_transformer": row.ht_hook, "bridge": row.bridge_hook, "hf": None}[backend]
    reshape = {"hooked_transformer": row.ht_reshape, "bridge": row.bridge_reshape, "hf": "none"}[backend]
    requires = {"hooked_transformer": row.ht_requires, "bridge": row.bridge_requires, "hf": ()}[backend]
    extra = row.ht_extra_hooks if backend == "hooked_transformer" else ()
    return HookSpec(
        model=facts.key,
        site=site,
        layer=layer,
        backend=backend,
        hook_name=fill(hook),
        reshape=reshape,
        requires=requires,
        hf_module=fill(row.hf_module) or "",
        hf_io=row.hf_io,
        hf_transform=row.hf_transform,
        note=row.note,
        extra_hooks=extra,
    )


def site_of_hook(model: str, hook_name: str, backend: str = "hooked_transformer") -> tuple[str, int | None]:
    """Inverse lookup: ``(site, layer)`` of a hook name (e.g. a SAELens ``cfg.metadata.hook_name``).

    Accepts the names of either TransformerLens backend (and the bridge aliases
    ``blocks.L.hook_resid_post`` / ``blocks.L.hook_mlp_out``). Returns the first matching site in
    ``SITES`` order (so ``blocks.L.hook_mlp_out`` is ``mlp_out``).

    >>> site_of_hook("gemma-2-2b", "blocks.5.ln2.hook_normalized")
    ('gs1_transcoder_in', 5)
    >>> site_of_hook("gemma-3-270m", "blocks.5.mlp.hook_in", backend="bridge")
    ('gs2_transcoder_in', 5)
    """
    facts = get_model(model)
    table = HOOK_TABLES[facts.family]
    parts = hook_name.split(".")
    layer: int | None = (
        int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None
    )
    templ = hook_name if layer is None else ".".join(["blocks", "{L}", *parts[2:]])
    for site in SITES:
        if site in SITE_ALIASES:
            continue
        row = table[site]
        names = {row.ht_hook, row.bridge_hook}
        if site == "resid_post":
            names |= {"blocks.{L}.hook_resid_post", "blocks.{L}.hook_out"}
        if site == "mlp_out":
            names |= {"blocks.{L}.hook_mlp_out", "blocks.{L}.ln2_post.hook_out"}
        if site == "embedding":
            names |= {"hook_embed", "embed.hook_out"}
        if site == "attn_out":
            names |= {"blocks.{L}.attn.o.hook_in"}
        if templ in names:
            return site, layer
    raise HookMappingError(
        f"Hook {hook_name!r} of {facts.key} is not a Gemma Scope site. Known sites: "
        + ", ".join(f"{s} ({table[s].ht_hook})" for s in SITES if s not in SITE_ALIASES)
        + ". Note blocks.L.hook_mlp_in is the pre-norm residual, not the transcoder input "
        "(use blocks.L.mlp.hook_in)."
    )


def ensure_mlp_hook_in(model: Any) -> bool:
    """Give every block's MLP of a plain ``HookedTransformer`` an identity ``mlp.hook_in`` HookPoint.

    ``sae_lens.HookedSAETransformer`` and ``TransformerBridge`` already have it (nothing is done then).
    Returns True when hook points were added. The model's outputs are unchanged.
    """
    from transformer_lens.hook_points import HookPoint

    added = False
    for block in getattr(model, "blocks", []):
        mlp = getattr(block, "mlp", None)
        if mlp is None or isinstance(getattr(mlp, "hook_in", None), HookPoint):
            continue
        hp = HookPoint()  # type: ignore[no-untyped-call]
        mlp.hook_in = hp
        original_forward = mlp.forward
        mlp.forward = lambda x, _f=original_forward, _h=hp: _f(_h(x))
        added = True
    if added:
        model.setup()
    return added
