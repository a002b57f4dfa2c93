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
# # 3. Steering and ablation, done right
#
# Three interventions, and the detail that decides whether each one means what you think:
#
# | intervention | what changes | the detail |
# |---|---|---|
# | splice | the activation becomes the SAE reconstruction | without the **error term** you also delete everything the SAE fails to reconstruct |
# | ablate a feature | one feature's contribution `f_i * W_dec[i]` is removed | keep the error term, or you measure the reconstruction error too |
# | steer | `alpha * W_dec[i]` is added | choose **positions** (never `<bos>`) and an `alpha` on the scale of the residual stream |
#
# The helpers in `sae_lens_gemmascope.attach` are context managers that work on a HookedTransformer,
# a TransformerBridge or a plain Hugging Face model, at the site the SAE was trained on. This notebook
# uses the plain Hugging Face model (the same calls work on the others).

# %%
ONLINE = None  # None: the hub if reachable; False: force the offline sandbox; True: require the hub

import warnings

import torch

from sae_lens_gemmascope import attach
from sae_lens_gemmascope.offline.sandbox import Sandbox

torch.set_grad_enabled(False)
sb = Sandbox(online=ONLINE, shrink=16)
print(sb.banner())

RELEASE, SAE_ID = "gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium"
sae = sb.sae(RELEASE, SAE_ID)
entry = sb.entry(RELEASE, SAE_ID)
model, tok = sb.hf()
tokens = tok(
    "The Eiffel Tower is in the city of Paris, the capital of France.", return_tensors="pt"
).input_ids


def logits_of(ids):
    return model(ids).logits


# %% [markdown]
# ## Splicing: with and without the error term
#
# `splice(model, sae)` writes `decode(encode(x))` over the activation. With `use_error_term=True` it
# writes `recon + (x - recon).detach()`: the forward pass is exactly the model's, but gradients and
# interventions on the features flow through the SAE. That is the baseline every ablation and
# attribution should start from. (`<bos>` keeps the model's own activation either way.)

# %%
clean = logits_of(tokens)
with attach.splice(model, sae, use_error_term=False):
    spliced = logits_of(tokens)
with attach.splice(model, sae, use_error_term=True) as st:
    with_err = logits_of(tokens)


def loss(logits):
    lp = logits.log_softmax(-1)[0, :-1]
    return float(-lp.gather(-1, tokens[0, 1:, None]).mean())


print(
    f"next-token loss: clean {loss(clean):.3f}, spliced {loss(spliced):.3f}, spliced+error {loss(with_err):.3f}"
)
print(f"max |logits(spliced+error) - logits(clean)| = {float((with_err - clean).abs().max()):.1e}")
print(
    "error-term norm / activation norm:", float(st.error[0, 1:].norm() / (st.error + st.recon)[0, 1:].norm())
)

# %% [markdown]
# ## Ablating one feature
#
# Pick the feature most specific to the token " Paris" (active there, quiet elsewhere), then remove
# it. `attach.ablate` keeps the error term, so the only change is that feature's contribution. The
# naive version (splice without error term, then zero the feature) mixes in the whole reconstruction
# error and overstates the effect.

# %%
strs = [tok.decode([t]) for t in tokens[0]]
paris = strs.index(" Paris")
f = st.features[0]
specificity = f[paris] - f[1:].mean(0)
feat = int(specificity.argmax())
print(
    f"feature #{feat}: {float(f[paris, feat]):.2f} at ' Paris', mean {float(f[1:, feat].mean()):.2f} elsewhere"
)
print("Neuronpedia:", entry.feature_url(feat))

with attach.ablate(model, sae, feat):
    ablated = logits_of(tokens)


def naive_ablation(module, args, output):  # a torch hook on the layer the SAE reads (model.layers.9)
    act = output[0] if isinstance(output, tuple) else output
    g = sae.encode(act)
    g[..., feat] = 0
    out = sae.decode(g)
    out[:, 0] = act[:, 0]  # keep <bos>
    return (out, *output[1:]) if isinstance(output, tuple) else out


handle = model.model.layers[entry.layer].register_forward_hook(naive_ablation)
naive = logits_of(tokens)
handle.remove()
pos = paris + 1  # the prediction after " Paris"
for name, lg in [("ablate (error kept)", ablated), ("naive (error dropped)", naive)]:
    kl = torch.nn.functional.kl_div(
        lg[0, pos].log_softmax(-1), clean[0, pos].log_softmax(-1), log_target=True, reduction="sum"
    )
    print(f"{name:22} KL(clean || intervened) at position {pos}: {float(kl):.4f}")

# %% [markdown]
# ## Steering
#
# Adding `alpha * W_dec[feat]` pushes the residual stream towards the feature. Two things matter:
#
# * **Positions.** Steer the prompt's real tokens (and, when generating, the new ones), never
#   `<bos>`: Gemma Scope was not trained on it, and its residual is huge and special. The helpers
#   skip `<bos>` tokens themselves; `positions=` restricts steering further.
# * **Scale.** Gemma's residual stream is large (layer 9 of 270M: thousands) and Gemma Scope 2
#   decoder rows are not unit-norm, so an `alpha` copied from a GPT-2 tutorial does nothing. Express
#   it relative to the typical residual norm.

# %%
with attach.record(model, entry.model, [("resid_post", entry.layer)]) as acts:
    model(tokens)
resid_norm = float(acts[("resid_post", entry.layer)][0, 1:].norm(dim=-1).median())
d_norm = float(sae.W_dec[feat].norm())
print(f"median residual norm {resid_norm:.0f}; |W_dec[{feat}]| = {d_norm:.2f}")

prompt = tok("My favourite place to visit is", return_tensors="pt").input_ids
target = tok(" Paris", add_special_tokens=False).input_ids[0]
fractions = [0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3]
logprobs = []
for frac in fractions:
    alpha = frac * resid_norm / d_norm
    with attach.steer(model, sae, feat, alpha):  # every position but <bos>
        lp = logits_of(prompt)[0, -1].log_softmax(-1)
    logprobs.append(float(lp[target]))
    print(f"alpha = {frac:.3f} x residual norm: log p(' Paris') = {logprobs[-1]:7.2f}")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(fractions, logprobs, "o-")
ax.set(xlabel="steering strength (fraction of the median residual norm)", ylabel="log p(' Paris')")
ax.set_title(f"Steering feature #{feat} at layer 9 ({sb.mode})")
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# A little steering moves the prediction; too much pushes the residual stream off the model's
# distribution and everything degrades. Generating with steering: `generate` with its KV cache runs
# one new token per step, and `positions=slice(1, None)` would skip it (it is position 0 of that
# step). Steer every position instead (`positions=None`): `<bos>` is never steered anyway.

# %%
best = fractions[max(range(len(fractions)), key=logprobs.__getitem__)]


for frac in (0.0, best):
    with attach.steer(model, sae, feat, frac * resid_norm / d_norm):
        out = model.generate(prompt, max_new_tokens=12, do_sample=False)
    print(f"{frac:.3f}: {tok.decode(out[0, 1:])!r}")

# %% [markdown]
# ## PT and IT releases are separate
#
# Every Gemma Scope 2 PT SAE has an IT twin trained on the instruction-tuned model. Attaching one to
# the other model still runs, so the helpers warn.

# %%
it_sae = sb.sae("gemma-scope-2-270m-it-res", SAE_ID)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with attach.cache_features(model, it_sae):
        model(tokens)
for w in caught:
    if issubclass(w.category, attach.ModelMismatchWarning):
        print("ModelMismatchWarning:", w.message)
