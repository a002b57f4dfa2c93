"""Benchmark: lazy vs eager reconstruction of CLT target layer k (time and peak RSS, one subprocess each).

Writes a synthetic CLT in the Gemma Scope 2 per-layer format (``params_layer_{i}.safetensors``; default
26 layers x d_model 1152 x 900 latents per layer ~= 2.8 GB) to a temporary directory, then for each k:

* lazy: ``CrossLayerTranscoder.from_files(..., lazy=True)``, encode blocks 0..k, ``decode_to(k)``:
  reads files 0..k, each file's encoder and its ``w_dec[:, k, :]`` column only;
* eager: ``from_files(...)`` (every file, every decoder slice, file by file), then the same maths.

Peak RSS is VmHWM after the imports were done (reset via /proc/self/clear_refs), so it counts what the
load and the reconstruction allocate. The directory is deleted at the end (``--keep`` to keep it).

    python bench/bench_clt.py                       # defaults, ~2.8 GB on disk
    python bench/bench_clt.py --layers 12 --width 512 --targets 0,5,11   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
from sae_lens_gemmascope.multilayer import CrossLayerTranscoder

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

folder, n, k, mode = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
paths = [folder / f"params_layer_{i}.safetensors" for i in range(n)]
g = torch.Generator().manual_seed(0)
d = int(sys.argv[5])
xs = {i: torch.randn(64, d, generator=g) for i in range(k + 1)}
torch.ones(2, 2) @ torch.ones(2, 2)
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
t0 = time.perf_counter()
clt = CrossLayerTranscoder.from_files(paths, lazy=(mode == "lazy"))
t_load = time.perf_counter() - t0
feats = {i: clt.encode(i, xs[i]) for i in range(k + 1)}
y = clt.decode_to(k, feats)
t_total = time.perf_counter() - t0
print(json.dumps({"load_s": t_load, "total_s": t_total, "peak": status("VmHWM") - base,
                  "held": status("VmRSS") - base, "y_norm": float(y.norm())}))
"""


def write_clt(folder: Path, n: int, d: int, w: int, seed: int = 0) -> int:
    from safetensors.numpy import save_file

    g = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        w_dec = g.standard_normal((w, n, d), dtype=np.float32)
        w_dec *= 1 / np.sqrt(w)
        w_dec[:, :i] = 0
        arrs = {
            "w_enc": g.standard_normal((d, w), dtype=np.float32) / np.float32(np.sqrt(d)),
            "b_enc": np.zeros(w, np.float32),
            "threshold": np.full(w, 0.5, np.float32),
            "w_dec": w_dec,
            "b_dec": np.zeros(d, np.float32),
        }
        p = folder / f"params_layer_{i}.safetensors"
        save_file(arrs, str(p))
        total += p.stat().st_size
        del arrs, w_dec
    return total


def measure(folder: Path, n: int, k: int, mode: str, d: int) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(n), str(k), mode, str(d)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=26)
    ap.add_argument("--d-model", type=int, default=1152)
    ap.add_argument("--width", type=int, default=900, help="latents per layer (file)")
    ap.add_argument("--targets", default="0,6,12,25", help="comma-separated target layers k")
    ap.add_argument("--eager-targets", default=None, help="k for the eager runs (default: first and last)")
    ap.add_argument("--dir", default=None, help="parent directory for the temporary files")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    n, d, w = a.layers, a.d_model, a.width
    ks = [int(x) for x in a.targets.split(",") if int(x) < n]
    eks = [int(x) for x in a.eager_targets.split(",")] if a.eager_targets else [ks[0], ks[-1]]
    folder = Path(tempfile.mkdtemp(prefix="bench-clt-", dir=a.dir))
    try:
        t0 = time.perf_counter()
        total = write_clt(folder, n, d, w)
        per_file = total / n
        print(
            f"synthetic CLT: {n} layers x d_model {d} x {w} latents/layer; {total / 1e9:.2f} GB on disk "
            f"({per_file / 1e6:.1f} MB per file), written in {time.perf_counter() - t0:.1f} s to {folder}"
        )
        rows = []
        for k in ks:
            rows.append(("lazy", k, k + 1, measure(folder, n, k, "lazy", d)))
        for k in eks:
            rows.append(("eager", k, n, measure(folder, n, k, "eager", d)))
        print()
        print("| mode  |  k | files read | load s | load+recon s | peak RSS MB | held MB | peak / file |")
        print("|-------|---:|-----------:|-------:|-------------:|------------:|--------:|------------:|")
        for mode, k, nf, r in rows:
            print(
                f"| {mode:5s} | {k:2d} | {nf:10d} | {r['load_s']:6.2f} | {r['total_s']:12.2f} | "
                f"{r['peak'] / 1e6:11.1f} | {r['held'] / 1e6:7.1f} | {r['peak'] / per_file:11.2f} |"
            )
    finally:
        if a.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
