"""Shard output and resume: atomic publication of shard tables, markers and the job file.

Layout of ``DIR`` (each table a directory of Parquet files that pandas, pyarrow and duckdb read
directly, e.g. ``pandas.read_parquet("DIR/rows")`` or ``SELECT * FROM 'DIR/rows/*.parquet'``)::

    job.json                                   the job (identity + spec), written by the first run
    rows/shard-00000-of-00002.parquet          seq, pos, feature, value [, release, sae_id]
    stats/shard-00000-of-00002.parquet         release, sae_id, feature, count, sum_fx, max, hist
    examples/shard-00000-of-00002.parquet      release, sae_id, feature, value, seq, pos (top-N)
    tokens/shard-00000-of-00002.parquet        seq, ids (the token ids the shard read, <bos> first)
    shards/shard-00000-of-00002.json           written last: the shard is finished

Nothing appears half-written: every file is written to a hidden temporary file in its own directory
(``.shard-….parquet.tmp-<pid>``, which the Parquet readers skip) and moved into place with
``os.replace``; the shard's ``.json`` marker comes last. A run that dies leaves only hidden
temporaries, which the next run of that shard removes. A shard whose marker exists is skipped, so
re-running the same command does nothing; a shard without its marker is recomputed from its start.

Example:
    >>> from sae_lens_gemmascope.extract.shards import shard_name, docs_in_shard
    >>> shard_name(0, 2), docs_in_shard(10, batch_size=3, shard=(1, 2))
    ('shard-00000-of-00002', 4)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .spec import ExtractSpec, JobMismatchError, job_file, read_job

TABLES = ("rows", "stats", "examples", "tokens")
_ROW_GROUP = 1 << 18  # rows per Parquet row group (and per flush of the open shard file)


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}"


def marker_path(out: str | os.PathLike[str], i: int, n: int) -> Path:
    return Path(out) / "shards" / f"{shard_name(i, n)}.json"


def table_path(out: str | os.PathLike[str], table: str, i: int, n: int) -> Path:
    return Path(out) / table / f"{shard_name(i, n)}.parquet"


def is_done(out: str | os.PathLike[str], i: int, n: int) -> bool:
    return marker_path(out, i, n).exists()


def docs_in_shard(total: int, *, batch_size: int, shard: tuple[int, int]) -> int:
    """How many of ``total`` documents shard ``(I, N)`` reads (blocks ``b % N == I``)."""
    i, n = shard
    n_blocks = -(-total // batch_size)
    return sum(min(batch_size, total - b * batch_size) for b in range(i, n_blocks, n))


def _tmp_for(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` (``os.replace``),
    on any error remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def clean_stale(out: str | os.PathLike[str], i: int, n: int) -> None:
    """Remove the hidden temporaries a killed run of shard ``(i, n)`` left behind."""
    for table in (*TABLES, "shards"):
        d = Path(out) / table
        if d.is_dir():
            for p in d.glob(f".{shard_name(i, n)}.*.tmp-*"):
                p.unlink(missing_ok=True)


def prepare_job(spec: ExtractSpec) -> tuple[int, list[int]]:
    """Check or create ``DIR/job.json``; return ``(N, shards of this run not finished yet)``."""
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    have = read_job(out)
    if spec.shard is not None:
        n, todo = spec.shard[1], [spec.shard[0]]
    else:
        n = int(have["identity"]["n_shards"]) if have else 1
        todo = list(range(n))
    ident = spec.identity(n)
    if have is not None:
        diff = sorted(
            k for k in set(ident) | set(have["identity"]) if ident.get(k) != have["identity"].get(k)
        )
        if diff:
            detail = "; ".join(f"{k}: {have['identity'].get(k)!r} there, {ident.get(k)!r} now" for k in diff)
            raise JobMismatchError(
                f"{out} holds another extraction job ({detail}). Use a new --out directory, or repeat the "
                "original command (only --shard I, --executor, --device and --ray-address may change)."
            )
    else:
        write_json_atomic(job_file(out), {"identity": ident, "spec": spec.with_shard(None).to_json()})
    return n, [i for i in todo if not is_done(out, i, n)]


def sae_key(release: str, sae_id: str) -> str:
    return f"{release}/{sae_id}"


class ShardWriter:
    """Collects one shard's block results and publishes its files atomically (see the module)."""

    def __init__(self, spec: ExtractSpec, i: int, n: int, slots: list[Any]) -> None:
        import pyarrow as pa

        from .stats import FeatureStats

        self.spec, self.i, self.n, self.slots = spec, i, n, slots
        self.out = Path(spec.out)
        clean_stale(self.out, i, n)
        self.stats = [FeatureStats(s.d_sae, spec.top_n) for s in slots]
        fields = [("seq", pa.int64()), ("pos", pa.int32()), ("feature", pa.int32()), ("value", pa.float32())]
        if spec.multi:
            fields += [("release", pa.string()), ("sae_id", pa.string())]
        self.row_schema = pa.schema(fields)
        self.tok_schema = pa.schema([("seq", pa.int64()), ("ids", pa.list_(pa.int32()))])
        self._tmps: dict[str, Path] = {}
        self._writers: dict[str, Any] = {}
        self._buf: dict[str, list[Any]] = {"rows": [], "tokens": []}
        self._buf_rows = {"rows": 0, "tokens": 0}
        self.n_docs = self.n_tokens = self.n_rows = self.n_blocks = 0
        self.t0 = time.perf_counter()

    def _writer(self, table: str) -> Any:
        import pyarrow.parquet as pq

        if table not in self._writers:
            path = table_path(self.out, table, self.i, self.n)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tmps[table] = _tmp_for(path)
            schema = self.row_schema if table == "rows" else self.tok_schema
            self._writers[table] = pq.ParquetWriter(self._tmps[table], schema, compression="zstd")
        return self._writers[table]

    def _push(self, table: str, t: Any, flush: bool = False) -> None:
        import pyarrow as pa

        if t is not None and t.num_rows:
            self._buf[table].append(t)
            self._buf_rows[table] += t.num_rows
        if self._buf[table] and (flush or self._buf_rows[table] >= _ROW_GROUP):
            self._writer(table).write_table(pa.concat_tables(self._buf[table]), row_group_size=_ROW_GROUP)
            self._buf[table], self._buf_rows[table] = [], 0

    def add(self, result: Any) -> None:
        """Add one :class:`~sae_lens_gemmascope.extract.runner.BlockResult`."""
        import numpy as np
        import pyarrow as pa

        for s, st, r in zip(self.slots, self.stats, result.per_sae, strict=True):
            r.add_to(st)
            cols: dict[str, Any] = {
                "seq": pa.array(r.seq.numpy()),
                "pos": pa.array(r.pos.numpy()),
                "feature": pa.array(r.feature.numpy()),
                "value": pa.array(r.value.numpy()),
            }
            if self.spec.multi:
                cols["release"] = pa.array([s.release] * len(r.seq), pa.string())
                cols["sae_id"] = pa.array([s.sae_id] * len(r.seq), pa.string())
            self._push("rows", pa.table(cols, schema=self.row_schema))
            self.n_rows += len(r.seq)
        ids = pa.array([np.asarray(x, dtype=np.int32) for x in result.ids], pa.list_(pa.int32()))
        self._push("tokens", pa.table({"seq": pa.array(result.seqs, pa.int64()), "ids": ids}))
        self.n_docs += len(result.seqs)
        self.n_tokens += result.n_tokens
        self.n_blocks += 1

    def commit(self) -> dict[str, Any]:
        """Write stats and examples, publish the four tables, then the marker. Returns the marker."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for table in ("rows", "tokens"):
            self._push(table, None, flush=True)
            w = self._writer(table)  # an empty shard still gets (empty) files
            w.close()
        extra = [{"release": s.release, "sae_id": s.sae_id} for s in self.slots]
        stats = pa.concat_tables([st.stats_table(e) for st, e in zip(self.stats, extra, strict=True)])
        exs = pa.concat_tables([st.examples_table(e) for st, e in zip(self.stats, extra, strict=True)])
        for table, t in (("stats", stats), ("examples", exs)):
            path = table_path(self.out, table, self.i, self.n)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tmps[table] = _tmp_for(path)
            pq.write_table(t, self._tmps[table], compression="zstd")
        for table in TABLES:
            os.replace(self._tmps.pop(table), table_path(self.out, table, self.i, self.n))
        marker = {
            "shard": [self.i, self.n],
            "docs": self.n_docs,
            "tokens": self.n_tokens,
            "blocks": self.n_blocks,
            "rows": self.n_rows,
            "seconds": round(time.perf_counter() - self.t0, 3),
            "saes": [
                {"release": s.release, "sae_id": s.sae_id, "d_sae": s.d_sae, "n_tokens": st.n_tokens}
                for s, st in zip(self.slots, self.stats, strict=True)
            ],
        }
        write_json_atomic(marker_path(self.out, self.i, self.n), marker)
        return marker

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:  # pragma: no cover - closing a broken writer
                pass
        for p in self._tmps.values():
            p.unlink(missing_ok=True)
        self._tmps.clear()


@contextmanager
def shard_writer(spec: ExtractSpec, i: int, n: int, slots: list[Any]) -> Iterator[ShardWriter]:
    """A :class:`ShardWriter` that removes its temporaries if the block raises."""
    w = ShardWriter(spec, i, n, slots)
    try:
        yield w
    except BaseException:
        w.abort()
        raise


def progress(total_docs: int | None, desc: str) -> Any:
    """A tqdm bar over documents (ETA) that shows tokens/s."""
    from tqdm.auto import tqdm

    return tqdm(total=total_docs, desc=desc, unit="doc", dynamic_ncols=True, smoothing=0.1)


def shard_blocks(spec: ExtractSpec, tokenizer: Any, i: int, n: int) -> Iterator[Any]:
    """The token blocks (:class:`~.corpus.Block`) that shard ``i`` of ``n`` reads, in order."""
    from .corpus import iter_blocks

    return iter_blocks(
        spec.text,
        spec.dataset,
        spec.split,
        spec.column,
        tokenizer,
        ctx=spec.ctx,
        batch_size=spec.batch_size,
        shard=(i, n),
    )


def shard_progress(spec: ExtractSpec, total_docs: int | None, i: int, n: int, label: str = "") -> Any:
    """The bar of shard ``i`` of ``n`` (its share of ``total_docs`` when the corpus size is known)."""
    docs = (
        docs_in_shard(total_docs, batch_size=spec.batch_size, shard=(i, n))
        if total_docs is not None
        else None
    )
    return progress(docs, shard_name(i, n) + (f" ({label})" if label else ""))


def advance(bar: Any, writer: ShardWriter, n_docs: int) -> None:
    """Move ``bar`` (None when quiet) by ``n_docs`` documents and show the shard's tokens/s so far."""
    if bar is None:
        return
    bar.update(n_docs)
    rate = writer.n_tokens / max(1e-9, time.perf_counter() - writer.t0)
    bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
