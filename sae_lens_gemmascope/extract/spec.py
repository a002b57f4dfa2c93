"""The extraction job: its command line, its shard, and the identity every shard of a job shares.

A job is fixed by its SAEs, corpus, ``ctx``, ``top_k``, model, ``batch_size``, ``dtype`` and number of
shards: :meth:`ExtractSpec.identity` is written to ``DIR/job.json`` by the first run, and a later run on
the same ``DIR`` with a different identity is refused (:class:`JobMismatchError`), so shards of two
different jobs are never merged. ``device``, ``executor`` and ``ray_address`` may differ between runs.

Documents are cut into **blocks** of ``batch_size`` consecutive documents (block ``b`` holds documents
``b*B .. b*B+B-1``); shard ``I`` of ``N`` processes the blocks with ``b % N == I``. A block is one
forward pass, computed identically whichever shard (or Ray actor) runs it: that is what makes 1 shard
equal to ``N`` shards merged, bit for bit.

Example:
    >>> from sae_lens_gemmascope.extract.spec import parse_shard, shard_from_env
    >>> parse_shard("1/4")
    (1, 4)
    >>> shard_from_env({"RANK": "3", "WORLD_SIZE": "8"})
    (3, 8)
    >>> shard_from_env({}) is None
    True
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import GemmaScopeError

#: Bump when the on-disk layout or the statistics change meaning: old directories are then refused.
FORMAT_VERSION = 1
DTYPES = ("float32", "bfloat16", "float16")
EXECUTORS = ("local", "ray")


class ExtractError(GemmaScopeError, ValueError):
    """An extraction job that cannot run as asked (bad flag, incompatible SAE, missing shard ...)."""


class JobMismatchError(ExtractError):
    """``DIR`` already holds a job with another identity (SAEs, corpus, ctx, top-k, model, shards ...)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        a, b = text.split("/")
        i, n = int(a), int(b)
    except ValueError:
        raise ExtractError(f"--shard takes I/N (e.g. 0/4), got {text!r}.") from None
    if n < 1 or not 0 <= i < n:
        raise ExtractError(f"--shard {text}: need 0 <= I < N (e.g. 0/4 .. 3/4).")
    return i, n


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard ``torchrun`` gives this process (``RANK`` / ``WORLD_SIZE``), or None outside torchrun."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_shard(f"{int(env['RANK'])}/{int(env['WORLD_SIZE'])}")
    return None


@dataclass(frozen=True)
class ExtractSpec:
    """Everything ``gemmascope extract`` was asked (see ``gemmascope extract --help``).

    ``shard`` is ``(I, N)``; None runs every shard of the job not yet finished (``N`` from
    ``DIR/job.json``, else 1). ``top_n`` is the number of top examples kept per feature (1000 in the
    Gemma Scope 2 ``examples.safetensors``). ``check_shapes=False`` accepts SAE files whose shapes
    differ from the registry (small synthetic test files). ``cache_dir`` is the Hugging Face cache of
    the SAE files (default: the standard one).
    """

    saes: tuple[tuple[str, str], ...]
    out: str
    text: str | None = None
    dataset: str | None = None
    split: str | None = None
    column: str = "text"
    ctx: int = 1024
    top_k: int = 64
    model: str | None = None
    executor: str = "local"
    batch_size: int = 8
    device: str | None = None
    dtype: str = "float32"
    ray_address: str | None = None
    shard: tuple[int, int] | None = None
    top_n: int = 1000
    check_shapes: bool = True
    cache_dir: str | None = None
    ray_actors: int | None = None

    def __post_init__(self) -> None:
        if not self.saes:
            raise ExtractError("Give at least one --sae RELEASE SAE_ID.")
        if (self.text is None) == (self.dataset is None):
            raise ExtractError("Give exactly one corpus: --text FILE or --dataset NAME_OR_PATH.")
        if self.ctx < 2:
            raise ExtractError(f"--ctx {self.ctx}: need at least 2 tokens (<bos> and one more).")
        if self.top_k < 1 or self.batch_size < 1 or self.top_n < 1:
            raise ExtractError("--top-k, --batch-size and top_n must be positive.")
        if self.dtype not in DTYPES:
            raise ExtractError(f"--dtype {self.dtype!r}: use one of {', '.join(DTYPES)}.")
        if self.executor not in EXECUTORS:
            raise ExtractError(f"--executor {self.executor!r}: use one of {', '.join(EXECUTORS)}.")
        if len(set(self.saes)) != len(self.saes):
            raise ExtractError("The same --sae is given twice.")

    @property
    def multi(self) -> bool:
        """True when several SAEs run: rows then carry ``release`` and ``sae_id`` columns."""
        return len(self.saes) > 1

    def corpus_identity(self) -> dict[str, Any]:
        if self.text is not None:
            p = Path(self.text).resolve()
            size = p.stat().st_size if p.exists() else None
            return {"text": str(p), "bytes": size}
        return {"dataset": self.dataset, "split": self.split, "column": self.column}

    def identity(self, n_shards: int) -> dict[str, Any]:
        """What every shard of one job shares (written to ``DIR/job.json``)."""
        from .stats import HIST_EDGES_ID

        return {
            "format": FORMAT_VERSION,
            "saes": [list(s) for s in self.saes],
            "corpus": self.corpus_identity(),
            "ctx": self.ctx,
            "top_k": self.top_k,
            "top_n": self.top_n,
            "model": self.model,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "n_shards": n_shards,
            "histogram": HIST_EDGES_ID,
        }

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["saes"] = [list(s) for s in self.saes]
        d["shard"] = list(self.shard) if self.shard else None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExtractSpec:
        d = dict(d)
        d["saes"] = tuple(tuple(s) for s in d["saes"])
        d["shard"] = tuple(d["shard"]) if d.get("shard") else None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_shard(self, shard: tuple[int, int] | None) -> ExtractSpec:
        return replace(self, shard=shard)


def job_file(out: str | os.PathLike[str]) -> Path:
    return Path(out) / "job.json"


def read_job(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``DIR/job.json`` (``{"identity": ..., "spec": ...}``), or None when ``DIR`` holds no job yet."""
    p = job_file(out)
    if not p.exists():
        return None
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return data


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``gemmascope extract`` flags (the contract of issue 13, plus ``--ray-address``)."""
    p.add_argument(
        "--sae",
        nargs=2,
        action="append",
        metavar=("RELEASE", "SAE_ID"),
        required=True,
        help="an SAE or transcoder to extract (repeatable: one forward pass serves them all)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="FILE", help="one document per line; seq = 0-based line index")
    src.add_argument("--dataset", metavar="NAME_OR_PATH", help="a Hugging Face dataset or a local path")
    p.add_argument("--split", help="dataset split (default: train)")
    p.add_argument("--column", default="text", help="dataset text column (default: text)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (Parquet shards)")
    p.add_argument("--ctx", type=int, default=1024, help="tokens per document, <bos> included (1024)")
    p.add_argument("--top-k", type=int, default=64, help="features kept per token (64)")
    p.add_argument("--shard", metavar="I/N", help="run shard I of N (under torchrun: RANK/WORLD_SIZE)")
    p.add_argument("--model", metavar="ID_OR_PATH", help="Hugging Face model (default: the SAEs' model)")
    p.add_argument("--executor", choices=EXECUTORS, default="local")
    p.add_argument("--ray-address", help="Ray cluster address (default: a local ray.init())")
    p.add_argument("--batch-size", type=int, default=8, help="documents per forward pass (8)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument(
        "--no-check-shapes",
        action="store_true",
        help="accept SAE files whose shapes differ from the registry (small synthetic test files)",
    )


def spec_from_args(args: argparse.Namespace) -> ExtractSpec:
    """An :class:`ExtractSpec` from parsed ``gemmascope extract`` arguments."""
    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    return ExtractSpec(
        saes=tuple((r, s) for r, s in args.sae),
        out=args.out,
        text=args.text,
        dataset=args.dataset,
        split=args.split,
        column=args.column,
        ctx=args.ctx,
        top_k=args.top_k,
        model=args.model,
        executor=args.executor,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        ray_address=args.ray_address,
        shard=shard,
        check_shapes=not args.no_check_shapes,
    )
