"""``--executor ray``: the blocks of each shard run on a Ray cluster with Ray Data.

``pip install 'sae-lens-gemmascope[ray]'``. The driver reads and tokenises the corpus and turns the
shard's blocks into a ``ray.data`` dataset; ``map_batches`` sends them to a pool of actors
(:class:`BlockActor`, a callable class: **one model and one set of SAEs per actor**, loaded once),
each running the same :class:`~sae_lens_gemmascope.extract.runner.Extractor` as the local executor.
Results stream back in block order (``preserve_order``) to the driver, which writes the shard exactly
as the local executor does (:class:`~sae_lens_gemmascope.extract.shards.ShardWriter`: atomic publish,
resume), so a Ray run and a local run give the same files.

``ray.init()`` starts a local cluster by default; ``--ray-address auto`` or ``ray://host:10001`` joins
an existing one (every node needs this package, the model and the SAE files in its caches). Each
actor takes ``cpus_per_actor`` CPUs (default 1) and, on a GPU cluster, one GPU; the pool has
``spec.ray_actors`` actors (default: as many as the cluster's GPUs, else its CPUs / cpus_per_actor).

Example:
    >>> from sae_lens_gemmascope.extract.ray_exec import pool_size
    >>> pool_size({"CPU": 8.0}, cpus_per_actor=2, gpu=False), pool_size({"CPU": 8.0, "GPU": 2.0}, 1, True)
    (4, 2)
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import numpy as np

from .spec import ExtractError, ExtractSpec

#: Environment a local Ray cluster's workers need to find the same files as the driver.
_ENV_KEYS = (
    "HF_HUB_OFFLINE",
    "HF_HUB_CACHE",
    "HF_HOME",
    "GEMMASCOPE_MODEL_CACHE",
    "GEMMASCOPE_SYNTHETIC_CACHE",
    "PYTHONPATH",
)


def pool_size(resources: dict[str, float], cpus_per_actor: int, gpu: bool) -> int:
    """Actors for a cluster with ``resources``: one per GPU, else one per ``cpus_per_actor`` CPUs."""
    if gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)) // max(1, cpus_per_actor))


class BlockActor:
    """A Ray Data actor: loads the model and the SAEs once, then extracts the blocks it is sent."""

    def __init__(self, spec_json: dict[str, Any], threads: int) -> None:
        import torch

        from .runner import Extractor
        from .setup import check_compatible, entries_of, load_model, load_saes, resolve_device

        torch.set_num_threads(max(1, threads))
        spec = ExtractSpec.from_json(spec_json)
        device = resolve_device(spec.device)
        entries = entries_of(spec)
        hf, tok, _ = load_model(spec, entries, device)
        slots = load_saes(spec, entries, device)
        check_compatible(hf, slots)
        self.extractor = Extractor(hf, tok, slots, spec.top_k).__enter__()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [pickle.dumps(self.extractor.run(pickle.loads(b))) for b in batch["block"]]
        return {"result": np.array(out, dtype=object)}


def _init(spec: ExtractSpec) -> Any:
    try:
        import ray
    except ImportError as e:
        raise ExtractError(
            "--executor ray needs Ray: pip install 'sae-lens-gemmascope[ray]' (or pip install 'ray[data]')."
        ) from e
    if not ray.is_initialized():
        if spec.ray_address:
            ray.init(address=spec.ray_address, log_to_driver=False)
        else:
            env = {k: os.environ[k] for k in _ENV_KEYS if k in os.environ}
            ray.init(
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=256 * 1024**2,
                runtime_env={"env_vars": env},
            )
    return ray


def _widths(spec: ExtractSpec) -> list[int]:
    """``d_sae`` of every SAE, from the file header (no weights read)."""
    from ..artifacts import dims_of, params_file
    from ..hub import fetch
    from ..reading import open_weights
    from .setup import entries_of

    out = []
    for e in entries_of(spec):
        f = open_weights(e, fetch(e, params_file(e), cache_dir=spec.cache_dir))
        out.append(dims_of(e, f.shapes())["d_sae"])
    return out


class _Slot:
    def __init__(self, release: str, sae_id: str, d_sae: int) -> None:
        self.release, self.sae_id, self.d_sae = release, sae_id, d_sae


def run_ray(
    spec: ExtractSpec, n: int, todo: list[int], *, quiet: bool = False, cpus_per_actor: int = 1
) -> list[dict[str, Any]]:
    """Run shards ``todo`` of ``n`` on Ray; return their markers."""
    ray = _init(spec)
    from ray.data import DataContext

    from .corpus import count_docs
    from .setup import entries_of, load_tokenizer
    from .shards import advance, shard_blocks, shard_progress, shard_writer

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # blocks come back in order: the same rows file as local
    ctx.enable_progress_bars = False  # ours shows documents and tokens/s
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    tok = load_tokenizer(spec, entries_of(spec))
    slots = [_Slot(r, s, w) for (r, s), w in zip(spec.saes, _widths(spec), strict=True)]
    res = ray.cluster_resources()
    gpu = bool(res.get("GPU", 0)) and spec.device != "cpu"
    actors = spec.ray_actors or pool_size(res, cpus_per_actor, gpu)
    total = count_docs(spec.text, spec.dataset, spec.split)
    markers = []
    for i in todo:
        items = [{"block": pickle.dumps(b)} for b in shard_blocks(spec, tok, i, n)]
        bar = None if quiet else shard_progress(spec, total, i, n, f"ray, {actors} actors")
        with shard_writer(spec, i, n, slots) as w:
            if items:
                ds = ray.data.from_items(items).map_batches(
                    BlockActor,
                    fn_constructor_kwargs={"spec_json": spec.to_json(), "threads": cpus_per_actor},
                    batch_size=1,
                    concurrency=min(actors, len(items)),
                    num_cpus=cpus_per_actor,
                    num_gpus=1 if gpu else 0,
                )
                for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
                    for payload in batch["result"]:
                        r = pickle.loads(payload)
                        w.add(r)
                        advance(bar, w, len(r.seqs))
            markers.append(w.commit())
        if bar is not None:
            bar.close()
    return markers
