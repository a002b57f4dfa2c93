"""Where every Gemma Scope site lives in TransformerLens and Hugging Face models: explicit tables.

One table per model family (Gemma 2; Gemma 3 text; Gemma 3 multimodal). Each row gives the
HookedTransformer hook (+ reshape + the loading flags it needs), the TransformerBridge hook, and the
Hugging Face module path with whether the tensor is that module's input or output.
Verified numerically in ``tests/test_hooks_*.py`` (see ../shared/reference/hook-mapping.md).

Example:
    >>> from sae_lens_gemmascope.hooks import hook_for
    >>> hook_for("gemma-3-1b-pt", "gs2_transcoder_in", 13).hook_name
    'blocks.13.mlp.hook_in'
    >>> hook_for("gemma-3-4b-it", "resid_post", 9, backend="hf").hf_module
    'model.language_model.layers.9'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
)


@dataclass(frozen=True)
class SiteRow:
    """One site of one model family. ``{L}`` stands for the layer, ``{layers}`` for the HF layer list."""

    ht_hook: str | None
    ht_reshape: Literal["none", "hook_z"]
    ht_requires: tuple[str, ...]
    bridge_hook: str | None
    hf_module: str
    hf_io: Literal["input", "output"]
    hf_transform: Literal["none", "rms_normalize_no_gain"] = "none"
    note: str = ""


@dataclass(frozen=True)
class HookSpec:
    """A resolved hook for one (model, site, layer, backend)."""

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


def _rows(layers: str, embed: str) -> dict[str, SiteRow]:
    return {
        "resid_post": SiteRow(
            "blocks.{L}.hook_resid_post", "none", (), "blocks.{L}.hook_resid_post", f"{layers}.{{L}}", "output"
        ),
        "attn_out": SiteRow(
            "blocks.{L}.attn.hook_z",
            "hook_z",
            (),
            "blocks.{L}.attn.hook_z",
            f"{layers}.{{L}}.self_attn.o_proj",
            "input",
            note="hook_z is [batch, pos, n_heads, d_head]; flatten heads-major to n_heads*d_head",
        ),
        "mlp_out": SiteRow(
            "blocks.{L}.hook_mlp_out",
            "none",
            (),
            "blocks.{L}.hook_mlp_out",
            f"{layers}.{{L}}.post_feedforward_layernorm",
            "output",
            note="after the post-feed-forward RMSNorm; not mlp.hook_out",
        ),
        "embedding": SiteRow(
            "hook_embed",
            "none",
            (),
            "embed.hook_out",
            embed,
            "output",
            note="embed_tokens output, already x sqrt(d_model)",
        ),
        "gs1_transcoder_in": SiteRow(
            "blocks.{L}.ln2.hook_normalized",
            "none",
            (),
            "blocks.{L}.ln2.hook_normalized",
            f"{layers}.{{L}}.pre_feedforward_layernorm",
            "input",
            "rms_normalize_no_gain",
            note="x / rms(x) of the pre-MLP norm input, without the norm gain (GS1 model card)",
        ),
        "gs2_transcoder_in": SiteRow(
            "blocks.{L}.mlp.hook_in",
            "none",
            ("fold_ln=False",),
            "blocks.{L}.mlp.hook_in",
            f"{layers}.{{L}}.pre_feedforward_layernorm",
            "output",
            note="RMSNorm(x) * (1 + w): needs the gain, so no fold_ln (use from_pretrained_no_processing)",
        ),
        "transcoder_out": SiteRow(
            "blocks.{L}.hook_mlp_out",
            "none",
            (),
            "blocks.{L}.hook_mlp_out",
            f"{layers}.{{L}}.post_feedforward_layernorm",
            "output",
        ),
    }


HOOK_TABLES: dict[Family, dict[str, SiteRow]] = {
    "gemma2": _rows("model.layers", "model.embed_tokens"),
    "gemma3_text": _rows("model.layers", "model.embed_tokens"),
    "gemma3_multimodal": _rows("model.language_model.layers", "model.language_model.embed_tokens"),
}


def hook_for(model: str, site: str, layer: int | None = None, backend: str = "hooked_transformer") -> HookSpec:
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
    return HookSpec(
        model=facts.key,
        site=site,
        layer=layer,
        backend=backend,
        hook_name=fill(hook),
        reshape=row.ht_reshape if backend == "hooked_transformer" else "none",
        requires=row.ht_requires if backend == "hooked_transformer" else (),
        hf_module=fill(row.hf_module) or "",
        hf_io=row.hf_io,
        hf_transform=row.hf_transform,
        note=row.note,
    )
