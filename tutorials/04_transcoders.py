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
# # 4. Transcoders and skip transcoders
#
# An SAE reconstructs the tensor it reads. A **transcoder** reads the MLP's input and predicts the
# MLP's output: a sparse, readable stand-in for the MLP. Gemma Scope 2 ships two kinds:
#
# * plain: `out = f @ W_dec + b_dec` with `f = JumpReLU(x @ W_enc + b_enc)`;
# * **affine skip** (`_affine` folders): `out = f @ W_dec + b_dec + x @ affine_skip_connection`, a
#   dense linear path next to the sparse one.
#
# Everything depends on reading the right tensor, so we start there.

# %%
ONLINE = None  # None: the hub if reachable; False: force the offline sandbox; True: require the hub

import torch

from sae_lens_gemmascope import attach
from sae_lens_gemmascope.hooks import BACKENDS, hook_for
from sae_lens_gemmascope.offline.sandbox import Sandbox

torch.set_grad_enabled(False)
sb = Sandbox(online=ONLINE, shrink=16)
print(sb.banner())

LAYER = 9
RELEASE = "gemma-scope-2-270m-pt-transcoders-all"
plain = sb.sae(RELEASE, f"layer_{LAYER}_width_16k_l0_small")
skip = sb.sae(RELEASE, f"layer_{LAYER}_width_16k_l0_small_affine")
for tc in (plain, skip):
    md = tc.cfg.metadata
    print(f"{type(tc).__name__:24} reads {md.hook_name:22} writes {md.hook_name_out}")

# %% [markdown]
# ## Where they read and write
#
# The Gemma Scope 2 `config.json` says `model.layers.L.pre_feedforward_layernorm.output` in and
# `model.layers.L.post_feedforward_layernorm.output` out. The input is the **normalised MLP input
# including the RMSNorm gain** `(1 + w)`. In TransformerLens that is `blocks.L.mlp.hook_in`, which
# exists only on a model loaded **without** `fold_ln`. Two look-alikes are wrong:
# `blocks.L.hook_mlp_in` is the residual stream *before* the norm (what SAELens 6.54.12 uses), and
# `blocks.L.ln2.hook_normalized` lacks the gain (it is the right input for Gemma Scope **1**
# transcoders, whose gain was folded into the encoder).

# %%
for backend in BACKENDS:
    s = hook_for("gemma-3-270m", "gs2_transcoder_in", LAYER, backend=backend)
    where = s.hook_name if backend != "hf" else s.hf_point
    print(f"{backend:18} {where:45} {'needs ' + ', '.join(s.requires) if s.requires else ''}")

# %%
model = sb.hooked()
model.set_use_hook_mlp_in(True)
hf, tok = sb.hf()
prompt = "The Eiffel Tower is in the city of"
tokens = model.to_tokens(prompt)

ref = {}
h = hf.model.layers[LAYER].pre_feedforward_layernorm.register_forward_hook(lambda m, a, o: ref.update(x=o))
hf(tokens)
h.remove()
x_hf = ref["x"][0]

names = [f"blocks.{LAYER}.mlp.hook_in", f"blocks.{LAYER}.hook_mlp_in", f"blocks.{LAYER}.ln2.hook_normalized"]
_, cache = model.run_with_cache(tokens, names_filter=names)
f_ref = plain.encode(x_hf)
for n in names:
    x = cache[n][0]
    rel = float((x - x_hf).norm() / x_hf.norm())
    flips = float(((plain.encode(x) > 0) != (f_ref > 0))[1:].float().mean())
    print(f"{n:28} relative difference {rel:9.2e}   features switched on/off: {flips:6.1%}")

# %% [markdown]
# ## The processing guard
#
# `HookedTransformer.from_pretrained` folds the norm gains into the next weights by default
# (`fold_ln`), after which *no* hook carries the transcoder input. The attach helpers refuse such a
# model instead of computing wrong features. (Shown on a tiny random Gemma 3 to stay fast.)

# %%
from sae_lens_gemmascope.errors import HookMappingError
from sae_lens_gemmascope.offline.tiny import tiny_gemma, to_hooked

tiny_hf, _ = tiny_gemma("gemma3_text")
folded = to_hooked(tiny_hf, "gemma3_text", processing=True)
try:
    attach.check_processing(folded, "gs2_transcoder_in")
except HookMappingError as err:
    print("HookMappingError:", err)

# %% [markdown]
# ## Reconstructing the MLP output
#
# `splice` runs the transcoder on `mlp.hook_in` and writes its prediction over `hook_mlp_out`.
# The fraction of variance unexplained (FVU) of the MLP output, `<bos>` excluded:

# %%
texts = [
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "for i in range(10):\n    print(i * i)",
    "She told her brother that the train had already left the station.",
]
for tc in (plain, skip):
    num = den = 0.0
    for t in texts:
        with attach.splice(model, tc, use_error_term=True) as st:
            model(model.to_tokens(t))
        y = (st.recon + st.error)[0, 1:]  # the real MLP output
        num += float(((y - st.recon[0, 1:]) ** 2).sum())
        den += float(((y - y.mean(0)) ** 2).sum())
    print(f"{type(tc).__name__:24} FVU of mlp_out: {num / den:.3f}")

x = cache[f"blocks.{LAYER}.mlp.hook_in"][0, 1:]
skip_part = x @ skip.W_skip.T  # W_skip is affine_skip_connection transposed (SAELens convention)
print(f"skip term norm / output norm: {float(skip_part.norm() / skip(x).norm()):.2f}")

# %% [markdown]
# ## Feature attribution: activation x gradient
#
# Which transcoder features push the model towards " Paris" after "The Eiffel Tower is in the city
# of"? Splice the transcoder in **with the error term** (the logits stay exactly the model's), then
# take the gradient of the target logit with respect to the feature activations. A feature's
# attribution `f_i * d logit / d f_i` is the first-order effect of switching it off.

# %%
target = model.to_single_token(" Paris")
with torch.enable_grad():
    with attach.splice(model, plain, use_error_term=True) as st:
        logits = model(tokens)
    feats = st.features  # [1, pos, d_sae], part of the graph
    feats.retain_grad()
    logits[0, -1, target].backward()
attr = (feats * feats.grad)[0].detach()  # [pos, d_sae]
attr[0] = 0  # <bos> is not a trained position
flat = attr.flatten()
top = flat.abs().topk(8).indices
strs = model.to_str_tokens(tokens)
d_sae = attr.shape[1]
rows = [(int(i) // d_sae, int(i) % d_sae, float(flat[i])) for i in top]
for pos, feat, a in rows:
    print(f"position {pos:2} {strs[pos]!r:10} feature #{feat:<5} attribution {a:+.3f}")

# %% [markdown]
# Check the first-order estimate against the real thing: ablate the top feature (at all positions,
# error term kept) and compare the change in the logit with the summed attributions of that feature.

# %%
pos0, feat0, _ = rows[0]
with attach.ablate(model, plain, feat0):
    ablated = model(tokens)
actual = float(ablated[0, -1, target] - logits[0, -1, target].detach())
print(f"feature #{feat0}: predicted change {-float(attr[:, feat0].sum()):+.3f}, actual {actual:+.3f}")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3.5))
labels = [f"{strs[p]!r} #{f}" for p, f, _ in rows]
ax.barh(
    range(len(rows)), [a for _, _, a in rows], color=["tab:blue" if a > 0 else "tab:red" for *_, a in rows]
)
ax.set_yticks(range(len(rows)), labels)
ax.invert_yaxis()
ax.set_xlabel("attribution to the ' Paris' logit")
ax.set_title(f"Layer {LAYER} transcoder features ({sb.mode})")
fig.tight_layout()
plt.show()
