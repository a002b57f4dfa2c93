"""Benchmark: ``gemmascope extract`` throughput and output size on the real Gemma 3 270M (not a test).

Run ``python bench/bench_extract.py`` (about 10 min on 2 busy cores; ``--docs/--ctx`` to change the
corpus). Everything is measured in one process, on the same token blocks, after one warm-up block:

* ``model only (full)``        the plain HF forward (all 18 layers and the unembedding), no hooks;
* ``model only (to layer L)``  the same forward stopped after layer L (what extract runs for one SAE);
* ``extract 1 x 16k``          :class:`~sae_lens_gemmascope.extract.runner.Extractor` + shard writer
  (rows, statistics, top examples, tokens; Parquet with zstd) for one GS2 16k SAE at layer L;
* ``extract 18 x 16k``         the same with a 16k SAE at every layer (one forward pass);
* ``SAELens loop``             ``HookedTransformer.run_with_cache(names_filter=hook)`` then ``sae.encode``
  and a top-k, the naive loop (no output written);
* bytes of Parquet output per token and SAE (rows only, and all four tables).

The model is the real Gemma 3 270M from PyPI (:mod:`sae_lens_gemmascope.offline.realmodel`). The SAEs are
synthetic files of the **real** GS2 16k shape (640 x 16384) written in the exact format: random
encoder directions whose thresholds are set, per latent, to the quantile of its pre-activation on a
calibration batch that gives an average L0 of ``--l0`` (60, like ``l0_medium``), so the sparsity, and
with it the cost of the statistics and the size of the output, is realistic.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REL = "gemma-scope-2-270m-pt-res-all"


def sae_id(layer: int) -> str:
    return f"layer_{layer}_width_16k_l0_small"


def calibrated_params(x: torch.Tensor, d_sae: int, l0: float, seed: int) -> dict[str, np.ndarray]:
    """Random GS2 JumpReLU weights for inputs like ``x`` ``[n, d]`` with an average L0 of about ``l0``."""
    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    w_enc = torch.randn(d, d_sae, generator=g) / d**0.5
    b_enc = torch.zeros(d_sae)
    pre = x.float() @ w_enc
    q = 1.0 - l0 / d_sae
    thr = torch.quantile(pre[: min(len(pre), 4096)], q, dim=0).clamp_min(1e-3)
    w_dec = torch.randn(d_sae, d, generator=g) / d_sae**0.5
    return {
        "w_enc": w_enc.numpy(),
        "b_enc": b_enc.numpy(),
        "threshold": thr.numpy().astype(np.float32),
        "w_dec": w_dec.numpy(),
        "b_dec": np.zeros(d, np.float32),
    }


def blocks_of(tok: Any, docs: int, ctx: int, batch: int) -> list[Any]:
    from sae_lens_gemmascope.extract.corpus import Block, token_ids
    from sae_lens_gemmascope.offline.sandbox import corpus

    text = " ".join(corpus())
    ids = tok(text, add_special_tokens=False).input_ids
    per = ctx - 1
    seqs = [[tok.bos_token_id, *ids[i * per : (i + 1) * per]] for i in range(docs)]
    seqs = [s if len(s) == ctx else token_ids(tok, text[:2000], ctx) for s in seqs]
    return [
        Block(b // batch, list(range(b, min(b + batch, docs))), seqs[b : b + batch])
        for b in range(0, docs, batch)
    ]


def timed(fn: Any, blocks: list[Any]) -> float:
    """Seconds for ``fn(block)`` over ``blocks``."""
    t0 = time.perf_counter()
    for b in blocks:
        fn(b)
    return time.perf_counter() - t0


def ids_of(block: Any) -> torch.Tensor:
    return torch.tensor(block.ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--l0", type=float, default=120.0)
    ap.add_argument("--skip-all-layers", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    os.environ["HF_HUB_OFFLINE"] = "1"
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    os.environ["HF_HUB_CACHE"] = str(work / "hf")
    import huggingface_hub.constants as hfc

    hfc.HF_HUB_CACHE = str(work / "hf")
    hfc.HF_HUB_OFFLINE = True

    from sae_lens_gemmascope import registry
    from sae_lens_gemmascope.attach import record
    from sae_lens_gemmascope.extract.runner import Extractor
    from sae_lens_gemmascope.extract.setup import load_saes
    from sae_lens_gemmascope.extract.shards import shard_writer
    from sae_lens_gemmascope.extract.spec import ExtractSpec
    from sae_lens_gemmascope.offline.realmodel import load_hf, load_hooked
    from sae_lens_gemmascope.offline.synthetic import write_entry

    torch.set_grad_enabled(False)
    hf, tok = load_hf()
    blocks = blocks_of(tok, args.docs, args.ctx, args.batch_size)
    n_layers = hf.config.num_hidden_layers
    layers = [args.layer] if args.skip_all_layers else list(range(n_layers))
    t0 = time.perf_counter()
    pts = [("resid_post", layer) for layer in layers]
    with record(hf, "gemma-3-270m", pts) as got:
        hf(ids_of(blocks[0]))
        calib = {layer: got[("resid_post", layer)][:, 1:].reshape(-1, 640).clone() for layer in layers}
    for layer in layers:
        p = calibrated_params(calib[layer], 16384, args.l0, seed=layer)
        write_entry(registry.get(REL, sae_id(layer)), work / "hf", params=p)
    print(
        f"wrote {len(layers)} synthetic 16k SAEs (real shape) in {time.perf_counter() - t0:.1f} s to {work}"
    )
    print(
        f"corpus: {args.docs} documents x {args.ctx} tokens, batches of {args.batch_size}; torch threads {torch.get_num_threads()}"
    )

    def spec(saes: list[tuple[str, str]], out: str) -> ExtractSpec:
        return ExtractSpec(saes=tuple(saes), out=out, text=__file__, top_k=args.top_k, device="cpu",
                           batch_size=args.batch_size, ctx=args.ctx)  # fmt: skip

    from sae_lens_gemmascope.extract.setup import entries_of
    from sae_lens_gemmascope.loading import load

    class _Stop(Exception):
        pass

    def raise_stop(m: Any, a: Any, o: Any) -> None:
        raise _Stop

    def to_layer(b: Any) -> None:
        h = hf.model.layers[args.layer].register_forward_hook(raise_stop)
        try:
            hf(ids_of(b), use_cache=False)
        except _Stop:
            pass
        finally:
            h.remove()

    configs: dict[str, tuple[int, ...]] = {"1": (args.layer,)}
    if not args.skip_all_layers:
        configs[str(len(layers))] = tuple(layers)
    slots = {}
    for name, chosen in configs.items():
        sp = spec([(REL, sae_id(layer)) for layer in chosen], str(work / f"out-{name}"))
        slots[name] = (sp, load_saes(sp, entries_of(sp), "cpu"))
    sizes: dict[str, tuple[int, int, int, int]] = {}

    def extract_run(name: str) -> Any:
        sp, sl = slots[name]

        def run(_: Any) -> None:
            with Extractor(hf, tok, sl, args.top_k) as ex, shard_writer(sp, 0, 1, sl) as w:
                for b in blocks:
                    w.add(ex.run(b))
                marker = w.commit()
            out = Path(sp.out)
            rows = sum(p.stat().st_size for p in (out / "rows").glob("*.parquet"))
            total = sum(
                p.stat().st_size
                for t in ("rows", "stats", "examples", "tokens")
                for p in (out / t).glob("*.parquet")
            )
            sizes[name] = (rows, total, marker["tokens"], marker["rows"])

        return run

    ht = load_hooked(hf_model=hf, tokenizer=tok)
    sae = load(REL, sae_id(args.layer), cache_dir=str(work / "hf"))
    hook = f"blocks.{args.layer}.hook_resid_post"

    def saelens_loop(b: Any) -> None:
        _, cache = ht.run_with_cache(ids_of(b), names_filter=hook)
        f = sae.encode(cache[hook][:, 1:])
        torch.topk(f, args.top_k, dim=-1)

    runs: dict[str, Any] = {
        "model only (full forward)": lambda: timed(lambda b: hf(ids_of(b)), blocks),
        f"model only (to layer {args.layer})": lambda: timed(to_layer, blocks),
        f"extract 1 x 16k SAE (layer {args.layer})": lambda: timed(extract_run("1"), blocks[:1]),
        "SAELens loop (run_with_cache + encode + topk)": lambda: timed(saelens_loop, blocks),
    }
    if not args.skip_all_layers:
        runs[f"extract {len(layers)} x 16k SAEs (every layer)"] = lambda: timed(
            extract_run(str(len(layers))), blocks[:1]
        )
    for fn in runs.values():  # warm-up
        fn()
    n_tok = sum(b.n_tokens for b in blocks)
    best: dict[str, float] = {}
    for r in range(args.rounds):  # interleaved rounds, best of: fairer on a busy machine
        for k, fn in runs.items():
            best[k] = min(best.get(k, float("inf")), fn())
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k.split(' (')[0]} {n_tok / v:,.0f}" for k, v in best.items())
        )
    res = {k: n_tok / v for k, v in best.items()}
    base = res["model only (full forward)"]
    print()
    print(f"| run | tokens/s | vs model only (full) | vs model only (to layer {args.layer}) |")
    print("|---|---:|---:|---:|")
    short = res[f"model only (to layer {args.layer})"]
    for k, v in res.items():
        print(f"| {k} | {v:,.0f} | {v / base:.2f}x | {v / short:.2f}x |")
    print()
    for name, (rows, total, n_tok_run, n_rows) in sizes.items():
        n_sae = int(name)
        print(
            f"output, {name} SAE(s), K={args.top_k}, {n_rows / n_tok_run / n_sae:.1f} rows per token per SAE: rows "
            f"{rows / n_tok_run / n_sae:,.0f} B per token per SAE; all tables {total / n_tok_run / n_sae:,.0f} B "
            f"per token per SAE ({total / 1e6:.1f} MB for {n_tok_run:,} tokens)"
        )
    one = res[f"extract 1 x 16k SAE (layer {args.layer})"]
    print(
        f"\nextract 1 x 16k / model only (full) = {one / base:.2f} (target >= 0.7); "
        f"/ SAELens loop = {one / res['SAELens loop (run_with_cache + encode + topk)']:.2f} (target > 1)"
    )


if __name__ == "__main__":
    main()
