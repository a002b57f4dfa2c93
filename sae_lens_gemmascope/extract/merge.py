"""``gemmascope merge DIR``: combine the shards of a finished job.

Writes, under ``DIR/merged/``:

* ``stats.parquet``: per SAE and active feature, ``count``, ``sum`` (float64 from the exact fixed-point
  ``sum_fx``), ``max``, ``mean``, ``frequency`` (count / tokens read) and the histogram;
* ``examples.parquet``: the top-N examples per feature (``value, seq, pos``; value descending, then
  ``seq``, ``pos``);
* ``vocab.json``: the tokenizer's pieces, so the evidence tools decode with it (:func:`vocab_path`);
* ``<release>/<sae_id>/examples.safetensors`` per SAE, in the Gemma Scope 2 format
  (``gemma-scope-2.md`` §2.3): ``activations`` (W, N) f32, ``seq_ids`` (W, N) i64, ``positions``
  (W, N) i32, ``logit_effects`` (W, N) f32, ``top_tokens`` / ``bottom_tokens`` (W, 10) i32,
  ``top_logits`` / ``bottom_logits`` (W, 10) f32, ``feature_frequencies`` (W,) f64, ``tokens``
  (N_seq, ctx) i32: the corpus tokens (``<bos>`` first, right-padded with the pad id). ``N`` is the
  job's ``top_n`` (1000). A feature with fewer than ``N`` examples has empty slots: activation 0,
  ``seq_ids`` and ``positions`` -1. The logit columns are described in :mod:`.logits`.

Every shard ``0..N-1`` must be finished. Merging is exact (:mod:`.stats`), so the files are the same,
bit for bit, whether the job ran as 1 shard or many. The evidence tools read the result for any SAE,
Gemma Scope 1 included: ``gemmascope explain RELEASE SAE_ID FEATURE --from DIR``, ``gemmascope dashboard
RELEASE SAE_ID --from DIR --out SITE``, or :func:`sae_lens_gemmascope.evidence.open_extraction`.

Example:
    >>> from sae_lens_gemmascope.extract.merge import examples_path
    >>> examples_path("out", "gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium").as_posix()
    'out/merged/gemma-scope-2-270m-pt-res/layer_9_width_16k_l0_medium/examples.safetensors'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import EXAMPLES_FILE, EXAMPLES_TENSORS
from .shards import atomic_path, marker_path, shard_name, table_path
from .spec import ExtractError, ExtractSpec, read_job
from .stats import FeatureStats

EXAMPLE_KEYS = tuple(EXAMPLES_TENSORS)  # the Gemma Scope 2 layout (artifacts.EXAMPLES_TENSORS)


def examples_path(out: str | os.PathLike[str], release: str, sae_id: str) -> Path:
    """Where ``merge`` writes the ``examples.safetensors`` of one SAE."""
    return Path(out) / "merged" / release / sae_id / EXAMPLES_FILE


def vocab_path(out: str | os.PathLike[str]) -> Path:
    """Where ``merge`` writes the extraction tokenizer's vocabulary (``{"tokenizer": name,
    "pad_token_id": id that right-pads the corpus rows, "pieces": [piece of id 0, 1, ...]}``), so that ``explain`` / ``dashboard --from DIR`` decode the corpus
    tokens with the tokenizer that made them, without loading it."""
    return Path(out) / "merged" / "vocab.json"


def write_vocab(out: str | os.PathLike[str], tokenizer: Any, pad_id: int) -> Path:
    """Write :func:`vocab_path` from ``tokenizer`` (atomically)."""
    path = vocab_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "tokenizer": str(getattr(tokenizer, "name_or_path", "") or ""),
        "pad_token_id": int(pad_id),
        "pieces": tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _only(t: Any, release: str, sae_id: str) -> Any:
    import pyarrow.compute as pc

    return t.filter(pc.and_(pc.equal(t["release"], release), pc.equal(t["sae_id"], sae_id)))


def _shard_tables(out: Path, n: int, i: int) -> tuple[Any, Any]:
    import pyarrow.parquet as pq

    return pq.read_table(table_path(out, "stats", i, n)), pq.read_table(table_path(out, "examples", i, n))


def finished_job(out: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(job, shard markers)`` of a job whose shards are all finished; a typed error otherwise."""
    out = Path(out)
    job = read_job(out)
    if job is None:
        raise ExtractError(
            f"{out} holds no extraction (no job.json). Run `gemmascope extract ... --out {out}`."
        )
    n = int(job["identity"]["n_shards"])
    missing = [i for i in range(n) if not marker_path(out, i, n).exists()]
    if missing:
        todo = ", ".join(f"--shard {i}/{n}" for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ExtractError(
            f"{out}: {len(missing)} of {n} shards are not finished ({shard_name(missing[0], n)} ...). "
            f"Run the same `gemmascope extract` command with {todo}, then merge again."
        )
    return job, [json.loads(marker_path(out, i, n).read_text(encoding="utf-8")) for i in range(n)]


def merged_stats(
    out: str | os.PathLike[str],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[FeatureStats]]:
    """``(job, per-SAE info, per-SAE merged FeatureStats)`` of a finished job (no model needed)."""
    out = Path(out)
    job, markers = finished_job(out)
    n = len(markers)
    top_n = int(job["identity"]["top_n"])
    saes = [tuple(s) for s in job["identity"]["saes"]]
    infos = [
        {"release": r, "sae_id": s, "d_sae": int(markers[0]["saes"][k]["d_sae"])}
        for k, (r, s) in enumerate(saes)
    ]
    merged = [FeatureStats(info["d_sae"], top_n) for info in infos]
    for i, m in enumerate(markers):  # one shard at a time: the merge is exact in any order
        st, ex = _shard_tables(out, n, i)
        for k, (release, sae_id) in enumerate(saes):
            part = FeatureStats.from_tables(
                infos[k]["d_sae"],
                top_n,
                m["saes"][k]["n_tokens"],
                _only(st, release, sae_id),
                _only(ex, release, sae_id),
            )
            merged[k].merge(part)
    for info, acc in zip(infos, merged, strict=True):
        info["n_tokens"] = acc.n_tokens
    return job, infos, merged


def corpus_tokens(out: str | os.PathLike[str], n: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, lengths)``: the ``(N_seq, ctx)`` int32 token matrix of the documents the job read
    (right-padded with ``pad_id``) and each document's length."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.concat_tables([pq.read_table(table_path(out, "tokens", i, n)) for i in range(n)])
    seqs = t.column("seq").to_numpy()
    ids = t.column("ids").to_pylist()
    n_seq = int(seqs.max()) + 1 if len(seqs) else 0
    ctx = max((len(x) for x in ids), default=1)
    mat = np.full((n_seq, ctx), pad_id, dtype=np.int32)
    lengths = np.zeros(n_seq, dtype=np.int64)
    for s, x in zip(seqs, ids, strict=True):
        mat[int(s), : len(x)] = x
        lengths[int(s)] = len(x)
    return mat, lengths


def _stats_table(info: dict[str, Any], acc: FeatureStats) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = acc.stats_table({"release": info["release"], "sae_id": info["sae_id"]})
    s = pc.divide(pc.cast(t["sum_fx"], pa.float64()), float(2**24))
    t = t.append_column("sum", s)
    t = t.append_column("mean", pc.divide(s, pc.cast(t["count"], pa.float64())))
    freq = pc.divide(pc.cast(t["count"], pa.float64()), float(max(1, acc.n_tokens)))
    return t.append_column("frequency", freq)


def examples_arrays(
    acc: FeatureStats, tokens: np.ndarray, lengths: np.ndarray, logit_chunks: Any, n_tokens: int
) -> dict[str, np.ndarray]:
    """The Gemma Scope 2 ``examples.safetensors`` arrays of one SAE (see the module docstring);
    ``logit_chunks`` yields ``(first feature, logit directions [chunk, vocab])`` (:mod:`.logits`)."""
    from .logits import N_LOGITS

    w, top_n = acc.d_sae, acc.top_n
    f, v, s, p = (x.cpu().numpy() for x in acc.examples())
    counts = np.bincount(f, minlength=w)
    rank = np.arange(len(f)) - (np.cumsum(counts) - counts)[f]
    acts = np.zeros((w, top_n), np.float32)
    seq_ids = np.full((w, top_n), -1, np.int64)
    positions = np.full((w, top_n), -1, np.int32)
    acts[f, rank], seq_ids[f, rank], positions[f, rank] = v, s, p
    has_next = np.zeros((w, top_n), bool)
    nxt = np.zeros((w, top_n), np.int64)
    if len(f):
        ok = p + 1 < lengths[s]
        has_next[f[ok], rank[ok]] = True
        nxt[f[ok], rank[ok]] = tokens[s[ok], p[ok] + 1]
    effects = np.zeros((w, top_n), np.float32)
    top_t = np.zeros((w, N_LOGITS), np.int32)
    bot_t = np.zeros((w, N_LOGITS), np.int32)
    top_l = np.zeros((w, N_LOGITS), np.float32)
    bot_l = np.zeros((w, N_LOGITS), np.float32)
    for a, logits in logit_chunks:
        b = a + logits.shape[0]
        tv, ti = torch.topk(logits, N_LOGITS, dim=-1)
        bv, bi = torch.topk(logits, N_LOGITS, dim=-1, largest=False)
        top_t[a:b], top_l[a:b] = ti.cpu().numpy(), tv.cpu().numpy()
        bot_t[a:b], bot_l[a:b] = bi.cpu().numpy(), bv.cpu().numpy()
        eff = torch.gather(logits, 1, torch.from_numpy(nxt[a:b]).to(logits.device)).cpu().numpy()
        effects[a:b] = np.where(has_next[a:b], eff * acts[a:b], np.float32(0))
    freq = acc.count.cpu().numpy().astype(np.float64) / float(max(1, n_tokens))
    return {
        "activations": acts,
        "seq_ids": seq_ids,
        "positions": positions,
        "logit_effects": effects,
        "top_tokens": top_t,
        "bottom_tokens": bot_t,
        "top_logits": top_l,
        "bottom_logits": bot_l,
        "feature_frequencies": freq,
        "tokens": tokens,
    }


def _write_table(t: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(t, tmp, compression="zstd")


def merge(out: str | os.PathLike[str], *, device: str = "cpu", quiet: bool = False) -> dict[str, Any]:
    """Merge the finished shards of ``out`` (see the module docstring); returns what was written."""
    import pyarrow as pa
    from safetensors.numpy import save_file

    from .logits import logit_chunks
    from .setup import entries_of, load_model, load_saes

    out = Path(out)
    job, infos, merged = merged_stats(out)
    spec = ExtractSpec.from_json(job["spec"])
    _write_table(
        pa.concat_tables([_stats_table(i, a) for i, a in zip(infos, merged, strict=True)]),
        out / "merged" / "stats.parquet",
    )
    ex = [
        a.examples_table({"release": i["release"], "sae_id": i["sae_id"]})
        for i, a in zip(infos, merged, strict=True)
    ]
    _write_table(pa.concat_tables(ex), out / "merged" / "examples.parquet")
    entries = entries_of(spec)
    hf, tok, _ = load_model(spec, entries, device)
    slots = load_saes(spec, entries, device, parts="decoder")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tokens, lengths = corpus_tokens(out, int(job["identity"]["n_shards"]), pad)
    write_vocab(out, tok, pad)
    written = []
    for info, acc, slot in zip(infos, merged, slots, strict=True):
        w_dec = slot.sae.W_dec.detach()
        if int(w_dec.shape[0]) != acc.d_sae:
            raise ExtractError(
                f"{info['release']}/{info['sae_id']} has {w_dec.shape[0]} latents now, {acc.d_sae} when extracted."
            )
        chunks = logit_chunks(hf, slot.entry.model, slot.entry.hook_site_out, slot.layer, w_dec)
        arrays = examples_arrays(acc, tokens, lengths, chunks, acc.n_tokens)
        path = examples_path(out, info["release"], info["sae_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        # one metadata key: safetensors writes several in no fixed order, and the file must be reproducible
        meta = {
            "gemmascope_extract": json.dumps({"n_tokens": acc.n_tokens, "top_n": acc.top_n}, sort_keys=True)
        }
        with atomic_path(path) as tmp:
            save_file(arrays, str(tmp), metadata=meta)
        written.append(str(path))
        if not quiet:
            print(
                f"{info['release']}/{info['sae_id']}: {acc.n_tokens:,} tokens, "
                f"{int((acc.count > 0).sum()):,}/{acc.d_sae:,} features active -> {path}"
            )
    if not quiet:
        first = infos[0]
        print(
            f"see a feature: gemmascope explain {first['release']} {first['sae_id']} FEATURE --from {out}\n"
            f"all features:  gemmascope dashboard {first['release']} {first['sae_id']} --from {out} --out SITE"
        )
    return {
        "stats": str(out / "merged" / "stats.parquet"),
        "examples": written,
        "vocab": str(vocab_path(out)),
        "saes": infos,
    }
