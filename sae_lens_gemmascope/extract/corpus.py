"""Documents -> token blocks: a text file (one document per line) or a ``datasets`` dataset, in order.

Every document is tokenised without special tokens, ``<bos>`` is put first, and the result is cut to
``ctx`` tokens, so position 0 is always ``<bos>``. ``seq`` is the 0-based document index (the line
index of a text file, empty lines included). Block ``b`` holds documents ``b*B .. b*B+B-1``
(``B = batch_size``) and belongs to shard ``b % N``.

Example:
    >>> import tempfile, pathlib
    >>> from sae_lens_gemmascope.extract.corpus import iter_blocks, iter_texts
    >>> from sae_lens_gemmascope.offline.tiny import tiny_tokenizer
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.txt"
    >>> _ = f.write_text("w5 w6 w7\\n\\nw9\\n")
    >>> list(iter_texts(str(f), None, None, "text"))
    ['w5 w6 w7', '', 'w9']
    >>> [(b.index, b.seqs, b.ids) for b in iter_blocks(str(f), None, None, "text", tiny_tokenizer(), ctx=3,
    ...                                               batch_size=2, shard=(1, 2))]
    [(1, [2], [[2, 9]])]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import ExtractError

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


@dataclass(frozen=True)
class Block:
    """One forward pass worth of documents: ``seqs[i]`` is the document index of ``ids[i]``."""

    index: int
    seqs: list[int]
    ids: list[list[int]]

    @property
    def n_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def _load_dataset(name: str, split: str | None) -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets comes with sae-lens
        raise ExtractError("--dataset needs the `datasets` package: pip install datasets") from e
    path = Path(name)
    if path.is_dir() and any((path / f).exists() for f in ("state.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            want = split or "train"
            if want not in ds:
                raise ExtractError(f"{name} has splits {', '.join(ds)}, not {want!r}: pass --split.")
            ds = ds[want]
        return ds
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ExtractError(
                f"--dataset {name}: unknown file type {path.suffix!r}; use one of "
                f"{', '.join(_FILE_BUILDERS)}, a saved dataset directory, or --text for plain lines."
            )
        return datasets.load_dataset(builder, data_files=str(path), split=split or "train")
    return datasets.load_dataset(name, split=split or "train", streaming=True)


def iter_texts(text: str | None, dataset: str | None, split: str | None, column: str) -> Iterator[str]:
    """The documents, in order: the lines of ``text`` (newline removed), or ``dataset[column]``."""
    if text is not None:
        p = Path(text)
        if not p.is_file():
            raise ExtractError(f"--text {text}: no such file.")
        with p.open(encoding="utf-8") as f:
            for line in f:
                yield line[:-1] if line.endswith("\n") else line
        return
    assert dataset is not None
    ds = _load_dataset(dataset, split)
    cols = getattr(ds, "column_names", None)
    if cols is not None and column not in cols:
        raise ExtractError(
            f"--dataset {dataset} has columns {', '.join(cols)}, not {column!r}: pass --column."
        )
    for row in ds:
        yield str(row[column])


def count_docs(text: str | None, dataset: str | None, split: str | None) -> int | None:
    """The number of documents when it is cheap to know (a text file, a map-style dataset), else None."""
    if text is not None:
        n, last = 0, b"\n"
        with open(text, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        return n + (last != b"\n")
    try:
        return len(_load_dataset(str(dataset), split))
    except TypeError:  # streaming
        return None


def token_ids(tokenizer: Any, text: str, ctx: int) -> list[int]:
    """``[<bos>, *tokens(text)]`` cut to ``ctx`` tokens."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ExtractError("The tokenizer has no <bos> token; Gemma Scope features need one at position 0.")
    ids = tokenizer(text, add_special_tokens=False).input_ids if text else []
    return [int(bos), *ids[: ctx - 1]]


def iter_blocks(
    text: str | None,
    dataset: str | None,
    split: str | None,
    column: str,
    tokenizer: Any,
    *,
    ctx: int,
    batch_size: int,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[Block]:
    """The blocks of shard ``shard = (I, N)``: every ``N``-th block of ``batch_size`` documents."""
    i, n = shard
    seqs: list[int] = []
    texts: list[str] = []
    b = 0
    for seq, doc in enumerate(iter_texts(text, dataset, split, column)):
        if b % n == i:
            seqs.append(seq)
            texts.append(doc)
        if (seq + 1) % batch_size == 0:
            if seqs:
                yield Block(b, seqs, [token_ids(tokenizer, t, ctx) for t in texts])
            seqs, texts, b = [], [], b + 1
    if seqs:
        yield Block(b, seqs, [token_ids(tokenizer, t, ctx) for t in texts])
