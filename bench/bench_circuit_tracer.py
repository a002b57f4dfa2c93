"""Benchmark: circuit-tracer objects from Gemma Scope 2 files, ours (lazy / eager) vs circuit-tracer's loaders.

Writes, in the exact on-hub layout, into a temporary Hugging Face cache:

* a synthetic CLT shaped like ``gemma-scope-2-270m-pt-clt/width_262k_l0_big`` (18 layers x d_model 640,
  ``--width`` latents per layer; zeros below the diagonal like the real files), and
* the 18 layers of ``gemma-scope-2-270m-pt-transcoders-all`` width 16k l0 small (``--tc-width`` latents),

then measures, one fresh subprocess per row (peak = VmHWM after the imports, reset via
``/proc/self/clear_refs``; held = VmRSS growth once built; ``MALLOC_MMAP_THRESHOLD_=65536``):

* ``ours lazy`` / ``ours eager``: ``integrations.circuit_tracer.clt(...)`` / ``transcoder_set(...)``;
* ``CT eager``: circuit-tracer 0.5.0's ``load_gemma_scope_2_clt`` (run as published: it fails; and with
  its ``paths`` padded by one key so that its ``range(max(keys))`` loop reaches the last file) and
  ``load_transcoder_set(..., special_load_fn="gemma-scope-2")``;
* ``ours lazy + use``: build, then ``compute_attribution_components`` on 16 random positions (every
  encoder is read; decoder rows of the active features only).

    python bench/bench_circuit_tracer.py                 # CLT 18 x 640 x 1456/layer (1.2 GB), TCs 18 x 4096
    python bench/bench_circuit_tracer.py --width 512 --tc-width 1024   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CLT_REL, CLT_ID = "gemma-scope-2-270m-pt-clt", "width_262k_l0_big"
TC_REL = "gemma-scope-2-270m-pt-transcoders-all"

CHILD = r"""
import json, sys, torch, warnings
warnings.simplefilter("ignore")
torch.set_num_threads(1)
from pathlib import Path
from sae_lens_gemmascope.integrations import circuit_tracer as ctg
from circuit_tracer.transcoder.cross_layer_transcoder import load_gemma_scope_2_clt
from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

cache, what = Path(sys.argv[1]), sys.argv[2]
paths = json.loads(sys.argv[3])
x = torch.randn(18, 16, 640, generator=torch.Generator().manual_seed(0))
torch.ones(2, 2) @ torch.ones(2, 2)
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
out = {"error": None}
cpu = torch.device("cpu")
try:
    if what == "clt ours lazy":
        m = ctg.clt("%s", "%s", cache_dir=cache, strict_shapes=False, local_files_only=True)
    elif what == "clt ours eager":
        m = ctg.clt("%s", "%s", cache_dir=cache, strict_shapes=False, local_files_only=True, lazy=False)
    elif what == "clt ours lazy + use":
        m = ctg.clt("%s", "%s", cache_dir=cache, strict_shapes=False, local_files_only=True)
        out["built_held"] = status("VmRSS") - base
        c = m.compute_attribution_components(x)
        out["active"] = int(c["activation_matrix"]._nnz())
    elif what == "clt CT eager (as published)":
        m = load_gemma_scope_2_clt({int(k): v for k, v in paths.items()}, device=cpu, dtype=torch.float32)
    elif what == "clt CT eager (keys padded)":
        p = {int(k): v for k, v in paths.items()}
        p[len(p)] = p[len(p) - 1]
        m = load_gemma_scope_2_clt(p, device=cpu, dtype=torch.float32)
        out["n_layers"] = m.n_layers
    elif what == "tc ours lazy":
        m = ctg.transcoder_set("%s", width="16k", l0="small", cache_dir=cache, check_shapes=False, local_files_only=True)
    elif what == "tc ours eager":
        m = ctg.transcoder_set("%s", width="16k", l0="small", cache_dir=cache, check_shapes=False, local_files_only=True, lazy=False)
    elif what == "tc CT eager":
        m = load_transcoder_set({int(k): v for k, v in paths.items()}, "x", "mlp.hook_in", "hook_mlp_out",
                                device=cpu, special_load_fn="gemma-scope-2")
except Exception as err:
    out["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:110]}"
out["peak"] = status("VmHWM") - base
out["held"] = status("VmRSS") - base
print(json.dumps(out))
""" % ((CLT_REL, CLT_ID) * 3 + (TC_REL,) * 2)


def clt_blocks(width: int, n: int = 18, d: int = 640) -> list[dict[str, np.ndarray]]:
    """float32 blocks as on the hub (w_dec zero below the diagonal)."""
    from sae_lens_gemmascope.offline.synthetic import jumprelu_params

    g = np.random.default_rng(0)
    blocks = []
    for i in range(n):
        p = jumprelu_params(d, width, d, seed=i)
        # pre-activations are ~N(b_enc, 1) on unit inputs: a threshold near 2.1 leaves ~L0 50 per layer and token
        p["threshold"] = (2.1 + 0.1 * g.standard_normal(width)).astype(np.float32)
        w = g.standard_normal((width, n, d), dtype=np.float32)
        w *= np.float32(1 / np.sqrt(width))
        w[:, :i] = 0
        p["w_dec"] = w
        blocks.append(p)
    return blocks


def measure(cache: Path, what: str, paths: dict[int, str]) -> dict[str, object]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(cache), what, json.dumps(paths)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=1456, help="CLT latents per layer (real: 14560)")
    ap.add_argument("--tc-width", type=int, default=4096, help="transcoder latents per layer (real: 16384)")
    ap.add_argument("--dir", default=None, help="parent directory for the temporary cache")
    a = ap.parse_args()
    from sae_lens_gemmascope import registry
    from sae_lens_gemmascope.integrations.circuit_tracer import family_entries
    from sae_lens_gemmascope.offline.synthetic import write_entry

    cache = Path(tempfile.mkdtemp(prefix="bench-ct-", dir=a.dir))
    try:
        e = registry.get(CLT_REL, CLT_ID)
        written = write_entry(e, cache, params=clt_blocks(a.width))
        clt_paths = {int(p.stem.split("_")[-1]): str(p) for p in written if p.suffix == ".safetensors"}
        clt_bytes = sum(Path(p).stat().st_size for p in clt_paths.values())
        tc_paths: dict[int, str] = {}
        for layer, te in family_entries(TC_REL, width="16k", l0="small").items():
            ps = write_entry(te, cache, d_sae=a.tc_width, seed=layer)
            tc_paths[layer] = str(next(p for p in ps if p.suffix == ".safetensors"))
        tc_bytes = sum(Path(p).stat().st_size for p in tc_paths.values())
        print(
            f"CLT: 18 layers x 640 x {a.width}/layer, {clt_bytes / 1e9:.2f} GB on disk; "
            f"transcoders: 18 x 640 x {a.tc_width} (affine), {tc_bytes / 1e9:.2f} GB"
        )
        print()
        print("| object | loader | peak RSS MB | held MB | peak / held | peak / on-disk | note |")
        print("|---|---|---:|---:|---:|---:|---|")
        rows = [
            ("clt", "ours lazy", clt_paths, clt_bytes),
            ("clt", "ours eager", clt_paths, clt_bytes),
            ("clt", "ours lazy + use", clt_paths, clt_bytes),
            ("clt", "CT eager (as published)", clt_paths, clt_bytes),
            ("clt", "CT eager (keys padded)", clt_paths, clt_bytes),
            ("tc", "ours lazy", tc_paths, tc_bytes),
            ("tc", "ours eager", tc_paths, tc_bytes),
            ("tc", "CT eager", tc_paths, tc_bytes),
        ]
        for obj, loader, paths, nbytes in rows:
            r = measure(cache, f"{obj} {loader}", paths)
            peak, held = int(r["peak"]), int(r["held"])  # type: ignore[call-overload]
            note = r["error"] or ""
            if "active" in r:
                note = f"built: {int(r['built_held']) / 1e6:.1f} MB held; {r['active']} active features"  # type: ignore[call-overload]
            ratio = f"{peak / held:.2f}" if held > 1e6 else "-"
            print(
                f"| {obj.upper()} | {loader} | {peak / 1e6:.1f} | {held / 1e6:.1f} | {ratio} | "
                f"{peak / nbytes:.2f} | {note} |"
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
