"""The examples.safetensors reader against files with KNOWN contents (full GS2 key set).

Two crafted files go into a temporary Hugging Face cache through the real huggingface_hub paths:

* a 16k-wide one (d_sae = 16384 as the registry says, K = 4 examples per feature) whose feature
  ``PARIS`` fires on " Paris" in known sentences, stored in shuffled slot order with a padding slot;
* a narrow one (3 features) with the official K = 1000, mixing every kind of padding, and ties.

Expected values come from a plain-Python reference over the raw arrays (not from the reader), and
decoded tokens from ``tokenizer.decode([id])`` of the real Gemma 3 tokenizer.
This module also provides the crafted files to test_explain.py and test_dashboard*.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sae_lens_gemmascope import registry
from sae_lens_gemmascope.errors import CorruptArtifactError, GemmaScopeError, ShapeMismatchError
from sae_lens_gemmascope.offline.synthetic import write_examples

WIDE = ("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
NARROW = ("gemma-scope-2-1b-pt-transcoders-all", "layer_12_width_16k_l0_small")
ABSENT = ("gemma-scope-2-27b-it-mlp-all", "layer_3_width_16k_l0_small")
PARIS = 12345
T = 10
# token ids of the real Gemma 3 vocabulary (checked in test_token_ids_are_gemma3)
IDS = {
    " The": 669, " capital": 5279, " of": 529, " France": 7001, " is": 563, " Paris": 9079,
    ".": 236761, " Rome": 13706, " Berlin": 15687, " cat": 5866, " sat": 2838, " on": 580,
    " the": 506, " mat": 1756, " dog": 4799, "\n": 107,
}  # fmt: skip
BOS = 2
CITIES = [" Paris", " Rome", " Berlin"]


def corpus(n: int, ctx: int) -> np.ndarray:
    """Row s: "<bos> The capital of France is <city s%3>. The cat sat on the mat.\\n..." cut to ctx."""
    rows = np.zeros((n, ctx), np.int32)
    for s in range(n):
        words = [" The", " capital", " of", " France", " is", CITIES[s % 3], ".", " The", " cat", " sat"]
        words += [" on", " the", " mat", ".", "\n", " The", " dog", " sat"] * 4
        rows[s] = [BOS] + [IDS[w] for w in words][: ctx - 1]
    return rows


def wide_file(seed: int = 0) -> dict[str, np.ndarray]:
    """16384 features x K = 4. PARIS: 3 real examples on " Paris" (position 6), shuffled, 1 padding slot."""
    W, K, N, C = 16384, 4, 48, 16
    g = np.random.default_rng(seed)
    acts = g.uniform(0.1, 9.0, (W, K)).astype(np.float32)
    seq = g.integers(0, N, (W, K)).astype(np.int64)
    pos = g.integers(1, C, (W, K)).astype(np.int32)
    pad = g.random((W, K)) < 0.3
    acts[pad] = 0.0
    seq[pad] = -1
    acts[0] = 0.0  # feature 0 never fired: all padding
    seq[0] = -1
    paris_rows = [s for s in range(N) if s % 3 == 0][:3]  # rows whose city is " Paris"
    acts[PARIS] = [7.25, 0.0, 2.5, 4.0]
    seq[PARIS] = [paris_rows[1], -1, paris_rows[0], paris_rows[2]]
    pos[PARIS] = [6, 0, 6, 6]
    top_tok = g.integers(3, 262144, (W, T)).astype(np.int32)
    top_val = g.uniform(0.1, 3.0, (W, T)).astype(np.float32)
    bot_tok = g.integers(3, 262144, (W, T)).astype(np.int32)
    bot_val = -g.uniform(0.1, 3.0, (W, T)).astype(np.float32)
    top_tok[PARIS, :3] = [IDS[" Paris"], IDS[" France"], IDS[" capital"]]
    top_val[PARIS, :3] = [2.0, 3.5, 1.25]  # stored unsorted
    top_val[PARIS, 3:] = np.linspace(1.0, 0.25, T - 3)
    freq = g.uniform(0, 0.01, W)
    freq[PARIS] = 0.0123
    freq[0] = 0.0
    return {
        "activations": acts,
        "seq_ids": seq,
        "positions": pos,
        "logit_effects": g.standard_normal((W, K)).astype(np.float32),
        "top_tokens": top_tok,
        "top_logits": top_val,
        "bottom_tokens": bot_tok,
        "bottom_logits": bot_val,
        "feature_frequencies": freq.astype(np.float64),
        "tokens": corpus(N, C),
    }


def narrow_file(seed: int = 1) -> dict[str, np.ndarray]:
    """3 features x the official K = 1000: 0 = 1000 real examples (shuffled); 1 = 7 real examples among
    every kind of padding; 2 = ties (equal activations)."""
    W, K, N, C = 3, 1000, 40, 24
    g = np.random.default_rng(seed)
    acts = g.permutation(np.linspace(0.5, 50.0, K)).astype(np.float32)[None].repeat(W, 0)
    seq = g.integers(0, N, (W, K)).astype(np.int64)
    pos = g.integers(0, C, (W, K)).astype(np.int32)
    acts[1] = 0.0
    seq[1] = -1
    real = g.choice(K, 7, replace=False)
    acts[1, real] = [3.0, 1.0, 8.0, 2.0, 5.0, 4.0, 6.0]
    seq[1, real] = g.integers(0, N, 7)
    junk = [k for k in range(K) if k not in set(real.tolist())][:6]
    acts[1, junk] = [np.nan, -2.0, np.inf, 9.0, 9.5, 9.9]  # 9.x: valid acts with out-of-range slots
    seq[1, junk] = [1, 1, 1, -5, N, 2]
    pos[1, junk[5]] = C
    acts[2] = np.where(np.arange(K) < 500, 2.0, 1.0).astype(np.float32)
    return {
        "activations": acts,
        "seq_ids": seq,
        "positions": pos,
        "logit_effects": g.standard_normal((W, K)).astype(np.float32),
        "top_tokens": g.integers(3, 262144, (W, T)).astype(np.int32),
        "top_logits": g.uniform(0, 1, (W, T)).astype(np.float32),
        "bottom_tokens": g.integers(3, 262144, (W, T)).astype(np.int32),
        "bottom_logits": -g.uniform(0, 1, (W, T)).astype(np.float32),
        "feature_frequencies": np.array([0.5, 1e-5, 0.25]),
        "tokens": g.integers(3, 262144, (N, C)).astype(np.int32),
    }


def reference_top(t: dict[str, np.ndarray], f: int) -> list[tuple[float, int, int]]:
    """The documented rule in plain Python: drop padding, sort by -activation, seq, position."""
    n, c = t["tokens"].shape
    out = []
    cols = (t["activations"][f].tolist(), t["seq_ids"][f].tolist(), t["positions"][f].tolist())
    for a, s, p in zip(*cols, strict=True):
        if math.isfinite(a) and a > 0 and 0 <= s < n and 0 <= p < c:
            out.append((a, s, p))
    return sorted(out, key=lambda x: (-x[0], x[1], x[2]))


def write(cache: Path, which: tuple[str, str], tensors: dict[str, np.ndarray]) -> Path:
    return write_examples(registry.get(*which), cache, tensors)


@pytest.fixture(scope="module")
def wide() -> dict[str, np.ndarray]:
    return wide_file()


@pytest.fixture(scope="module")
def narrow() -> dict[str, np.ndarray]:
    return narrow_file()


def test_token_ids_are_gemma3(tokenizer: Any) -> None:
    for word, i in IDS.items():
        assert tokenizer(word, add_special_tokens=False).input_ids == [i], word


def test_wide_top_sorted_padding_dropped_windows_decoded(
    hf_cache: Path, wide: dict[str, np.ndarray], tokenizer: Any
) -> None:
    import sae_lens_gemmascope as gs

    write(hf_cache, WIDE, wide)
    with gs.load_examples(*WIDE, tokenizer=tokenizer) as ex:
        assert (ex.d_sae, ex.n_examples, ex.n_logits) == (16384, 4, T)
        got = ex.top(PARIS, n=20, window=(6, 2))
        assert [(e.activation, e.seq_id, e.position) for e in got] == [(7.25, 3, 6), (4.0, 6, 6), (2.5, 0, 6)]
        for e in got:
            row = wide["tokens"][e.seq_id].tolist()
            assert list(e.token_ids) == row[0:9]  # 6 before (clipped at 0), the token, 2 after
            assert e.active == 6 and e.tokens[e.active] == " Paris"
            assert list(e.tokens) == [tokenizer.decode([i]) for i in row[0:9]]
        assert got[0].text == "<bos> The capital of France is Paris. The"
        assert got[0].marked() == "<bos> The capital of France is[[ Paris]]. The"
        assert ex.top(0) == []  # all padding
        for f in (1, 777, 9000, 16383):  # random features: the reference rule, every slot
            assert [(e.activation, e.seq_id, e.position) for e in ex.top(f, n=10)] == reference_top(wide, f)
        assert ex.frequency(PARIS) == 0.0123 and ex.frequency(5) == float(wide["feature_frequencies"][5])
        lg = ex.logits(PARIS)
        assert [(t.token, t.value) for t in lg.top[:3]] == [
            (" France", 3.5),
            (" Paris", 2.0),
            (" capital", 1.25),
        ]
        assert [t.value for t in lg.bottom] == sorted(float(v) for v in wide["bottom_logits"][PARIS])
        assert lg.bottom[0].token == tokenizer.decode([lg.bottom[0].token_id])


def test_narrow_k1000_every_padding_kind_and_ties(hf_cache: Path, narrow: dict[str, np.ndarray]) -> None:
    from sae_lens_gemmascope import load_examples
    from sae_lens_gemmascope.evidence.vocab import Vocab

    write(hf_cache, NARROW, narrow)
    vocab = Vocab([f"t{i}" for i in range(262144)])  # decoding is not what this test is about
    with pytest.raises(ShapeMismatchError, match="d_sae = 16384"):
        load_examples(*NARROW, tokenizer=vocab)
    ex = load_examples(*NARROW, tokenizer=vocab, check_shapes=False)
    assert ex.n_examples == 1000
    full = ex.top(0, n=1000)
    assert len(full) == 1000
    assert [(e.activation, e.seq_id, e.position) for e in full] == reference_top(narrow, 0)
    assert full[0].activation == pytest.approx(50.0) and full[-1].activation == pytest.approx(0.5)
    got = [(e.activation, e.seq_id) for e in ex.top(1, n=50)]
    assert [a for a, _ in got] == [8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # NaN, inf, <=0, bad seq/pos dropped
    assert list(ex.activations(1)) == [8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    ties = ex.top(2, n=1000)
    assert [(e.activation, e.seq_id, e.position) for e in ties] == reference_top(narrow, 2)
    w = ex.top(0, n=1, window=3)[0]
    row = narrow["tokens"][w.seq_id].tolist()
    lo = max(0, w.position - 3)
    assert list(w.token_ids) == row[lo : w.position + 4] and w.token_ids[w.active] == row[w.position]
    ex.close()


def test_header_checks_are_typed_and_name_the_fix(hf_cache: Path, narrow: dict[str, np.ndarray]) -> None:
    from sae_lens_gemmascope import load_examples

    bad = dict(narrow)
    del bad["logit_effects"]
    write(hf_cache, NARROW, bad)
    with pytest.raises(CorruptArtifactError, match=r"lacks logit_effects.*--force-download"):
        load_examples(*NARROW, check_shapes=False)
    bad = dict(narrow, seq_ids=narrow["seq_ids"].astype(np.int32))
    write(hf_cache, NARROW, bad)
    with pytest.raises(CorruptArtifactError, match="'seq_ids' is I32, expected I64"):
        load_examples(*NARROW, check_shapes=False)
    bad = dict(narrow, positions=narrow["positions"][:, :999])
    write(hf_cache, NARROW, bad)
    with pytest.raises(ShapeMismatchError, match="'positions'.*K = 1000"):
        load_examples(*NARROW, check_shapes=False)


def test_missing_or_absent_examples_name_the_alternative(hf_cache: Path) -> None:
    from sae_lens_gemmascope import load_examples
    from sae_lens_gemmascope.evidence import ExamplesNotAvailableError

    with pytest.raises(ExamplesNotAvailableError, match=r"(?s)download .* --examples.*gemmascope extract"):
        load_examples(*WIDE)
    with pytest.raises(ExamplesNotAvailableError, match="gemmascope extract") as err:
        load_examples(*ABSENT)
    assert isinstance(err.value, GemmaScopeError) and isinstance(err.value, FileNotFoundError)
    with pytest.raises(ExamplesNotAvailableError, match="Gemma Scope 1"):
        load_examples("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")


def test_feature_out_of_range(hf_cache: Path, narrow: dict[str, np.ndarray]) -> None:
    from sae_lens_gemmascope import load_examples
    from sae_lens_gemmascope.evidence.examples import FeatureIndexError
    from sae_lens_gemmascope.evidence.vocab import Vocab

    write(hf_cache, NARROW, narrow)
    with load_examples(*NARROW, check_shapes=False, tokenizer=Vocab([])) as ex:
        with pytest.raises(FeatureIndexError, match="0 .. 2"):
            ex.top(3)


def test_registry_says_where_examples_ship() -> None:
    e = registry.get("gemma-scope-2-27b-it-transcoders", "transcoder/layer_31_width_16k_l0_small")
    assert e.examples == "observed"
    assert registry.get(*ABSENT).examples == "absent"
    assert registry.get(*WIDE).examples == "expected"
    assert registry.get("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71").examples == "absent"
    # size estimate from the reported corpus: 16384 x 20168 B + 236963 x 512 x 4 B = the 816 MB reported
    e4 = registry.get("gemma-scope-2-4b-it-res", "layer_17_width_16k_l0_medium")
    assert e4.examples_bytes == 16384 * (1000 * 20 + 160 + 8) + 236963 * 512 * 4
    assert round(e4.examples_bytes / 1e6) == 816


def test_download_examples_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from sae_lens_gemmascope.cli import main

    assert main(["download", *WIDE, "--dry-run", "--examples"]) == 0
    assert "examples.safetensors" in capsys.readouterr().out
    assert main(["download", *ABSENT, "--dry-run", "--examples"]) == 0
    assert "examples.safetensors" not in capsys.readouterr().out


def test_top_reads_only_that_features_rows(hf_cache: Path, narrow: dict[str, np.ndarray]) -> None:
    """Every read goes through ``get_slice``: one row per per-feature key, the example rows of ``tokens``."""
    from sae_lens_gemmascope import load_examples
    from sae_lens_gemmascope.evidence.vocab import Vocab

    write(hf_cache, NARROW, narrow)
    ex = load_examples(*NARROW, check_shapes=False, tokenizer=Vocab([]))
    reads: list[tuple[str, Any]] = []
    real = ex._f

    class Spy:
        def __init__(self, key: str) -> None:
            self.key, self.sl = key, real.get_slice(key)

        def __getitem__(self, item: Any) -> Any:
            reads.append((self.key, item))
            return self.sl[item]

    class File:
        def get_slice(self, key: str) -> Spy:
            return Spy(key)

        def get_tensor(self, key: str) -> Any:  # a whole-tensor read would land here
            raise AssertionError(f"read all of {key}")

    ex._f = File()
    got = ex.top(1, n=3)
    ex._f = real
    per_feature = {k for k, _ in reads if k != "tokens"}
    assert per_feature == {"activations", "seq_ids", "positions", "logit_effects"}
    assert all(item == slice(1, 2) for k, item in reads if k != "tokens")
    rows = sorted({e.seq_id for e in got})
    assert sorted(r for k, item in reads if k == "tokens" for r in range(item.start, item.stop)) == rows
    ex.close()
