"""Full dashboard build of a 16k SAE: wall time, bytes per feature on disk, peak RSS.

Writes an ``examples.safetensors`` in the exact Gemma Scope 2 layout at the official sizes
(16384 features x 1000 examples, 10 logit tokens, a 392802 x 256 token corpus as in the 1b-pt
transcoder file: 1.06 GB) into a temporary Hugging Face cache, in a child process, then runs
``gemmascope dashboard`` in another child process under ``/usr/bin/time -v`` and reports.

    python bench/bench_dashboard.py                    # the full 16k build
    python bench/bench_dashboard.py --width 2048       # quicker
    python bench/bench_dashboard.py --keep DIR         # keep the cache and the site in DIR
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RELEASE, SAE_ID = "gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium"

WRITER = r"""
import sys, numpy as np
from sae_lens_gemmascope import registry
from sae_lens_gemmascope.offline.synthetic import write_examples
W, K, T, N, C = (int(x) for x in sys.argv[2:7])
g = np.random.default_rng(0)
acts = np.sort(g.gamma(2.0, 2.0, (W, K)).astype(np.float32), axis=1)[:, ::-1].copy()
seq = g.integers(0, N, (W, K)).astype(np.int64)
pos = g.integers(1, C, (W, K)).astype(np.int32)
rare = g.random(W) < 0.2  # a fifth of the features fire fewer than K times: padding slots
cut = g.integers(0, K, W)
for f in np.flatnonzero(rare):
    acts[f, cut[f]:] = 0.0; seq[f, cut[f]:] = -1
t = {
    "activations": acts, "seq_ids": seq, "positions": pos,
    "logit_effects": g.standard_normal((W, K)).astype(np.float32),
    "top_tokens": g.integers(3, 262144, (W, T)).astype(np.int32),
    "top_logits": g.uniform(0, 2, (W, T)).astype(np.float32),
    "bottom_tokens": g.integers(3, 262144, (W, T)).astype(np.int32),
    "bottom_logits": -g.uniform(0, 2, (W, T)).astype(np.float32),
    "feature_frequencies": g.uniform(0, 0.01, W),
    "tokens": g.integers(3, 262144, (N, C)).astype(np.int32),
}
p = write_examples(registry.get(*sys.argv[7:9]), sys.argv[1], t)
print(p.stat().st_size if not p.is_symlink() else p.resolve().stat().st_size)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=16384)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--corpus", default="392802x256")
    ap.add_argument("--keep", default=None)
    args = ap.parse_args()
    n, c = (int(x) for x in args.corpus.split("x"))
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-dashboard-"))
    cache, site = root / "hf", root / "site"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    size = subprocess.run(
        [sys.executable, "-c", WRITER, str(cache), str(args.width), str(args.examples), "10", str(n), str(c),
         RELEASE, SAE_ID],
        check=True, env=env, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    print(f"wrote examples.safetensors: {int(size) / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s")
    cmd = [
        sys.executable, "-m", "sae_lens_gemmascope.cli", "dashboard", RELEASE, SAE_ID,
        "--out", str(site), "--cache-dir", str(cache),
    ]  # fmt: skip
    if args.width != 16384:
        cmd.append("--no-check-shapes")
    t0 = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        print(run.stdout, run.stderr[-3000:])
        return 1
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))  # type: ignore[union-attr]
    data = sum(p.stat().st_size for p in (site / "data").rglob("*") if p.is_file())
    shards = list((site / "data" / "f").iterdir())
    biggest = max(p.stat().st_size for p in shards)
    print(run.stdout.strip().splitlines()[0])
    print(
        f"features {args.width}, examples/feature {args.examples}, corpus {n}x{c}\n"
        f"build wall {wall:.0f} s (incl. interpreter + tokenizer start), peak RSS {rss_kb / 2**20:.2f} GiB\n"
        f"data {data / 1e6:.1f} MB = {data / args.width / 1e3:.2f} KB per feature; "
        f"{len(shards)} shards, largest {biggest / 1e3:.0f} KB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
