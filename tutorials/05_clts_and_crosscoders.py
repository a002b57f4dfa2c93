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
# # 5. Cross-layer transcoders and crosscoders
#
# Gemma Scope 2 has two kinds of multi-layer models, both stored as one `params_layer_{i}.safetensors`
# per block:
#
# * **CLTs** (270m, 1b): block `i` reads the MLP input of layer `i` and writes to the MLP output of
#   *every later layer* `j >= i` through its own decoder slice `w_dec_i[:, j, :]`. The MLP output of
#   layer `j` is rebuilt from all earlier blocks: `y_j = sum_{i<=j} f_i @ w_dec_i[:, j, :] + b_dec_j`.
# * **Crosscoders** (every model, 4 layers at 25/50/65/85% depth): block `k` reads the residual stream
#   of layer `layers[k]`, and every block writes to all four.
#
# SAELens 6.54.12 turns a CLT into single-layer transcoders by *summing* each block's decoders over its
# targets. That vector is no layer's contribution; we measure how wrong it is below.

# %%
ONLINE = None  # None: the hub if reachable; False: force the offline sandbox; True: require the hub

import torch

from sae_lens_gemmascope import registry
from sae_lens_gemmascope.offline.sandbox import Sandbox
from sae_lens_gemmascope.replace import clt_replacement, crosscoder_encoding, run_with_crosscoder

torch.set_grad_enabled(False)
sb = Sandbox(online=ONLINE, shrink=16, block_width=256)
print(sb.banner())

for e in registry.find(kind="clt") + registry.find(kind="crosscoder", model="gemma-3-270m"):
    print(
        f"{e.release:34} {e.sae_id:36} {len(e.layers):2} blocks x {e.d_sae_per_layer:>7,} latents "
        f"= {e.d_sae:>9,}; {e.size_bytes() / 2**30:6.1f} GiB fp32  ({e.status})"
    )

# %% [markdown]
# ## Lazy loading
#
# The 1b 262k CLT is about 30 GiB in fp32. Reconstructing the MLP output of layer `k` needs files
# `0..k`, and from each only the encoder and the column `w_dec_i[:, k, :]`. `lazy=True` reads headers
# only; everything else is read on first use.

# %%
CLT = ("gemma-scope-2-270m-pt-clt", "width_262k_l0_big")
clt = sb.clt(*CLT, lazy=True)
print(clt)
clt.load([3])
print("after load([3]): loaded targets", clt.loaded_targets(), "| decoder slices", sorted(clt.W_dec.keys()))

# %% [markdown]
# ## Reconstructing every layer
#
# Collect the CLT's inputs (`blocks.i.mlp.hook_in`: the normalised MLP input, so the model is loaded
# without `fold_ln`) and the real MLP outputs (`blocks.j.hook_mlp_out`), encode every block, and
# compare three ways of rebuilding layer `j`:
#
# 1. the CLT: every block `i <= j` through its slice `w_dec_i[:, j, :]`;
# 2. same layer only: block `j` through `w_dec_j[:, j, :]` (what a per-layer view can give);
# 3. summed decoders: block `j` through `sum_t w_dec_j[:, t, :]` (SAELens 6.54.12).

# %%
model = sb.hooked()
texts = [
    "The Eiffel Tower is in Paris, and the Colosseum is in Rome.",
    "def mean(values):\n    return sum(values) / len(values)",
    "Water boils at one hundred degrees and freezes at zero.",
]
n = clt.n_blocks
# online, each of the 18 files is ~0.7 GB, and rebuilding layer j needs files 0..j: pick a few layers
TARGETS = list(range(n)) if not sb.online else [0, n // 2, n - 1]
clt.load(TARGETS)
names = [f"blocks.{i}.mlp.hook_in" for i in range(n)] + [f"blocks.{j}.hook_mlp_out" for j in range(n)]
caches = [model.run_with_cache(model.to_tokens(t), names_filter=names)[1] for t in texts]
fvu = {"CLT": [], "same layer only": [], "summed decoder": []}
for j in TARGETS:
    err = {k: 0.0 for k in fvu}
    var = 0.0
    for cache in caches:
        feats = {i: clt.encode(i, cache[f"blocks.{i}.mlp.hook_in"][0, 1:]) for i in range(j + 1)}
        y = cache[f"blocks.{j}.hook_mlp_out"][0, 1:]
        x_j = cache[f"blocks.{j}.mlp.hook_in"][0, 1:]
        skip = x_j @ clt.W_skip[str(j)] if clt.affine else 0
        recon = {
            "CLT": clt.decode_to(j, feats, x_j),
            "same layer only": feats[j] @ clt.decoder(j, j) + clt.b_dec[str(j)] + skip,
        }
        summed = sum(clt.decoder(j, t) for t in clt.targets_of(j))  # what SAELens 6.54.12 builds
        recon["summed decoder"] = feats[j] @ summed + clt.b_dec[str(j)] + skip
        for k, r in recon.items():
            err[k] += float(((y - r) ** 2).sum())
        var += float(((y - y.mean(0)) ** 2).sum())
    for k in fvu:
        fvu[k].append(err[k] / var)
    print(f"layer {j:2}: " + "  ".join(f"{k} FVU {fvu[k][-1]:6.3f}" for k in fvu))

# %%
import matplotlib.pyplot as plt

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
for k, v in fvu.items():
    a1.plot(TARGETS, v, "o-", label=k)
a1.set(xlabel="layer j", ylabel="FVU of the MLP output", yscale="log", title="Rebuilding MLP outputs")
a1.legend()
a1.grid(alpha=0.3)

norms = torch.full((n, n), float("nan"))
for i in range(n):
    for j in clt.targets_of(i):
        norms[i, j] = clt.decoder(i, j).norm(dim=-1).mean()
im = a2.imshow(norms.numpy(), cmap="magma")
a2.set(xlabel="target layer j", ylabel="source block i", title="mean |w_dec_i[:, j, :]| per latent")
fig.colorbar(im, ax=a2)
fig.suptitle(f"{CLT[0]} / {CLT[1]} ({sb.mode}{'' if sb.online else ': synthetic weights'})")
fig.tight_layout()
plt.show()

# %% [markdown]
# The right panel is what "per-layer decoders" means: each block owns a row of decoders, one per later
# layer, and nothing below the diagonal (a CLT is causal). A summed decoder adds that whole row into
# one vector and writes it into a single layer.
#
# ## The replacement model
#
# `clt_replacement` replaces every MLP output by the CLT's reconstruction in one forward pass (the MLP
# input of layer `i` is computed before any output `j >= i` is needed). With per-layer error terms
# the logits are the model's own; without them we see what the CLT alone preserves.

# %%
if sb.online:
    print("Online: the full replacement reads every decoder slice (about half of the CLT's fp32 size).")
clt.load()
tokens = model.to_tokens(texts[0])
clean = model(tokens, return_type="loss")
clean_logits = model(tokens)
with clt_replacement(model, clt, use_error_term=True):
    same = model(tokens)
with clt_replacement(model, clt, use_error_term=False) as state:
    replaced = model(tokens, return_type="loss")
print(f"with error terms: max |logit difference| = {float((same - clean_logits).abs().max()):.1e}")
print(f"CLT alone: next-token loss {float(replaced):.3f} vs clean {float(clean):.3f}")
l0 = sum((f[0, 1:] > 0).sum(-1).float().mean() for f in state.features.values())
print(f"active latents per token, all {n} blocks together: {float(l0):.0f}")

# %% [markdown]
# ## Crosscoders
#
# A crosscoder encodes four residual-stream layers jointly and decodes to all four, earlier layers
# included, so it cannot be spliced in a single forward pass: `crosscoder_encoding` records the latents
# in one pass and `run_with_crosscoder` writes the reconstructions in a second.

# %%
XC = ("gemma-scope-2-270m-pt-crosscoder", "layer_5_9_12_15_width_1m_l0_big")
if sb.online:
    print(f"Online: this crosscoder is {sb.entry(*XC).size_bytes() / 2**30:.1f} GiB in fp32.")
cc = sb.crosscoder(*XC)
with crosscoder_encoding(model, cc) as st:
    model(tokens)
recon = st.reconstruct()
for k, layer in enumerate(cc.layers):
    x = st.inputs[k][0, 1:]
    r = recon[k][0, 1:]
    print(
        f"block {k} (layer {layer:2}): FVU {float(((x - r) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()):.3f}"
    )
out, _ = run_with_crosscoder(model, cc, tokens, use_error_term=True)
print(
    f"run_with_crosscoder with error terms: max |logit difference| = {float((out - clean_logits).abs().max()):.1e}"
)

xnorm = torch.tensor([[float(cc.decoder(k, j).norm(dim=-1).mean()) for j in range(4)] for k in range(4)])
fig, ax = plt.subplots(figsize=(4, 3.5))
im = ax.imshow(xnorm.numpy(), cmap="magma")
ax.set_xticks(range(4), [f"L{x}" for x in cc.layers])
ax.set_yticks(range(4), [f"L{x}" for x in cc.layers])
ax.set(xlabel="decodes to", ylabel="encoded at", title="crosscoder decoder norms")
fig.colorbar(im, ax=ax)
fig.tight_layout()
plt.show()
