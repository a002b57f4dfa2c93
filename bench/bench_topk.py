"""Benchmark: sparse top-k encode (``encode_topk``) against dense ``encode`` + ``torch.topk``.

Not a test. For each width (16k, 262k, 1m latents; d_in 640 as Gemma 3 270M) and 4,096 tokens, each
path runs in a fresh subprocess on random float32 weights; reported: wall time and the peak RSS
beyond the weights (VmHWM after the weights are built, reset through /proc/self/clear_refs).
Dense is skipped where its [tokens, d_sae] temporaries would not fit (262k: ~17 GiB, 1m: ~64 GiB).

    python bench/bench_topk.py                 # 16k, 262k, 1m
    python bench/bench_topk.py --widths 16384 --tokens 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys, time, torch
mode, d_sae, n_tok, d_in, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
from sae_lens_gemmascope.partial import SAEEncoder
from sae_lens_gemmascope import encode_topk
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
g = torch.Generator().manual_seed(0)
enc = SAEEncoder(torch.randn(d_in, d_sae, generator=g) / d_in**0.5, torch.zeros(d_sae), torch.full((d_sae,), 2.5), cfg=None)
x = torch.randn(n_tok, d_in, generator=g)
torch.set_grad_enabled(False)
open("/proc/self/clear_refs", "w").write("5"); base = rss()
t0 = time.perf_counter()
if mode == "dense":
    v, i = torch.topk(enc.encode(x), k, dim=-1)
else:
    v, i = encode_topk(enc, x, k)
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "extra": peak() - base}))
"""


def run(mode: str, d_sae: int, n_tok: int, d_in: int, k: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(d_sae), str(n_tok), str(d_in), str(k)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="16384,262144,1048576")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=640)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--max-dense-gib", type=float, default=8.0, help="skip dense above this transient memory")
    a = ap.parse_args()
    print(f"{a.tokens} tokens, d_in {a.d_in}, k {a.k}; extra = peak RSS beyond the weights and inputs")
    print(
        f"{'d_sae':>8} | {'dense s':>8} {'dense GiB':>9} | {'topk s':>7} {'topk GiB':>8} | {'speed topk/dense':>16}"
    )
    for w in (int(s) for s in a.widths.split(",")):
        dense_bytes = a.tokens * w * 4
        res = {}
        for mode in ("dense", "topk"):
            if mode == "dense" and 4 * dense_bytes > a.max_dense_gib * 2**30:  # pre, relu, mask, product
                res[mode] = {
                    "error": f"skipped: dense encode holds ~4 x {dense_bytes / 2**30:.1f} GiB [tokens, d_sae] tensors"
                }
                continue
            runs = [run(mode, w, a.tokens, a.d_in, a.k) for _ in range(a.repeat)]
            ok = [r for r in runs if "error" not in r]
            res[mode] = (
                {"wall": min(r["wall"] for r in ok), "extra": min(r["extra"] for r in ok)} if ok else runs[0]
            )
        d, t = res["dense"], res["topk"]
        ds = f"{d['wall']:8.2f} {d['extra'] / 2**30:9.2f}" if "wall" in d else f"{'-':>8} {'-':>9}"
        ts = f"{t['wall']:7.2f} {t['extra'] / 2**30:8.2f}" if "wall" in t else f"error {t.get('error')}"
        ratio = f"{d['wall'] / t['wall']:16.2f}" if "wall" in d and "wall" in t else f"{'-':>16}"
        print(f"{w:>8} | {ds} | {ts} | {ratio}")
        if "error" in d:
            print(f"           dense: {d['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
