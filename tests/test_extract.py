"""``gemmascope extract`` / ``merge`` on tiny random Gemma models and synthetic Gemma Scope files.

References are independent of the code under test: float64 JumpReLU from the raw file's tensors on
activations taken by our own torch hook on the Hugging Face module the hook table names; token ids
from the tokenizer; logit directions from the raw decoder, norm weight and embedding.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sae_lens_gemmascope import registry
from sae_lens_gemmascope.hooks import hook_for
from sae_lens_gemmascope.offline.synthetic import write_entry

RES = ("gemma-scope-2-270m-pt-res-all", "layer_2_width_16k_l0_small")
TC = ("gemma-scope-2-270m-pt-transcoders-all", "layer_1_width_16k_l0_small")
IT_TC = ("gemma-scope-2-270m-it-transcoders-all", "layer_1_width_16k_l0_small")
GS1 = ("gemma-scope-2b-pt-res", "layer_1/width_16k/average_l0_20")
WIDTH = {RES: 48, TC: 40, IT_TC: 24, GS1: 36}
BOS = 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Gemma 3 text and Gemma 2 models (random weights and norm gains) saved with a tokenizer."""
    from sae_lens_gemmascope.offline.tiny import tiny_gemma, tiny_tokenizer

    out = {}
    for fam in ("gemma3_text", "gemma2"):
        d = tmp_path_factory.mktemp(f"tiny-{fam}")
        hf, _ = tiny_gemma(fam, n_layers=4)
        hf.save_pretrained(d)
        tiny_tokenizer().save_pretrained(d)
        out[fam] = d
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """31 documents of 0..40 words (an empty line included), written as a text file."""
    rng = random.Random(7)
    lines = [" ".join(f"w{rng.randrange(4, 4000)}" for _ in range(rng.randrange(1, 40))) for _ in range(31)]
    lines[5] = ""
    p = tmp_path_factory.mktemp("corpus") / "docs.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _write(hf_cache: Path, *saes: tuple[str, str]) -> None:
    for rel, sid in saes:
        e = registry.get(rel, sid)
        write_entry(
            e, hf_cache, d_in=64, d_out=64, d_sae=WIDTH[(rel, sid)], seed=len(sid) + WIDTH[(rel, sid)]
        )


def _spec(out: Path, model: Path, corpus: Path, *saes: tuple[str, str], **kw: Any) -> Any:
    from sae_lens_gemmascope.extract.spec import ExtractSpec

    base: dict[str, Any] = dict(ctx=24, top_k=6, batch_size=3, top_n=5, check_shapes=False, device="cpu")
    base.update(kw)
    return ExtractSpec(saes=tuple(saes), out=str(out), text=str(corpus), model=str(model), **base)


def _run(spec: Any) -> dict[str, Any]:
    from sae_lens_gemmascope.extract.run import run_extract

    return run_extract(spec, quiet=True)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _table(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path)


# ----------------------------------------------------------------------------- sharding and merging


def test_one_shard_equals_two_and_four_merged_bit_for_bit(hf_cache, model_dirs, corpus, tmp_path):
    import pyarrow as pa

    from sae_lens_gemmascope.extract.merge import examples_path, merge

    _write(hf_cache, RES, TC)
    model = model_dirs["gemma3_text"]
    outs = {}
    for n in (1, 2, 4):
        out = tmp_path / f"n{n}"
        for i in reversed(range(n)):  # any order
            _run(_spec(out, model, corpus, RES, TC, shard=(i, n)))
        merge(out, quiet=True)
        outs[n] = out
    ref = outs[1]
    rows1 = _table(ref / "rows").sort_by([("seq", "ascending"), ("pos", "ascending")])
    assert rows1.num_rows > 100 and set(rows1.column_names) == {
        "seq",
        "pos",
        "feature",
        "value",
        "release",
        "sae_id",
    }
    for n in (2, 4):
        assert len(list((outs[n] / "rows").glob("*.parquet"))) == n
        for name in ("stats.parquet", "examples.parquet"):
            assert _table(outs[n] / "merged" / name).equals(_table(ref / "merged" / name)), (n, name)
        for rel, sid in (RES, TC):
            assert _sha(examples_path(outs[n], rel, sid)) == _sha(examples_path(ref, rel, sid)), (n, sid)
        rows = pa.concat_tables([_table(p) for p in sorted((outs[n] / "rows").glob("*.parquet"))]).sort_by(
            [("seq", "ascending"), ("pos", "ascending")]
        )
        # within a token, rows keep their top-k order: compare as multisets per token
        key = ["seq", "pos", "release", "feature"]
        assert rows.sort_by([(k, "ascending") for k in key]).equals(
            rows1.sort_by([(k, "ascending") for k in key])
        )


def test_rerun_is_idempotent_and_other_jobs_are_refused(hf_cache, model_dirs, corpus, tmp_path):
    from sae_lens_gemmascope.extract.spec import JobMismatchError

    _write(hf_cache, RES)
    out = tmp_path / "o"
    spec = _spec(out, model_dirs["gemma3_text"], corpus, RES)
    first = _run(spec)
    assert first["ran"] == [0]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: (_sha(p), p.stat().st_mtime_ns) for p in files}
    again = _run(spec)
    assert again["ran"] == [] and again["skipped"] == [0]
    assert {
        p: (_sha(p), p.stat().st_mtime_ns) for p in sorted(q for q in out.rglob("*") if q.is_file())
    } == before
    with pytest.raises(JobMismatchError, match="top_k"):
        _run(_spec(out, model_dirs["gemma3_text"], corpus, RES, top_k=3))


def _visible(out: Path) -> list[Path]:
    return sorted(
        p
        for t in ("rows", "stats", "examples", "tokens", "shards")
        for p in (out / t).glob("*")
        if not p.name.startswith(".")
    )


def test_exception_mid_shard_leaves_nothing_and_rerun_completes(
    hf_cache, model_dirs, corpus, tmp_path, monkeypatch
):
    """An error raised inside the model's forward (a global torch forward hook on the 4th decoder-layer
    call) aborts the shard: no visible file, no temporary; the re-run equals an uninterrupted run."""
    from sae_lens_gemmascope.extract import shards

    _write(hf_cache, RES)
    monkeypatch.setattr(shards, "_ROW_GROUP", 8)  # flush often, so temporaries exist mid-shard
    out = tmp_path / "killed"
    calls = {"n": 0}

    def boom(module: Any, args: Any, output: Any) -> None:
        if type(module).__name__.endswith("DecoderLayer"):
            calls["n"] += 1
            if calls["n"] == 4 * 3 + 1:  # the 4th block's first layer
                raise KeyboardInterrupt("injected")

    h = torch.nn.modules.module.register_module_forward_hook(boom)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(_spec(out, model_dirs["gemma3_text"], corpus, RES))
    finally:
        h.remove()
    assert (out / "job.json").exists() and _visible(out) == []
    assert not [p for p in out.rglob(".*tmp-*")]
    _run(_spec(out, model_dirs["gemma3_text"], corpus, RES))
    clean = tmp_path / "clean"
    _run(_spec(clean, model_dirs["gemma3_text"], corpus, RES))
    for t in ("rows", "stats", "examples", "tokens"):
        assert _table(out / t).equals(_table(clean / t)), t


def test_sigkill_mid_shard_leaves_no_visible_file(hf_cache, model_dirs, tmp_path):
    """A CLI run killed with SIGKILL in the middle of its shard (its progress bar has moved, it has not
    finished): nothing visible but job.json. The same command again finishes the shard."""
    _write(hf_cache, RES)
    rng = random.Random(1)
    docs = tmp_path / "docs.txt"
    docs.write_text(
        "\n".join(" ".join(f"w{rng.randrange(4, 4000)}" for _ in range(31)) for _ in range(160)) + "\n"
    )
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "sae_lens_gemmascope.cli", "extract", "--sae", *RES, "--text", str(docs),
           "--out", str(out), "--model", str(model_dirs["gemma3_text"]), "--ctx", "32", "--top-k", "8",
           "--batch-size", "8", "--no-check-shapes", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    err = b""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        err += proc.stderr.read() or b""
        done = [int(m) for m in re.findall(r"\|\s*(\d+)/160 \[", err.decode(errors="replace"))]
        if done and 8 <= max(done) < 160:  # the bar has moved: blocks are done, the shard is not
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {err[-500:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert (out / "job.json").exists() and _visible(out) == [], _visible(out)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    assert not list(out.rglob(".*tmp-*"))
    assert [p.name for p in _visible(out) if p.suffix == ".json"] == ["shard-00000-of-00001.json"]
    assert sorted(set(_table(out / "tokens")["seq"].to_pylist())) == list(range(160))


# ----------------------------------------------------------------------------- numbers


def _raw_params(hf_cache: Path, rel: str, sid: str) -> dict[str, np.ndarray]:
    from huggingface_hub import try_to_load_from_cache

    e = registry.get(rel, sid)
    fname = "params.npz" if e.format == "gs1_npz" else "params.safetensors"
    path = try_to_load_from_cache(e.repo_id, f"{e.path}/{fname}", cache_dir=str(hf_cache))
    assert isinstance(path, str)
    if e.format == "gs1_npz":
        with np.load(path) as z:
            return {k.lower(): z[k].astype(np.float64) for k in z.files}
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(path).items()}


def reference_features(
    model_dir: Path, hf_cache: Path, rel: str, sid: str, docs: list[list[int]]
) -> list[np.ndarray]:
    """Per document, float64 JumpReLU features ``[pos, d_sae]`` from our own hook on the HF module."""
    from transformers import AutoModelForCausalLM

    e = registry.get(rel, sid)
    hf = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    spec = hook_for(e.model, e.hook_site_in, e.layer, backend="hf")
    mod = hf.get_submodule(spec.hf_module)
    got: dict[str, torch.Tensor] = {}
    if spec.hf_transform == "rms_normalize_no_gain":  # GS1 transcoder input: x / rms(x), no gain
        eps = hf.config.rms_norm_eps
        h = mod.register_forward_pre_hook(
            lambda m, a: got.__setitem__(
                "x", a[0].double() / torch.sqrt(a[0].double().pow(2).mean(-1, keepdim=True) + eps)
            )
        )
    elif spec.hf_io == "input":
        h = mod.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].double()))
    else:
        h = mod.register_forward_hook(
            lambda m, a, o: got.__setitem__("x", (o[0] if isinstance(o, tuple) else o).double())
        )
    p = _raw_params(hf_cache, rel, sid)
    out = []
    try:
        with torch.no_grad():
            for ids in docs:
                hf(torch.tensor([ids]))
                x = got["x"][0].numpy()
                pre = x @ p["w_enc"] + p["b_enc"]
                out.append(np.maximum(pre, 0) * (pre > p["threshold"]))
    finally:
        h.remove()
    return out


def _docs(tok_dir: Path, corpus: Path, ctx: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    lines = corpus.read_text(encoding="utf-8").split("\n")[:-1]
    return [[BOS, *tok(t, add_special_tokens=False).input_ids][:ctx] for t in lines]


def check_topk(rows: Any, ref: list[np.ndarray], k: int, skip: int = 1) -> int:
    """Every token's rows are a top-``k`` of the float64 reference; returns the rows checked."""
    seq, pos = rows.column("seq").to_numpy(), rows.column("pos").to_numpy()
    feat, val = rows.column("feature").to_numpy(), rows.column("value").to_numpy()
    by_tok: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for s, p_, f, v in zip(seq, pos, feat, val, strict=True):
        by_tok.setdefault((int(s), int(p_)), []).append((int(f), float(v)))
    n = 0
    for s, r in enumerate(ref):
        for p_ in range(r.shape[0]):
            mine = by_tok.pop((s, p_), [])
            if p_ < skip:
                assert mine == [], f"row at untrained position {p_} of document {s}"
                continue
            live = np.sort(r[p_][r[p_] > 0])[::-1]
            assert len(mine) == min(k, len(live)), (s, p_, mine, live[:k])
            kth = live[min(k, len(live)) - 1] if len(live) else 0.0
            tol = 1e-4 * max(1.0, abs(float(kth)))
            for f, v in mine:
                assert v == pytest.approx(r[p_, f], rel=1e-4, abs=1e-4)
                assert r[p_, f] >= kth - tol
            n += len(mine)
    assert not by_tok, f"rows for tokens that do not exist: {list(by_tok)[:3]}"
    return n


@pytest.mark.parametrize(
    ("family", "saes"),
    [("gemma3_text", (RES, TC)), ("gemma2", (GS1,))],
    ids=["gs2-res+transcoder", "gs1-gemma2"],
)
def test_topk_rows_equal_float64_reference_and_no_bos(hf_cache, model_dirs, corpus, tmp_path, family, saes):
    _write(hf_cache, *saes)
    out = tmp_path / "o"
    k = 5
    _run(_spec(out, model_dirs[family], corpus, *saes, top_k=k, ctx=20))
    rows = _table(out / "rows")
    docs = _docs(model_dirs[family], corpus, 20)
    tokens = _table(out / "tokens")
    assert {
        int(s): list(x) for s, x in zip(tokens["seq"].to_pylist(), tokens["ids"].to_pylist(), strict=True)
    } == dict(enumerate(docs))
    for rel, sid in saes:
        mine = rows
        if len(saes) > 1:
            import pyarrow.compute as pc

            mine = rows.filter(pc.equal(rows["sae_id"], sid))
        assert int(np.min(mine["pos"].to_numpy())) >= 1  # <bos> is never a row
        ref = reference_features(model_dirs[family], hf_cache, rel, sid, docs)
        assert check_topk(mine, ref, k) > 50
    if family == "gemma2":  # Gemma Scope 1 ships no examples file: merge makes one in the GS2 layout
        from safetensors import safe_open

        from sae_lens_gemmascope.extract.merge import EXAMPLE_KEYS, examples_path, merge

        merge(out, quiet=True)
        with safe_open(str(examples_path(out, *GS1)), framework="numpy") as f:
            assert set(f.keys()) == set(EXAMPLE_KEYS)
            assert f.get_slice("activations").get_shape() == [WIDTH[GS1], 5]


def test_it_transcoder_skips_the_chat_prefix(hf_cache, model_dirs, tmp_path):
    from sae_lens_gemmascope.models import get_model

    _write(hf_cache, IT_TC)
    prefix = get_model("gemma-3-270m-it").chat_prefix_tokens
    assert len(prefix) == 4
    p = tmp_path / "chat.txt"
    p.write_text("\n".join(" ".join(f"w{10 + 7 * i + j}" for j in range(12)) for i in range(6)) + "\n")
    out = tmp_path / "o"
    _run(_spec(out, model_dirs["gemma3_text"], p, IT_TC, top_k=24))
    rows = _table(out / "rows")
    docs = _docs(model_dirs["gemma3_text"], p, 24)
    ref = reference_features(model_dirs["gemma3_text"], hf_cache, *IT_TC, docs)
    assert check_topk(rows, ref, 24, skip=4) > 0
    marker = json.loads((out / "shards" / "shard-00000-of-00001.json").read_text())
    assert marker["saes"][0]["n_tokens"] == sum(len(d) - 4 for d in docs)


def test_merged_examples_file_is_gemma_scope_2_format_and_agrees_with_rows(
    hf_cache, model_dirs, corpus, tmp_path
):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from sae_lens_gemmascope.extract.merge import examples_path, merge

    _write(hf_cache, RES)
    out = tmp_path / "o"
    w = WIDTH[RES]
    _run(
        _spec(out, model_dirs["gemma3_text"], corpus, RES, top_k=w, top_n=7)
    )  # K = d_sae: every non-zero is a row
    merge(out, quiet=True)
    path = examples_path(out, *RES)
    docs = _docs(model_dirs["gemma3_text"], corpus, 24)
    ctx = max(map(len, docs))
    want = {
        "activations": ("F32", (w, 7)),
        "seq_ids": ("I64", (w, 7)),
        "positions": ("I32", (w, 7)),
        "logit_effects": ("F32", (w, 7)),
        "top_tokens": ("I32", (w, 10)),
        "bottom_tokens": ("I32", (w, 10)),
        "top_logits": ("F32", (w, 10)),
        "bottom_logits": ("F32", (w, 10)),
        "feature_frequencies": ("F64", (w,)),
        "tokens": ("I32", (len(docs), ctx)),
    }
    with safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == set(want)
        for key, (dt, shape) in want.items():
            sl = f.get_slice(key)
            assert (sl.get_dtype(), tuple(sl.get_shape())) == (dt, shape), key
        ex = {k: f.get_tensor(k) for k in f.keys()}
    # tokens: the tokenizer's ids, right-padded with the pad id (0)
    for s, d in enumerate(docs):
        assert ex["tokens"][s, : len(d)].tolist() == d and not ex["tokens"][s, len(d) :].any()
    # frequencies and top examples, from the rows (which hold every non-zero here)
    rows = _table(out / "rows").to_pandas()
    n_tok = sum(len(d) - 1 for d in docs)
    freq = rows.groupby("feature").size().reindex(range(w), fill_value=0).to_numpy() / n_tok
    np.testing.assert_array_equal(ex["feature_frequencies"], freq)
    for f_ in range(w):
        mine = (
            rows[rows.feature == f_]
            .sort_values(["value", "seq", "pos"], ascending=[False, True, True])
            .head(7)
        )
        m = len(mine)
        np.testing.assert_array_equal(ex["activations"][f_, :m], mine.value.to_numpy())
        np.testing.assert_array_equal(ex["seq_ids"][f_, :m], mine.seq.to_numpy())
        np.testing.assert_array_equal(ex["positions"][f_, :m], mine.pos.to_numpy())
        assert (ex["activations"][f_, m:] == 0).all() and (ex["seq_ids"][f_, m:] == -1).all()
    # logit directions from the raw decoder, the final norm weight (Gemma: gain 1 + w) and the embedding
    hf = AutoModelForCausalLM.from_pretrained(model_dirs["gemma3_text"], dtype=torch.float32)
    w_u = hf.get_output_embeddings().weight.detach().double().numpy()
    gain = 1.0 + hf.model.norm.weight.detach().double().numpy()
    logits = (_raw_params(hf_cache, *RES)["w_dec"] * gain) @ w_u.T
    top = np.argsort(-logits, axis=1)[:, :10]
    np.testing.assert_array_equal(ex["top_tokens"], top)
    np.testing.assert_allclose(ex["top_logits"], np.take_along_axis(logits, top, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ex["bottom_tokens"], np.argsort(logits, axis=1)[:, :10])
    f_, r = np.unravel_index(np.argmax(ex["activations"]), ex["activations"].shape)
    s, p_ = ex["seq_ids"][f_, r], ex["positions"][f_, r]
    nxt = docs[s][p_ + 1] if p_ + 1 < len(docs[s]) else None
    want_eff = 0.0 if nxt is None else ex["activations"][f_, r] * logits[f_, nxt]
    assert ex["logit_effects"][f_, r] == pytest.approx(want_eff, rel=1e-4, abs=1e-4)


def test_explain_and_dashboard_read_a_merged_gemma_scope_1_extraction(
    hf_cache, model_dirs, corpus, tmp_path, capsys
):
    """Gemma Scope 1 ships no examples file: `explain --from DIR` shows the extraction's evidence,
    decoded with the extraction's (Gemma 2) tokenizer; checked against the rows and the tokenizer."""
    from transformers import AutoTokenizer

    from sae_lens_gemmascope.cli import main
    from sae_lens_gemmascope.extract.merge import merge

    _write(hf_cache, GS1)
    out = tmp_path / "gs1"
    w = WIDTH[GS1]
    _run(_spec(out, model_dirs["gemma2"], corpus, GS1, top_k=w, top_n=4))  # K = d_sae: every non-zero
    assert main(["explain", *GS1, "0", "--from", str(out)]) == 2  # not merged yet
    assert f"gemmascope merge {out}" in capsys.readouterr().err
    merge(out, quiet=True)
    rows = _table(out / "rows").to_pandas()
    f_ = int(rows.feature.value_counts().index[0])  # the most frequent feature
    assert (
        main(["explain", *GS1, str(f_), "--from", str(out), "-n", "3", "--before", "2", "--after", "30"]) == 0
    )
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert (
        lines[0] == f"Feature {f_} of {GS1[0]} / {GS1[1]}"
        and lines[1] == f"  evidence       extraction {out}"
    )
    docs = _docs(model_dirs["gemma2"], corpus, 24)
    n_tok = sum(len(d) - 1 for d in docs)
    n_f = int((rows.feature == f_).sum())
    assert f"frequency      {n_f / n_tok:.6g} " in text
    tok = AutoTokenizer.from_pretrained(model_dirs["gemma2"])
    want = (
        rows[rows.feature == f_].sort_values(["value", "seq", "pos"], ascending=[False, True, True]).head(3)
    )
    got = [ln for ln in lines if re.match(r"^\s+\S+\s+\d+:\d+  ", ln)]
    assert len(got) == 3
    for ln, (_, r) in zip(got, want.iterrows(), strict=True):
        s_, p_ = int(r.seq), int(r.pos)
        pieces = tok.convert_ids_to_tokens(docs[s_])
        ctx = "".join(pieces[max(0, p_ - 2) : p_]) + f"[[{pieces[p_]}]]" + "".join(pieces[p_ + 1 :])
        assert ln.split()[:2] == [f"{r.value:.4g}", f"{s_}:{p_}"]
        assert ln.endswith(f"  {ctx}"), (ln, ctx)  # the document's own tokens, no padding after its end
    # every stored example of every feature: the document's own tokens, never the padding after its end
    from sae_lens_gemmascope import open_extraction

    short = 0
    with open_extraction(out, *GS1) as ex:
        assert ex.d_sae == w
        for feat in range(w):
            for e in ex.top(feat, n=4, window=(2, 30)):
                d = docs[e.seq_id]
                assert list(e.token_ids) == d[max(0, e.position - 2) : e.position + 31]
                assert list(e.tokens) == tok.convert_ids_to_tokens(list(e.token_ids))
                short += len(d) < 24
    assert short > 0  # some examples come from documents shorter than the padded rows
    # an SAE the job did not extract: the error lists what it has
    assert main(["explain", *RES, "0", "--from", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not one of the SAEs extracted" in err and GS1[1] in err
    # the dashboard reads the same evidence
    site = tmp_path / "site"
    assert main(["dashboard", *GS1, "--from", str(out), "--out", str(site), "--features", f"{f_}"]) == 0
    body = (site / "data" / "f" / f"{f_ // 64}.js").read_text(encoding="utf-8")
    shard = json.loads(body[body.index(",", body.index(",") + 1) + 1 : body.rstrip().rindex(")")])
    rec = shard["features"][str(f_)]
    assert [(e[1], e[2]) for e in rec["ex"][:3]] == [(int(r.seq), int(r.pos)) for _, r in want.iterrows()]
    for e in rec["ex"]:
        s_, p_ = e[1], e[2]
        assert e[4] == docs[s_][max(0, p_ - 16) : p_ + 5]  # window 16 before, 4 after, cut at the end
        pieces = tok.convert_ids_to_tokens(docs[s_])
        assert shard["tok"][str(docs[s_][p_])] == pieces[p_]


def test_dataset_input_equals_text_input(hf_cache, model_dirs, corpus, tmp_path):
    _write(hf_cache, RES)
    lines = corpus.read_text(encoding="utf-8").split("\n")[:-1]
    js = tmp_path / "docs.jsonl"
    js.write_text("".join(json.dumps({"body": t}) + "\n" for t in lines), encoding="utf-8")
    a, b = tmp_path / "a", tmp_path / "b"
    _run(_spec(a, model_dirs["gemma3_text"], corpus, RES))
    from sae_lens_gemmascope.extract.spec import ExtractSpec

    spec = ExtractSpec(saes=(RES,), out=str(b), dataset=str(js), column="body", model=str(model_dirs["gemma3_text"]),
                       ctx=24, top_k=6, batch_size=3, top_n=5, check_shapes=False, device="cpu")  # fmt: skip
    _run(spec)
    assert _table(a / "rows").equals(_table(b / "rows"))


def test_incompatible_sae_is_refused(hf_cache, model_dirs, corpus, tmp_path, capsys):
    from sae_lens_gemmascope.cli import main
    from sae_lens_gemmascope.extract.setup import ModelMismatchError

    _write(hf_cache, GS1)
    with pytest.raises(ModelMismatchError, match="gemma2"):  # a Gemma 2 SAE on a Gemma 3 model
        _run(_spec(tmp_path / "a", model_dirs["gemma3_text"], corpus, GS1))
    e = registry.get(*RES)
    write_entry(e, hf_cache, d_in=32, d_out=32, d_sae=8)  # a 32-wide SAE on a 64-wide model
    rc = main(["extract", "--sae", *RES, "--text", str(corpus), "--out", str(tmp_path / "b"),
               "--model", str(model_dirs["gemma3_text"]), "--no-check-shapes", "--device", "cpu"])  # fmt: skip
    assert rc == 2 and "32-wide" in capsys.readouterr().err


def test_merge_refuses_missing_shards(hf_cache, model_dirs, corpus, tmp_path):
    from sae_lens_gemmascope.extract.merge import merge
    from sae_lens_gemmascope.extract.spec import ExtractError

    _write(hf_cache, RES)
    out = tmp_path / "o"
    _run(_spec(out, model_dirs["gemma3_text"], corpus, RES, shard=(1, 3)))
    with pytest.raises(ExtractError, match="--shard 0/3, --shard 2/3"):
        merge(out, quiet=True)


def test_torchrun_env_picks_the_shard(monkeypatch):
    import argparse

    from sae_lens_gemmascope.extract.spec import add_arguments, spec_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    args = p.parse_args(["--sae", *RES, "--text", "x.txt", "--out", "o"])
    assert spec_from_args(args).shard == (2, 4)
    args = p.parse_args(["--sae", *RES, "--text", "x.txt", "--out", "o", "--shard", "1/3"])
    assert spec_from_args(args).shard == (1, 3)


@pytest.mark.ray
def test_ray_executor_equals_local(hf_cache, model_dirs, corpus, tmp_path):
    """A real Ray run (local cluster, 2 actors, Ray Data map_batches) writes the same files as the
    local executor, and merges to the same examples file."""
    pytest.importorskip("ray", reason="needs the ray extra: pip install 'sae-lens-gemmascope[ray]'")
    import ray

    from sae_lens_gemmascope.extract.merge import examples_path, merge

    _write(hf_cache, RES, TC)
    local, remote = tmp_path / "local", tmp_path / "ray"
    _run(_spec(local, model_dirs["gemma3_text"], corpus, RES, TC))
    try:
        _run(_spec(remote, model_dirs["gemma3_text"], corpus, RES, TC, executor="ray", ray_actors=2))
    finally:
        ray.shutdown()
    for t in ("rows", "stats", "examples", "tokens"):
        assert _table(remote / t).equals(_table(local / t)), t
    merge(local, quiet=True)
    merge(remote, quiet=True)
    for rel, sid in (RES, TC):
        assert _sha(examples_path(remote, rel, sid)) == _sha(examples_path(local, rel, sid))
