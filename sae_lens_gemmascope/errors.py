"""Typed exceptions. Every message says what was asked, what exists nearby, and what to do.

Each class also subclasses the standard (or ``huggingface_hub``) class that code written for SAELens
and the hub already catches: an unknown id is a ``ValueError``, a file that is not cached offline is
a ``huggingface_hub.errors.LocalEntryNotFoundError`` (so also a ``FileNotFoundError``), a bad argument
is a ``ValueError`` and a ``TypeError``.

Example:
    >>> from huggingface_hub.errors import LocalEntryNotFoundError
    >>> from sae_lens_gemmascope.errors import ArtifactNotCachedError, GemmaScopeError
    >>> issubclass(ArtifactNotCachedError, LocalEntryNotFoundError), issubclass(ArtifactNotCachedError, GemmaScopeError)
    (True, True)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any


class GemmaScopeError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownReleaseError(GemmaScopeError, KeyError, ValueError):
    """The release name is not in the registry (a ``ValueError`` too, like SAELens' own error)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownSaeIdError(GemmaScopeError, KeyError, ValueError):
    """The release exists but has no such sae_id (a ``ValueError`` too, like SAELens' own error)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownModelError(GemmaScopeError, KeyError, ValueError):
    """A model name that is not in ``registry/models.yaml``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegistryValidationError(GemmaScopeError, ValueError):
    """The YAML registry breaks its schema or a semantic rule."""


class InvalidArgumentError(GemmaScopeError, ValueError, TypeError):
    """An argument of a public function is nonsense (a device, a dtype, a layer index, a limit)."""


class DeviceUnavailableError(InvalidArgumentError):
    """The device asked for does not exist in this torch build or on this machine."""


class BlockIndexError(GemmaScopeError, IndexError):
    """A block / layer / latent index outside the range an object holds."""


class LatentIndexError(GemmaScopeError, IndexError):
    """A latent (feature) id outside the artifact's ``0..d_sae-1``."""


class CorruptArtifactError(GemmaScopeError, ValueError):
    """A downloaded file is truncated, unreadable, or holds NaN/inf values."""


class ShapeMismatchError(GemmaScopeError, ValueError):
    """A tensor on disk disagrees with the shape the registry records."""


class CacheEntryError(GemmaScopeError, OSError):
    """A path in the Hugging Face cache is not a regular file (a directory, a FIFO, a device, a socket)."""


class HubRequestError(GemmaScopeError, OSError):
    """The hub answered with an error (5xx, 4xx other than 'no such file') while downloading."""


class RemoteFileNotFoundError(GemmaScopeError, FileNotFoundError):
    """The hub answered that the file does not exist (HTTP 404 for that path)."""


class DownloadIncompleteError(GemmaScopeError, OSError):
    """``gemmascope download`` / :func:`sae_lens_gemmascope.download.download` left files missing."""


class HookMappingError(GemmaScopeError, ValueError):
    """A site cannot be reached on the given model/backend without silently changing its meaning."""


class FeaturesNotRecordedError(GemmaScopeError, KeyError):
    """Recorded features were asked for before any forward pass ran inside the context."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ``ArtifactNotCachedError`` subclasses huggingface_hub's ``LocalEntryNotFoundError``. Importing
# ``huggingface_hub.errors`` costs ~0.3 s (httpx), so the class is made on first use (PEP 562) and
# ``import sae_lens_gemmascope`` stays cheap.
if TYPE_CHECKING:
    from huggingface_hub.errors import LocalEntryNotFoundError

    class ArtifactNotCachedError(GemmaScopeError, LocalEntryNotFoundError):
        """A file is needed, the hub may not or cannot be reached, and it is not in the local cache."""

else:
    _LAZY: dict[str, type] = {}

    def _make_not_cached() -> type:
        from huggingface_hub.errors import LocalEntryNotFoundError

        def __init__(self: Any, message: str) -> None:
            LocalEntryNotFoundError.__init__(self, message)

        return type(
            "ArtifactNotCachedError",
            (GemmaScopeError, LocalEntryNotFoundError),
            {
                "__init__": __init__,
                "__module__": __name__,
                "__qualname__": "ArtifactNotCachedError",
                "__doc__": "A file is needed, the hub may not or cannot be reached, and it is not in the "
                "local cache (a huggingface_hub LocalEntryNotFoundError, hence a FileNotFoundError).",
            },
        )

    def __getattr__(name: str) -> Any:
        if name == "ArtifactNotCachedError":
            if name not in _LAZY:
                _LAZY[name] = _make_not_cached()
            return _LAZY[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NUM = re.compile(r"\d+(?:\.\d+)?")


def _numbers(s: str) -> list[float]:
    return [float(x) for x in _NUM.findall(s)]


def _l0_neighbours(word: str, cands: list[str], n: int) -> list[str]:
    """Candidates equal to ``word`` except in their last number, nearest in that number first.

    A typo in an L0 (``average_l0_7l`` or ``average_l0_72`` where 71 exists) then suggests the L0s of
    the same folder, closest first, instead of whatever string looks most alike.
    """
    m = list(_NUM.finditer(word))
    if not m:
        return []
    last = m[-1]
    prefix, suffix = word[: last.start()], word[last.end() :]
    target = float(last.group())
    scored: list[tuple[float, str]] = []
    for c in cands:
        cm = list(_NUM.finditer(c))
        if not cm or c[: cm[-1].start()] != prefix or c[cm[-1].end() :] != suffix:
            continue
        scored.append((abs(float(cm[-1].group()) - target), c))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [c for _, c in scored[:n]]


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates that look like ``word`` (best first).

    Ids that differ from ``word`` only in their last number (the L0 of a Gemma Scope 1 id) come
    first, ranked by how near that number is; then string look-alikes.

    >>> close_matches("layer_20/width_16k/average_l0_72", [
    ...     "layer_20/width_16k/average_l0_22", "layer_20/width_16k/average_l0_71",
    ...     "layer_20/width_16k/average_l0_139", "layer_2/width_16k/average_l0_72"])[:2]
    ['layer_20/width_16k/average_l0_71', 'layer_20/width_16k/average_l0_22']
    """
    cands = list(candidates)
    found = _l0_neighbours(word, cands, n)
    for c in difflib.get_close_matches(word, cands, n=n, cutoff=0.6):
        if c not in found:
            found.append(c)
    if len(found) < n:
        low = word.lower()
        for c in cands:
            if c not in found and (low in c.lower() or c.lower() in low):
                found.append(c)
            if len(found) >= n:
                break
    return found[:n]
