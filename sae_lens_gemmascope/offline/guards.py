"""Guards that keep a run offline and stop stray package installs (used by the offline stand-ins).

Example:
    >>> import os
    >>> from sae_lens_gemmascope.offline.guards import offline_hub
    >>> with offline_hub():
    ...     os.environ["HF_HUB_OFFLINE"]
    '1'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Make huggingface_hub / transformers fail fast instead of retrying a network call."""
    import os

    import huggingface_hub.constants as hfc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hfc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hfc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hfc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


@contextlib.contextmanager
def no_package_installs() -> Iterator[None]:
    """Make any ``pip`` / ``uv`` run started inside the block fail at once instead of installing.

    TransformerLens 3.9's ``boot_transformers`` runs ``pip install torchvision`` into the current
    interpreter when a multimodal model's processor cannot be loaded (always, offline). With an
    unpinned index that replaces torch with a multi-GB CUDA build in the middle of a session; with
    no index reachable it only costs time. The bridge works without the processor (text only).
    """
    import os

    saved = {k: os.environ.get(k) for k in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "UV_OFFLINE", "UV_NO_INDEX")}
    os.environ.update({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "UV_OFFLINE": "1", "UV_NO_INDEX": "1"})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
