"""sae-lens-gemmascope: every Gemma Scope 1 and 2 SAE, transcoder, CLT and crosscoder through SAELens.

Importing the package registers every single-layer release with ``sae_lens.SAE.from_pretrained``
(right away if SAELens is imported, else as soon as it is), so both of these work::

    from sae_lens import SAE
    import sae_lens_gemmascope
    sae = SAE.from_pretrained("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_medium")
    sae = sae_lens_gemmascope.load("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical")

Example:
    >>> import sae_lens_gemmascope
    >>> sae_lens_gemmascope.registry.get("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71").d_sae
    16384
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import registry
from .plugin import register, register_when_sae_lens_is_imported

if TYPE_CHECKING:
    from .evidence.examples import load_examples
    from .evidence.extracted import open_extraction
    from .loading import load, load_with_cfg_and_sparsity
    from .multilayer import Crosscoder, CrossLayerTranscoder
    from .partial import SAEDecoder, SAEEncoder
    from .sparse import decode_sparse, encode_sparse, encode_topk

__all__ = [
    "load",
    "load_with_cfg_and_sparsity",
    "load_examples",
    "open_extraction",
    "registry",
    "register",
    "CrossLayerTranscoder",
    "Crosscoder",
    "SAEEncoder",
    "SAEDecoder",
    "encode_topk",
    "encode_sparse",
    "decode_sparse",
    "attach",
]

_LAZY = {
    "load": ".loading",
    "load_with_cfg_and_sparsity": ".loading",
    "CrossLayerTranscoder": ".multilayer",
    "Crosscoder": ".multilayer",
    "SAEEncoder": ".partial",
    "SAEDecoder": ".partial",
    "encode_topk": ".sparse",
    "encode_sparse": ".sparse",
    "decode_sparse": ".sparse",
    "load_examples": ".evidence.examples",
    "open_extraction": ".evidence.extracted",
}


def __getattr__(name: str) -> Any:  # PEP 562: keep `import sae_lens_gemmascope` cheap
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name == "attach":
        return importlib.import_module(".attach", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_when_sae_lens_is_imported()
