"""Model facts (from ``registry/models.yaml``) for every model Gemma Scope was trained on.

Example:
    >>> from sae_lens_gemmascope.models import get_model
    >>> m = get_model("google/gemma-3-270m")
    >>> (m.key, m.family, m.n_layers, m.d_model, m.attn_width)
    ('gemma-3-270m', 'gemma3_text', 18, 640, 1024)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ._index import manifest
from .errors import UnknownModelError, close_matches

Family = Literal["gemma2", "gemma3_text", "gemma3_multimodal"]


@dataclass(frozen=True)
class ModelFacts:
    """Architecture facts of one Gemma model (one row of ``registry/models.yaml``)."""

    key: str
    hf_id: str
    family: Family
    variant: Literal["pt", "it"]
    base: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    neuronpedia_model: str
    subset_layers: tuple[int, ...] = ()
    chat_prefix_tokens: tuple[int, ...] = ()

    @property
    def attn_width(self) -> int:
        """n_heads x d_head: the width of the concatenated head outputs (attention SAE d_in)."""
        return self.n_heads * self.d_head

    @property
    def hf_layers_path(self) -> str:
        """Module path of the decoder layers in the Hugging Face model class."""
        return "model.language_model.layers" if self.family == "gemma3_multimodal" else "model.layers"


@lru_cache(maxsize=1)
def _all() -> dict[str, ModelFacts]:
    out = {}
    for key, m in manifest()["models"].items():
        out[key] = ModelFacts(
            key=key,
            hf_id=m["hf_id"],
            family=m["family"],
            variant=m["variant"],
            base=m["base"],
            n_layers=int(m["n_layers"]),
            d_model=int(m["d_model"]),
            n_heads=int(m["n_heads"]),
            n_kv_heads=int(m["n_kv_heads"]),
            d_head=int(m["d_head"]),
            d_mlp=int(m["d_mlp"]),
            neuronpedia_model=m["neuronpedia_model"],
            subset_layers=tuple(m.get("subset_layers") or ()),
            chat_prefix_tokens=tuple(m.get("chat_prefix_tokens") or ()),
        )
    return out


def get_model(name: str) -> ModelFacts:
    """Model facts by key (``gemma-2-2b``), HF id (``google/gemma-3-1b-pt``) or bare HF name.

    ``google/gemma-3-270m-pt`` (the id written in some GS2 config.json files, which does not exist
    on the hub) resolves to ``gemma-3-270m``.
    """
    models = _all()
    if name in models:
        return models[name]
    short = name.split("/")[-1]
    for m in models.values():
        if name == m.hf_id or short == m.key:
            return m
    if short == "gemma-3-270m-pt":
        return models["gemma-3-270m"]
    near = close_matches(short, models)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise UnknownModelError(f"Unknown model {name!r}.{hint} Known models: {', '.join(models)}.")
