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
# # 2. Choosing an SAE: width, L0 and what they cost
#
# Gemma Scope ships many SAEs per site: Gemma Scope 2 has 4 per layer (widths 16k and 262k, two L0
# targets) and a wider sweep at 4 layers per model. Picking one is a trade-off between
#
# * **L0**, the number of active features per token (sparser is easier to read, worse to reconstruct),
# * **width**, the dictionary size (wider splits concepts finer, costs memory),
# * and how much of the model's behaviour survives when the SAE is spliced in.
#
# We measure three numbers on Gemma 3 270M for a grid of SAEs: L0, **variance explained** and the
# **change in next-token loss** when the SAE's reconstruction replaces the activation.

# %%
ONLINE = None  # None: the hub if reachable; False: force the offline sandbox; True: require the hub

import torch

from sae_lens_gemmascope import registry
from sae_lens_gemmascope.offline.sandbox import Sandbox

torch.set_grad_enabled(False)
sb = Sandbox(online=ONLINE, shrink=16)
print(sb.banner())

# %% [markdown]
# ## What exists
#
# Gemma Scope 2 names its L0s by label; the number is the training *target*, which ramps up over the
# first third of the layers. Gemma Scope 1 names folders by the *measured* average L0, and SAELens'
# `-canonical` releases pick, per layer and width, the SAE whose L0 is closest to 100.

# %%
LAYER = 9
grid = registry.find(
    model="gemma-3-270m", site="resid_post", layer=LAYER, release="gemma-scope-2-270m-pt-res"
)
for e in grid:
    print(
        f"{e.sae_id:40} width {e.d_sae:>9,}  L0 target {e.l0:>4} ({e.l0_label})  {e.size_bytes() / 1e9:5.2f} GB"
    )

gs1 = registry.find(model="gemma-2-2b", site="resid_post", layer=20, width="16k")
canon = registry.get("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical")
print("\nGemma Scope 1, gemma-2-2b layer 20, 16k: measured L0s", sorted(e.l0 for e in gs1))
print("canonical (closest to 100):", canon.sae_id, "->", canon.path)

# %% [markdown]
# ## Three metrics
#
# All three skip `<bos>`: Gemma Scope was not trained on it, and its residual norm is orders of
# magnitude larger than any other token's (`attach.splice` leaves it alone for the same reason).
# This notebook uses the plain Hugging Face model; the `attach` helpers hook the module each SAE was
# trained on (`model.layers.9` output here), exactly as they hook a TransformerLens model.

# %%
from sae_lens_gemmascope import attach

hf, tok = sb.hf()
EVAL = [
    "The train to Madrid leaves at half past nine, so we should be at the station by nine.",
    "for i in range(10):\n    if i % 3 == 0:\n        print(i, 'is divisible by three')",
    "Photosynthesis turns light, water and carbon dioxide into sugar, releasing oxygen as a by-product.",
    "I asked my brother whether he had fed the cat, and he said he had forgotten again.",
    "Seventeen plus twenty-five is forty-two, and forty-two divided by six is seven.",
]
batches = [tok(t, return_tensors="pt").input_ids for t in EVAL]
SITE = ("resid_post", LAYER)
clean = []
for ids in batches:
    with attach.record(hf, "gemma-3-270m", [SITE]) as acts:
        loss = hf(ids, labels=ids).loss  # mean next-token loss
    clean.append((float(loss), acts[SITE][0, 1:]))


def metrics(sae) -> dict[str, float]:
    sq_err = total_var = l0_sum = n_tok = d_loss = 0.0
    for ids, (clean_loss, x) in zip(batches, clean, strict=True):
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sq_err += float(((x - x_hat) ** 2).sum())
        total_var += float(((x - x.mean(0)) ** 2).sum())
        l0_sum += float((f > 0).sum())
        n_tok += x.shape[0]
        with attach.splice(hf, sae):  # the reconstruction replaces layer 9's output (not at <bos>)
            d_loss += float(hf(ids, labels=ids).loss) - clean_loss
    return {"L0": l0_sum / n_tok, "VE": 1 - sq_err / total_var, "dCE": d_loss / len(batches)}


# %%
results = []
for e in grid:
    if e.width not in ("16k", "65k") or "seed" in e.sae_id:
        continue  # the 262k / 1m SAEs are 1.3-5.4 GB each: the same code works, it only takes longer
    sae = sb.sae(e.release, e.sae_id)
    m = metrics(sae)
    results.append((e, sae.cfg.d_sae, m))
    print(
        f"{e.sae_id:36} d_sae {sae.cfg.d_sae:>6}  L0 {m['L0']:6.1f}  VE {m['VE']:.3f}  dCE {m['dCE']:+.3f} nats"
    )

# %%
import matplotlib.pyplot as plt

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
for width in ("16k", "65k"):
    rows = sorted((m["L0"], m["VE"], m["dCE"]) for e, _, m in results if e.width == width)
    l0s, ves, dces = zip(*rows, strict=True)
    a1.plot(l0s, ves, "o-", label=f"width {width}")
    a2.plot(l0s, dces, "o-", label=f"width {width}")
a1.set(
    xscale="log", xlabel="L0 (active features per token)", ylabel="variance explained", title="Reconstruction"
)
a2.set(xlabel="L0", ylabel="next-token loss increase (nats)", title="Spliced into the model")
for a in (a1, a2):
    a.legend()
    a.grid(alpha=0.3)
fig.suptitle(
    f"Gemma 3 270M layer {LAYER} residual SAEs ({sb.mode}{'' if sb.online else ': synthetic weights'})"
)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Reading the plot
#
# * More active features reconstruct better and hurt the loss less; the price is more features to
#   read per token.
# * Variance explained flatters: an SAE can explain most of the variance and still cost a lot of
#   loss, because what it drops matters downstream. Always measure the spliced loss.
# * A reasonable default is the `medium` L0 at 16k for exploration, 262k when you need finer
#   features. Gemma Scope 2's SAEs are Matryoshka-trained: the first latents reconstruct well on their
#   own, so never sort or permute latents.
#
# Offline, these numbers come from synthetic weights (fitted in closed form to the real model, much
# narrower than the real ones), so only the shape of the trade-off is meaningful, not the values.
