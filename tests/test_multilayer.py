"""CLTs and crosscoders: exact formulas against float64 references built from the raw on-disk arrays.

Synthetic files in the exact Gemma Scope 2 per-layer format (``synthetic.write_entry``), loaded through
the registry and the real huggingface_hub cache code with HF_HUB_OFFLINE=1 and sockets blocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from sae_lens_gemmascope import registry
from sae_lens_gemmascope.errors import ArtifactNotCachedError, CorruptArtifactError, ShapeMismatchError
from sae_lens_gemmascope.multilayer import (
    Crosscoder,
    CrossLayerTranscoder,
    LayerFile,
    WrongKindError,
    layer_file_name,
)
from sae_lens_gemmascope.offline.synthetic import put_file, safetensors_bytes, write_entry

CLT = ("gemma-scope-2-270m-pt-clt", "width_262k_l0_big")
CLT_AFFINE = ("gemma-scope-2-270m-pt-clt", "width_262k_l0_medium_affine")
XC = ("gemma-scope-2-270m-pt-crosscoder", "layer_5_9_12_15_width_1m_l0_big")
D, W = 16, 24  # shrunken d_model and per-file width


def _write(
    cache: Path, key: tuple[str, str], seed: int = 0
) -> tuple[registry.Entry, list[dict[str, np.ndarray]]]:
    e = registry.get(*key)
    paths = write_entry(e, cache, d_sae=W, d_in=D, d_out=D, seed=seed)
    by_name = {p.name: p for p in paths}
    raw = [load_file(str(by_name[layer_file_name(i)])) for i in range(len(e.layers))]
    return e, raw


def _inputs(n: int, seed: int = 1, batch: tuple[int, ...] = (3, 5)) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    return [g.standard_normal(batch + (D,)) for _ in range(n)]


def _jumprelu64(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    pre = x @ p["w_enc"].astype(np.float64) + p["b_enc"].astype(np.float64)
    return np.maximum(pre, 0.0) * (pre > p["threshold"].astype(np.float64))


def ref_clt(raw: list[dict[str, np.ndarray]], xs: list[np.ndarray]) -> list[np.ndarray]:
    """float64 CLT: y_j = sum_{i<=j} f_i @ w_dec_i[:, j, :] + b_dec_j (+ x_j @ skip_j)."""
    f = [_jumprelu64(x, p) for x, p in zip(xs, raw, strict=True)]
    out = []
    for j in range(len(raw)):
        y = sum(f[i] @ raw[i]["w_dec"][:, j, :].astype(np.float64) for i in range(j + 1))
        y = y + raw[j]["b_dec"].astype(np.float64)
        if "affine_skip_connection" in raw[j]:
            y = y + xs[j] @ raw[j]["affine_skip_connection"].astype(np.float64)
        out.append(y)
    return out


def ref_crosscoder(raw: list[dict[str, np.ndarray]], xs: list[np.ndarray]) -> list[np.ndarray]:
    """float64 crosscoder: x̂_j = sum_k f_k @ w_dec_k[:, j, :] + b_dec_j."""
    f = [_jumprelu64(x, p) for x, p in zip(xs, raw, strict=True)]
    return [
        sum(f[k] @ raw[k]["w_dec"][:, j, :].astype(np.float64) for k in range(4)) + raw[j]["b_dec"]
        for j in range(4)
    ]


def _t(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a)).to(dtype)


@pytest.mark.parametrize("key", [CLT, CLT_AFFINE])
def test_clt_every_target_matches_float64_reference(
    hf_cache: Path, no_network: None, key: tuple[str, str]
) -> None:
    e, raw = _write(hf_cache, key)
    n = len(e.layers)
    xs = _inputs(n)
    ref = ref_clt(raw, xs)
    fired = np.mean([(_jumprelu64(x, p) > 0).mean() for x, p in zip(xs, raw, strict=True)])
    assert 0.05 < fired < 0.95  # the thresholds matter: some but not all latents fire

    clt = CrossLayerTranscoder.from_pretrained(*key, dtype=torch.float64, strict_shapes=False)
    assert clt.affine == e.affine and clt.n_blocks == n == 18 and clt.d_sae == n * W
    out = clt({i: _t(x) for i, x in enumerate(xs)})
    assert sorted(out) == list(range(n))  # the last layer (17) included
    for j in range(n):
        np.testing.assert_allclose(out[j].numpy(), ref[j], rtol=1e-9, atol=1e-9, err_msg=f"target {j}")

    clt32 = CrossLayerTranscoder.from_pretrained(*key, strict_shapes=False)
    feats = {i: clt32.encode(i, _t(x, torch.float32)) for i, x in enumerate(xs)}
    for j in (0, 7, n - 1):
        y = clt32.decode_to(j, feats, _t(xs[j], torch.float32))
        assert y.dtype == torch.float32
        np.testing.assert_allclose(y.numpy(), ref[j], rtol=1e-4, atol=1e-4)


def test_clt_per_target_slices_not_summed_decoder(hf_cache: Path, no_network: None) -> None:
    """A SAELens-style view that sums w_dec over targets (or uses only the diagonal) fails the reference."""
    e, raw = _write(hf_cache, CLT)
    n = len(e.layers)
    xs = _inputs(n)
    ref = ref_clt(raw, xs)
    clt = CrossLayerTranscoder.from_pretrained(*CLT, dtype=torch.float64, strict_shapes=False)
    j = 5
    feats = {i: clt.encode(i, _t(xs[i])) for i in range(j + 1)}
    ours = clt.decode_to(j, feats).numpy()
    np.testing.assert_allclose(ours, ref[j], rtol=1e-9, atol=1e-9)

    summed = _jumprelu64(xs[j], raw[j]) @ raw[j]["w_dec"].sum(axis=1) + raw[j]["b_dec"]
    diagonal = _jumprelu64(xs[j], raw[j]) @ raw[j]["w_dec"][:, j, :] + raw[j]["b_dec"]
    scale = np.abs(ref[j]).mean()
    assert np.abs(summed - ref[j]).mean() > 0.1 * scale
    assert np.abs(diagonal - ref[j]).mean() > 0.1 * scale
    # each (source, target) pair is its own slice of the file
    for i in range(j + 1):
        np.testing.assert_array_equal(
            clt.W_dec[f"{i}_{j}"].numpy(), raw[i]["w_dec"][:, j, :].astype(np.float64)
        )
    # the files store zeros below the diagonal, and they are never read
    assert not np.any(raw[3]["w_dec"][:, :3, :])
    assert "3_2" not in clt.W_dec


def test_affine_skip_orientation(hf_cache: Path, no_network: None) -> None:
    e, raw = _write(hf_cache, CLT_AFFINE)
    clt = CrossLayerTranscoder.from_pretrained(
        *CLT_AFFINE, layers=[0], dtype=torch.float64, strict_shapes=False
    )
    x = _inputs(1)[0]
    f = clt.encode(0, _t(x))
    y = clt.decode_to(0, {0: f}, _t(x)).numpy()
    no_skip = _jumprelu64(x, raw[0]) @ raw[0]["w_dec"][:, 0, :] + raw[0]["b_dec"]
    skip = raw[0]["affine_skip_connection"].astype(np.float64)
    np.testing.assert_allclose(y, no_skip + x @ skip, rtol=1e-9, atol=1e-9)
    assert np.abs(y - (no_skip + x @ skip.T)).max() > 1e-2  # the transpose is wrong
    with pytest.raises(ValueError, match="affine"):
        clt.decode_to(0, {0: f})


def test_crosscoder_matches_float64_reference(hf_cache: Path, no_network: None) -> None:
    e, raw = _write(hf_cache, XC, seed=3)
    xs = _inputs(4, seed=4)
    ref = ref_crosscoder(raw, xs)
    cc = Crosscoder.from_pretrained(*XC, dtype=torch.float64, strict_shapes=False)
    assert cc.layers == (5, 9, 12, 15) and cc.latent_offsets == (0, W, 2 * W, 3 * W)
    out = cc([_t(x) for x in xs])
    for j in range(4):
        np.testing.assert_allclose(out[j].numpy(), ref[j], rtol=1e-9, atol=1e-9)
    # block k's features are those of layer layers[k]; latent ids are block offset + index
    f2 = cc.encode(2, _t(xs[2])).numpy()
    np.testing.assert_allclose(f2, _jumprelu64(xs[2], raw[2]), rtol=1e-9, atol=1e-12)
    assert cc.global_latent_id(2, 5) == 2 * W + 5 and cc.block_of_latent(2 * W + 5) == (2, 5)
    with pytest.raises(IndexError, match="Model layer 9 is block 1"):
        cc.encode(9, _t(xs[1]))


def test_thresholds_fp32_and_bf16_module(hf_cache: Path, no_network: None) -> None:
    _write(hf_cache, CLT)
    clt = CrossLayerTranscoder.from_pretrained(*CLT, layers=[1], dtype=torch.bfloat16, strict_shapes=False)
    assert clt.threshold["0"].dtype == torch.float32 and clt.W_enc["0"].dtype == torch.bfloat16
    y = clt.decode_to(1, {i: clt.encode(i, torch.randn(2, D)) for i in range(2)})
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_lazy_reads_only_needed_files(hf_cache: Path, no_network: None) -> None:
    e, raw = _write(hf_cache, CLT)
    snap = next((hf_cache / "models--google--gemma-scope-2-270m-pt" / "snapshots").iterdir()) / e.path
    for i in range(4, len(e.layers)):  # only files 0..3 are in the cache
        (snap / layer_file_name(i)).unlink()
    clt = CrossLayerTranscoder.from_pretrained(*CLT, layers=[3], dtype=torch.float64, strict_shapes=False)
    assert sorted(clt.W_dec.keys()) == ["0_3", "1_3", "2_3", "3_3"]
    assert clt.loaded_targets() == [3]
    xs = _inputs(4)
    y = clt.decode_to(3, {i: clt.encode(i, _t(x)) for i, x in enumerate(xs)}).numpy()
    np.testing.assert_allclose(y, ref_clt(raw[:4], xs)[3], rtol=1e-9, atol=1e-9)
    with pytest.raises(ArtifactNotCachedError, match="gemmascope download gemma-scope-2-270m-pt-clt"):
        clt.encode(4, _t(xs[0]))
    # fully lazy: nothing but config.json (and the header of file 0) until first use
    lazy = CrossLayerTranscoder.from_pretrained(*CLT, lazy=True, strict_shapes=False)
    assert len(lazy.W_dec) == 0 and len(lazy.W_enc) == 0
    lazy.decode_to(1, {i: lazy.encode(i, _t(xs[i], torch.float32)) for i in range(2)})
    assert sorted(lazy.W_dec.keys()) == ["0_1", "1_1"]


def test_not_cached_and_wrong_kind_errors(hf_cache: Path, no_network: None) -> None:
    with pytest.raises(ArtifactNotCachedError, match="gemmascope download"):
        CrossLayerTranscoder.from_pretrained(*CLT)
    with pytest.raises(WrongKindError, match="Crosscoder.from_pretrained"):
        CrossLayerTranscoder.from_pretrained(*XC)
    with pytest.raises(WrongKindError, match="CrossLayerTranscoder.from_pretrained"):
        Crosscoder.from_pretrained(*CLT)
    with pytest.raises(WrongKindError, match="SAE.from_pretrained"):
        Crosscoder.from_pretrained("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")


def test_shape_mismatch_against_registry_names_both(hf_cache: Path, no_network: None) -> None:
    _write(hf_cache, CLT)
    with pytest.raises(ShapeMismatchError) as info:
        CrossLayerTranscoder.from_pretrained(*CLT, layers=[0])
    msg = str(info.value)
    assert str(W * 18) in msg and "262080" in msg  # config width vs registry width
    # a file whose w_enc disagrees with the others
    e = registry.get(*CLT)
    bad = load_file(str(next(hf_cache.rglob(layer_file_name(2)))))
    bad["w_enc"] = bad["w_enc"][:, :-1].copy()
    put_file(hf_cache, e.repo_id, f"{e.path}/{layer_file_name(2)}", safetensors_bytes(bad))
    with pytest.raises(ShapeMismatchError, match=r"'w_enc' has shape \(16, 23\).*\(16, 24\)"):
        CrossLayerTranscoder.from_pretrained(*CLT, layers=[2], strict_shapes=False)


def test_nan_and_truncated_files_are_refused(hf_cache: Path, no_network: None) -> None:
    e, raw = _write(hf_cache, CLT)
    p = dict(raw[1])
    p["w_dec"] = p["w_dec"].copy()
    p["w_dec"][3, 1, 2] = np.nan
    put_file(hf_cache, e.repo_id, f"{e.path}/{layer_file_name(1)}", safetensors_bytes(p))
    with pytest.raises(CorruptArtifactError, match="NaN"):
        CrossLayerTranscoder.from_pretrained(*CLT, layers=[1], strict_shapes=False)
    data = safetensors_bytes(raw[1])
    put_file(hf_cache, e.repo_id, f"{e.path}/{layer_file_name(1)}", data[: len(data) - 100])
    with pytest.raises(CorruptArtifactError, match="truncated"):
        CrossLayerTranscoder.from_pretrained(*CLT, layers=[1], strict_shapes=False)


def test_sae_view_is_encoder_with_same_layer_decoder(hf_cache: Path, no_network: None) -> None:
    e, raw = _write(hf_cache, CLT)
    clt = CrossLayerTranscoder.from_pretrained(*CLT, lazy=True, strict_shapes=False)
    sae = clt.sae_view(4)
    x = _inputs(1)[0]
    acts = sae.encode(_t(x, torch.float32)).detach().numpy()
    np.testing.assert_allclose(acts, _jumprelu64(x, raw[4]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(sae.W_dec.detach().numpy(), raw[4]["w_dec"][:, 4, :].astype(np.float32))
    assert sae.cfg.metadata.hook_name == "blocks.4.mlp.hook_in"
    assert "NOT a reconstruction" in sae.cfg.metadata.note
    assert sorted(clt.W_dec.keys()) == ["4_4"]  # the view read one slice, nothing else


def test_from_tensors_and_from_files_agree(tmp_path: Path) -> None:
    g = np.random.default_rng(7)
    n = 3
    raw = []
    for i in range(n):
        w = g.standard_normal((5, n, D)).astype(np.float32)
        w[:, :i] = 0
        raw.append(
            {
                "w_enc": g.standard_normal((D, 5)).astype(np.float32),
                "b_enc": g.standard_normal(5).astype(np.float32) * 0.1,
                "threshold": np.full(5, 0.3, np.float32),
                "w_dec": w,
                "b_dec": g.standard_normal(D).astype(np.float32),
            }
        )
        save_file(raw[-1], str(tmp_path / layer_file_name(i)))
    a = CrossLayerTranscoder.from_tensors(raw, dtype=torch.float64)
    b = CrossLayerTranscoder.from_files(
        [tmp_path / layer_file_name(i) for i in range(n)], dtype=torch.float64
    )
    xs = _inputs(n, batch=(4,))
    ref = ref_clt(raw, xs)
    for m in (a, b):
        out = m([_t(x) for x in xs])
        for j in range(n):
            np.testing.assert_allclose(out[j].numpy(), ref[j], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("max_iov", [512, 2])
def test_layerfile_slices_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_iov: int) -> None:
    from sae_lens_gemmascope.reading import stored

    monkeypatch.setattr(stored, "_MAX_IOV", max_iov)  # runs of targets split over several preadv calls
    arr = np.arange(7 * 5 * 3, dtype=np.float32).reshape(7, 5, 3)
    save_file({"b": np.zeros(3, np.float32), "w_dec": arr}, str(tmp_path / "a.safetensors"))
    f = LayerFile(tmp_path / "a.safetensors")
    for targets in ([0, 1, 2, 3, 4], [1, 2, 4], [4, 1, 2, 2], [0, 3], [4]):
        got = f.read_w_dec(targets)
        assert sorted(got) == sorted(set(targets))
        for t in set(targets):
            assert got[t].is_contiguous()
            np.testing.assert_array_equal(got[t].numpy(), arr[:, t, :])
    big = np.random.default_rng(0).standard_normal((700, 6, 1200), dtype=np.float32)  # 20 MB: threaded
    save_file({"w_dec": big}, str(tmp_path / "big.safetensors"))
    got = LayerFile(tmp_path / "big.safetensors").read_w_dec(range(1, 6))
    for t in range(1, 6):
        np.testing.assert_array_equal(got[t].numpy(), big[:, t, :])


_MEM_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from pathlib import Path
    from sae_lens_gemmascope.multilayer import CrossLayerTranscoder

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    folder, n, target = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    clt = CrossLayerTranscoder.from_files([folder / f"params_layer_{i}.safetensors" for i in range(n)], lazy=True)
    torch.ones(1) @ torch.ones(1)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    clt.load([target])
    print(json.dumps({"peak": status("VmHWM") - before, "held": status("VmRSS") - before}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_lazy_memory_is_one_file_not_n(tmp_path: Path) -> None:
    """Reconstructing target 0 of a 12-layer CLT (~29 MB a file, ~350 MB total) needs ~1 file's worth."""
    n, d, w = 12, 256, 2304
    for i in range(n):
        arrs = {
            "w_enc": np.full((d, w), 0.01, np.float32),
            "b_enc": np.zeros(w, np.float32),
            "threshold": np.full(w, 0.1, np.float32),
            "w_dec": np.full((w, n, d), 0.02, np.float32),
            "b_dec": np.zeros(d, np.float32),
        }
        save_file(arrs, str(tmp_path / layer_file_name(i)))
    file_bytes = (tmp_path / layer_file_name(0)).stat().st_size
    total = file_bytes * n
    # fixed mmap threshold: freed buffers go back to the OS, so RSS shows what is held, not malloc caching
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    res = {}
    for target in (0, n - 1):
        run = subprocess.run(
            [sys.executable, "-c", _MEM_SCRIPT, str(tmp_path), str(n), str(target)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        res[target] = json.loads(run.stdout.strip().splitlines()[-1])
    # target 0: encoder + one decoder slice of file 0 (~4.7 MB), far below one file (~29 MB) and total (~350 MB)
    assert res[0]["peak"] < file_bytes, (res, file_bytes)
    # target n-1: n encoders + n slices (~56 MB) - grows with the target, still far below the whole model
    assert res[n - 1]["peak"] < total / 4, (res, total)
