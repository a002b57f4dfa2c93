"""Feature evidence: what a latent fires on, from the official ``examples.safetensors``.

* :mod:`.examples` reads the file lazily (``load_examples``), one feature's rows at a time;
* :mod:`.extracted` opens the merged evidence of a ``gemmascope extract`` run (``open_extraction``),
  for any SAE, Gemma Scope 1 included;
* :mod:`.vocab` turns Gemma 3 token ids into display strings (one vocabulary for every size);
* :mod:`.explain` prints it (``gemmascope explain``);
* :mod:`.dashboard` writes a static, offline, sharded feature site (``gemmascope dashboard``).

Example:
    >>> from sae_lens_gemmascope.evidence import EXAMPLES_FILE
    >>> EXAMPLES_FILE
    'examples.safetensors'
"""

from __future__ import annotations

from ..artifacts import EXAMPLES_FILE
from .examples import (
    Example,
    Examples,
    ExamplesNotAvailableError,
    FeatureLogits,
    LogitToken,
    load_examples,
    open_examples,
)
from .extracted import open_extraction

__all__ = [
    "EXAMPLES_FILE",
    "Example",
    "Examples",
    "ExamplesNotAvailableError",
    "FeatureLogits",
    "LogitToken",
    "load_examples",
    "open_examples",
    "open_extraction",
]
