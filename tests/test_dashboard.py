"""``gemmascope dashboard``: its data files against the crafted examples files of test_examples.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from test_examples import NARROW, PARIS, WIDE, narrow_file, reference_top, wide_file, write

from sae_lens_gemmascope.cli import main


def read_js(path: Path) -> Any:
    """The payload of a ``GS.put(kind, key, payload);`` data file."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("GS.put(") and text.rstrip().endswith(");")
    body = text[text.index(",", text.index(",") + 1) + 1 : text.rstrip().rindex(")")]
    return json.loads(body)


def test_cli_dashboard_records_match_the_file(
    hf_cache: Path, tmp_path: Path, tokenizer: Any, capsys: Any
) -> None:
    t = wide_file()
    write(hf_cache, WIDE, t)
    out = tmp_path / "site"
    assert main(["dashboard", *WIDE, "--out", str(out), "--features", f"0-130,{PARIS},16383"]) == 0
    said = capsys.readouterr().out
    assert "133 features" in said and "index.html#<feature>" in said
    assert sorted(p.name for p in (out / "data" / "f").iterdir()) == [
        "0.js",
        "1.js",
        "192.js",
        "2.js",
        "255.js",
    ]
    shard = read_js(out / "data" / "f" / f"{PARIS // 64}.js")
    assert list(shard["features"]) == [str(PARIS)]
    rec = shard["features"][str(PARIS)]
    assert rec["freq"] == 0.0123 and rec["n"] == 3 and rec["max"] == 7.25
    assert [(e[0], e[1], e[2]) for e in rec["ex"]] == [(7.25, 3, 6), (4.0, 6, 6), (2.5, 0, 6)]
    for e in rec["ex"]:
        row = t["tokens"][e[1]].tolist()
        assert e[4] == row[0 : 6 + 4 + 1] and e[3] == 6  # window (16 before, clipped; 4 after)
        assert e[5] == [[6, e[0]]]  # only its own token has a recorded activation in that row
        assert shard["tok"][str(e[4][e[3]])] == tokenizer.decode([9079]) == " Paris"
    assert rec["top"][:3] == [[7001, 3.5], [9079, 2.0], [5279, 1.25]]
    assert sum(rec["hist"]["c"]) == 3
    assert [q for q, _ in rec["q"]][0] == 0.0 and rec["q"][0][1] == 2.5 and rec["q"][-1][1] == 7.25
    first = read_js(out / "data" / "f" / "0.js")["features"]
    assert first["0"]["n"] == 0 and first["0"]["ex"] == [] and "hist" not in first["0"]
    for f in (1, 63, 130):  # random features: the reference order of real examples
        rec_f = read_js(out / "data" / "f" / f"{f // 64}.js")["features"][str(f)]
        assert [tuple(e[:3]) for e in rec_f["ex"]] == [
            (float(f"{a:.4g}"), s, p) for a, s, p in reference_top(t, f)
        ]
    search = read_js(out / "data" / "search" / "3.js")
    assert [row[0] for row in search] == [PARIS, 16383]
    assert "Paris" in search[0][3].split("\u241f")
    meta = read_js(out / "data" / "meta.js")
    assert meta["neuronpedia"] == "https://www.neuronpedia.org/gemma-3-270m/9-gemmascope-2-res-16k/{f}"
    html = (out / "index.html").read_text()
    assert 'src="assets/uPlot.iife.min.js"' in html and "http://" not in html and "https://" not in html
    assert (out / "assets" / "uPlot.LICENSE").read_text().startswith("The MIT License")


def test_highlights_and_k1000_narrow(tmp_path: Path) -> None:
    """K = 1000 with many examples per row: every lit window token carries the largest activation the
    file records at that (row, position), and only those."""
    from sae_lens_gemmascope import registry
    from sae_lens_gemmascope.evidence.dashboard import write_dashboard
    from sae_lens_gemmascope.evidence.examples import open_examples
    from sae_lens_gemmascope.evidence.vocab import Vocab

    t = narrow_file()
    path = write(tmp_path / "hf", NARROW, t)
    with open_examples(
        path, entry=registry.get(*NARROW), check_shapes=False, tokenizer=Vocab(["a"] * 262144)
    ) as ex:
        st = write_dashboard(ex, tmp_path / "site", top=50, progress=False)
    assert st.features == 3
    recs = read_js(tmp_path / "site" / "data" / "f" / "0.js")["features"]
    best: dict[tuple[int, int], float] = {}
    for a, s, p in reference_top(t, 0):
        best[(s, p)] = max(best.get((s, p), 0.0), a)
    rec = recs["0"]
    assert rec["n"] == 1000 and len(rec["ex"]) == 50 and sum(rec["hist"]["c"]) == 1000
    for _act, s, p, active, ids, lit in rec["ex"]:
        lo = p - active
        want = [[i, float(f"{best[(s, lo + i)]:.3g}")] for i in range(len(ids)) if (s, lo + i) in best]
        assert lit == want
    assert [e[0] for e in recs["1"]["ex"]] == [8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert all(math.isfinite(x) for e in recs["1"]["ex"] for x in e[:1])


def test_size_per_feature_under_16kb(tmp_path: Path) -> None:
    """Worst case: 20 examples per feature, every window 21 distinct long tokens, all lit."""
    from sae_lens_gemmascope.evidence.dashboard import write_dashboard
    from sae_lens_gemmascope.evidence.examples import open_examples
    from sae_lens_gemmascope.evidence.vocab import Vocab
    from sae_lens_gemmascope.offline.synthetic import safetensors_bytes

    W, K, N, C = 128, 1000, 64, 64
    g = np.random.default_rng(3)
    t = narrow_file()
    t.update(
        activations=g.uniform(0.1, 100.0, (W, K)).astype(np.float32),
        seq_ids=g.integers(0, N, (W, K)).astype(np.int64),
        positions=g.integers(0, C, (W, K)).astype(np.int32),
        logit_effects=np.zeros((W, K), np.float32),
        top_tokens=g.integers(0, 262144, (W, 10)).astype(np.int32),
        top_logits=g.uniform(0, 1, (W, 10)).astype(np.float32),
        bottom_tokens=g.integers(0, 262144, (W, 10)).astype(np.int32),
        bottom_logits=-g.uniform(0, 1, (W, 10)).astype(np.float32),
        feature_frequencies=g.uniform(0, 1, W),
        tokens=g.integers(0, 262144, (N, C)).astype(np.int32),
    )
    p = tmp_path / "examples.safetensors"
    p.write_bytes(safetensors_bytes(t))
    with open_examples(p, tokenizer=Vocab([f"tok\u00e9n{i:06d}" for i in range(262144)])) as ex:
        st = write_dashboard(ex, tmp_path / "site", progress=False)
    assert st.features == W and st.bytes_per_feature <= 16 * 1024
