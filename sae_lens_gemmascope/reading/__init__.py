"""The reading layer: every Gemma Scope weight and examples file is opened here.

* :mod:`.safetensors_file` - GS2 ``params.safetensors``, CLT / crosscoder ``params_layer_{i}``
  files and ``examples.safetensors``, validated by the ``safetensors`` library;
* :mod:`.npz_file` - GS1 ``params.npz``;
* :mod:`.stored` - the copy engine that moves byte ranges into their final tensors (whole tensors,
  latent selections, dtype conversion, zero-copy memory maps);
* :mod:`.weights` - open a weight file for a registry entry and check it against
  :mod:`sae_lens_gemmascope.artifacts` before any data is read.
"""

from .npz_file import NpzFile
from .safetensors_file import TensorFile
from .stored import StoredTensor
from .weights import WeightFile, check_file, open_weights

__all__ = ["NpzFile", "StoredTensor", "TensorFile", "WeightFile", "check_file", "open_weights"]
