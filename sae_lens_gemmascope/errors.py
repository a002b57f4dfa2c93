"""Typed exceptions. Every message says what was asked, what exists nearby, and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


class RegistryValidationError(GemmaScopeError, ValueError):
    """The YAML registry breaks its schema or a semantic rule."""


class ArtifactNotCachedError(GemmaScopeError, FileNotFoundError):
    """A file is needed, the hub is not reachable (offline), and it is not in the local cache."""


class CorruptArtifactError(GemmaScopeError, ValueError):
    """A downloaded file is truncated, unreadable, or holds NaN/inf values."""


class ShapeMismatchError(GemmaScopeError, ValueError):
    """A tensor on disk disagrees with the shape the registry records."""


class HookMappingError(GemmaScopeError, ValueError):
    """A site cannot be reached on the given model/backend without silently changing its meaning."""


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates that look like ``word`` (best first)."""
    cands = list(candidates)
    found = difflib.get_close_matches(word, cands, n=n, cutoff=0.6)
    if len(found) < n:
        low = word.lower()
        for c in cands:
            if c not in found and (low in c.lower() or c.lower() in low):
                found.append(c)
            if len(found) >= n:
                break
    return found[:n]
