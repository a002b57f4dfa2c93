"""Run an extraction job: the shards not yet finished, on the local executor or on Ray (:func:`run_extract`).

The orchestrator above :mod:`.shards` (output and resume) and :mod:`.ray_exec` (the Ray executor).

Example:
    >>> from sae_lens_gemmascope.extract.run import run_extract  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .shards import advance, is_done, prepare_job, shard_blocks, shard_name, shard_progress, shard_writer
from .spec import ExtractSpec


def run_extract(spec: ExtractSpec, *, quiet: bool = False) -> dict[str, Any]:
    """Run the shards of ``spec`` that are not finished (``--executor local`` or ``ray``).

    Returns ``{"out", "n_shards", "ran", "skipped", "markers"}``.
    """
    n, todo = prepare_job(spec)
    wanted = [spec.shard[0]] if spec.shard else list(range(n))
    skipped = [i for i in wanted if i not in todo]
    result: dict[str, Any] = {"out": spec.out, "n_shards": n, "ran": todo, "skipped": skipped, "markers": []}
    if not quiet:
        for i in skipped:
            print(f"{shard_name(i, n)}: finished already, skipped")
    if not todo:
        return result
    if spec.executor == "ray":
        from .ray_exec import run_ray

        result["markers"] = run_ray(spec, n, todo, quiet=quiet)
        _summary(spec, n, quiet)
        return result
    from .corpus import count_docs
    from .runner import Extractor
    from .setup import check_compatible, entries_of, load_model, load_saes, resolve_device

    device = resolve_device(spec.device)
    entries = entries_of(spec)
    hf, tok, notes = load_model(spec, entries, device)
    if not quiet:
        for note in notes:
            print(f"note: {note}")
    slots = load_saes(spec, entries, device)
    check_compatible(hf, slots)
    total = count_docs(spec.text, spec.dataset, spec.split)
    with Extractor(hf, tok, slots, spec.top_k) as ex:
        for i in todo:
            bar = None if quiet else shard_progress(spec, total, i, n)
            with shard_writer(spec, i, n, slots) as w:
                for block in shard_blocks(spec, tok, i, n):
                    w.add(ex.run(block))
                    advance(bar, w, len(block.seqs))
                result["markers"].append(w.commit())
            if bar is not None:
                bar.close()
    _summary(spec, n, quiet)
    return result


def _summary(spec: ExtractSpec, n: int, quiet: bool) -> None:
    if quiet:
        return
    left = [i for i in range(n) if not is_done(spec.out, i, n)]
    print(
        f"{spec.out}: {n - len(left)}/{n} shards finished"
        + (f"; merge with: gemmascope merge {spec.out}" if not left else f"; still to run: {left[:8]}")
    )
