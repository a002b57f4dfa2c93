"""Tiny random-weight Gemma 2 / Gemma 3 models for offline tests, and their TransformerLens wrappers.

The models keep every Gemma feature that matters for hook placement: pre- *and* post- attention /
feed-forward RMSNorms with **random gains** (Hugging Face initialises them to 0, i.e. a gain of 1,
which would hide any gain bug), ``n_heads * d_head != d_model``, grouped-query attention, sliding
window layers, soft-capping (Gemma 2), q/k-norm and dual RoPE (Gemma 3), and for Gemma 3
multimodal the ``Gemma3ForConditionalGeneration`` class whose decoder lives at
``model.language_model``.

``to_hooked`` goes through the real ``HookedTransformer.from_pretrained`` code path of an official
model name (``google/gemma-2-2b``, ``google/gemma-3-270m``, ``google/gemma-3-4b-pt``); only the
dimensions of TransformerLens' hard-coded config are replaced by the tiny model's.
``to_bridge`` wraps with ``TransformerBridge.boot_transformers(hf_model=...)``, which rewrites the
HF model's modules in place: by default it therefore wraps a deep copy.

The weights are random: nothing here says anything about Gemma itself.

Example:
    >>> import torch
    >>> from sae_lens_gemmascope.offline.tiny import tiny_gemma
    >>> hf, facts = tiny_gemma("gemma3_text", seed=0)
    >>> (facts.model_key, facts.n_layers, facts.d_model, facts.n_heads * facts.d_head)
    ('gemma-3-270m', 6, 64, 128)
    >>> hf(torch.tensor([[2, 5, 7]])).logits.shape
    torch.Size([1, 3, 4096])
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .guards import no_package_installs, offline_hub

FAMILIES: tuple[str, ...] = ("gemma2", "gemma3_text", "gemma3_multimodal")

#: Official model a tiny model stands in for: TransformerLens config branch and ``hooks.hook_for`` key.
STAND_IN: dict[str, tuple[str, str]] = {
    "gemma2": ("google/gemma-2-2b", "gemma-2-2b"),
    "gemma3_text": ("google/gemma-3-270m", "gemma-3-270m"),
    "gemma3_multimodal": ("google/gemma-3-4b-pt", "gemma-3-4b-pt"),
}

VOCAB = 4096  # > 2364, so the Gemma 3 IT chat prefix ids 2, 105, 2364, 107 exist
BOS, EOS, PAD, UNK = 2, 1, 0, 3


@dataclass(frozen=True)
class TinyFacts:
    """The shapes of one tiny model and the real model it stands in for."""

    family: str
    model_key: str  # key for hooks.hook_for / models.get_model
    official_name: str  # the TransformerLens / HF name whose code path is used
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    hf_layers_path: str  # "model.layers" or "model.language_model.layers"
    hf_embed_path: str
    eps: float


def _text_kwargs(family: str, n_layers: int) -> dict[str, Any]:
    common: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        sliding_window=4,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        attn_implementation="eager",
    )
    if family == "gemma2":
        common.update(
            num_key_value_heads=2,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            layer_types=["sliding_attention", "full_attention"] * (n_layers // 2),
        )
    else:
        common.update(
            num_key_value_heads=1,
            layer_types=[
                "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layers)
            ],
        )
    return common


def tiny_config(family: str, n_layers: int = 6) -> Any:
    """A transformers config for a tiny model of ``family`` (``gemma2``, ``gemma3_text``, ``gemma3_multimodal``)."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; use one of {', '.join(FAMILIES)}.")
    from transformers import Gemma2Config, Gemma3Config, Gemma3TextConfig

    kw = _text_kwargs(family, n_layers)
    if family == "gemma2":
        return Gemma2Config(**kw)
    if family == "gemma3_text":
        return Gemma3TextConfig(**kw)
    attn_impl = kw.pop("attn_implementation")
    text = Gemma3TextConfig(**kw)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    cfg = Gemma3Config(
        text_config=text.to_dict(),
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=VOCAB - 1,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
    )
    cfg._attn_implementation = attn_impl
    return cfg


def randomize_norms(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Give every RMSNorm gain (``*norm.weight``) a random value, so gain bugs cannot hide."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") and p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def facts_for(hf_model: Any, family: str) -> TinyFacts:
    """TinyFacts of an HF Gemma model (tiny or real) of ``family``."""
    tc = hf_model.config.get_text_config() if family == "gemma3_multimodal" else hf_model.config
    from ..hooks import hook_for
    from ..models import get_model

    official, key = STAND_IN[family]
    return TinyFacts(
        family=family,
        model_key=key,
        official_name=official,
        n_layers=tc.num_hidden_layers,
        d_model=tc.hidden_size,
        n_heads=tc.num_attention_heads,
        n_kv_heads=tc.num_key_value_heads,
        d_head=tc.head_dim,
        d_mlp=tc.intermediate_size,
        d_vocab=tc.vocab_size,
        hf_layers_path=get_model(key).hf_layers_path,
        hf_embed_path=hook_for(key, "embedding", backend="hf").hf_module,
        eps=tc.rms_norm_eps,
    )


def tiny_gemma(family: str, seed: int = 0, n_layers: int = 6) -> tuple[Any, TinyFacts]:
    """Build a tiny random ``family`` model in fp32 eval mode with random RMSNorm gains.

    Returns ``(hf_model, facts)``. The same ``seed`` gives identical weights, so call it again for
    a fresh copy (``TransformerBridge`` rewrites modules in place).
    """
    from transformers import Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration

    cfg = tiny_config(family, n_layers=n_layers)
    cls = {
        "gemma2": Gemma2ForCausalLM,
        "gemma3_text": Gemma3ForCausalLM,
        "gemma3_multimodal": Gemma3ForConditionalGeneration,
    }[family]
    torch.manual_seed(seed)
    model = cls(cfg)
    randomize_norms(model, seed)
    model = model.float().eval()
    model.config.name_or_path = STAND_IN[family][0]
    model.config.architectures = [cls.__name__]
    return model, facts_for(model, family)


def tiny_tokenizer() -> Any:
    """A word-level fast tokenizer over ``VOCAB`` ids (BOS 2, EOS 1, PAD 0, UNK 3) that prepends BOS.

    It is saved to a temporary directory and reloaded from there, because TransformerLens
    re-instantiates tokenizers from their ``name_or_path``.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_tiny_tokenizer_dir())


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_dir() -> str:
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": EOS, "<bos>": BOS, "<unk>": UNK}
    for i in range(4, VOCAB):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )
    d = tempfile.mkdtemp(prefix="tiny-gemma-tok-")
    fast.save_pretrained(d)
    return d


def tiny_tokens(batch: int = 2, seq: int = 16, seed: int = 0) -> torch.Tensor:
    """Random token ids ``[batch, seq]`` starting with BOS (avoids the multimodal special ids)."""
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(4, VOCAB - 8, (batch, seq), generator=g)
    toks[:, 0] = BOS
    return toks


def _tl_cfg_overrides(hf_model: Any, family: str) -> dict[str, Any]:
    f = facts_for(hf_model, family)
    tc = hf_model.config.get_text_config() if family == "gemma3_multimodal" else hf_model.config
    out: dict[str, Any] = dict(
        d_model=f.d_model,
        d_head=f.d_head,
        n_heads=f.n_heads,
        d_mlp=f.d_mlp,
        n_layers=f.n_layers,
        d_vocab=f.d_vocab,
        eps=f.eps,
        n_key_value_heads=f.n_kv_heads,
        n_ctx=tc.max_position_embeddings,
        window_size=tc.sliding_window,
        attn_types=["local" if t == "sliding_attention" else "global" for t in tc.layer_types],
        attn_scale=float(tc.query_pre_attn_scalar) ** 0.5,
        rotary_dim=f.d_head,
    )
    if family == "gemma2":
        out["attn_scores_soft_cap"] = float(tc.attn_logit_softcapping or -1.0)
        out["output_logits_soft_cap"] = float(tc.final_logit_softcapping or -1.0)
    else:
        rp = tc.rope_parameters or {}
        full, local = rp.get("full_attention", {}), rp.get("sliding_attention", {})
        out["rotary_base"] = float(full.get("rope_theta", 1e6))
        out["rotary_base_local"] = float(local.get("rope_theta", 1e4))
        if full.get("rope_type") == "linear":
            out["rotary_scaling_factor"] = float(full["factor"])
        else:
            out.pop("rotary_scaling_factor", None)
    return out


@contextlib.contextmanager
def _patched_tl_config(overrides: dict[str, Any], tokenizer_name: str | None) -> Iterator[None]:
    import transformer_lens.loading_from_pretrained as loading

    real = loading.convert_hf_model_config

    def patched(model_name: str, **kwargs: Any) -> dict[str, Any]:
        d = real(model_name, **kwargs)
        d.update(overrides)
        if d.get("rotary_scaling_factor") is not None and "rotary_scaling_factor" not in overrides:
            d["rotary_scaling_factor"] = 1.0
        d["tokenizer_name"] = tokenizer_name
        return d

    loading.convert_hf_model_config = patched
    try:
        yield
    finally:
        loading.convert_hf_model_config = real


def to_hooked(
    hf_model: Any,
    family: str,
    processing: bool = False,
    tokenizer: Any = None,
    add_mlp_hook_in: bool = True,
    cls: Any = None,
) -> Any:
    """Wrap a tiny ``family`` HF model as a ``HookedTransformer`` (or ``cls``, e.g. HookedSAETransformer).

    ``processing=False`` is ``from_pretrained_no_processing`` (what GS2 transcoders need);
    ``processing=True`` is ``from_pretrained`` with its defaults (fold_ln, center_unembed, ...).
    ``add_mlp_hook_in`` adds the ``blocks.L.mlp.hook_in`` HookPoints (as HookedSAETransformer does).
    The HF model is only read, not modified.
    """
    import warnings

    from transformer_lens import HookedTransformer

    official = STAND_IN[family][0]
    overrides = _tl_cfg_overrides(hf_model, family)
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    with _patched_tl_config(overrides, None), offline_hub(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        klass = cls or HookedTransformer
        load = klass.from_pretrained if processing else klass.from_pretrained_no_processing
        model = load(official, hf_model=hf_model, tokenizer=tok, device="cpu", dtype=torch.float32)
    if add_mlp_hook_in:
        from ..hooks import ensure_mlp_hook_in

        ensure_mlp_hook_in(model)
    return model.eval()


def to_bridge(hf_model: Any, compat: bool = False, copy_model: bool = True, tokenizer: Any = None) -> Any:
    """Wrap an HF Gemma model as a ``TransformerBridge`` (raw by default; ``compat=True`` enables
    compatibility mode, which folds the norms like HookedTransformer).

    ``copy_model=True`` wraps a deep copy, because the bridge rewrites the model's modules in place.
    """
    from transformer_lens.model_bridge import TransformerBridge

    m = copy.deepcopy(hf_model) if copy_model else hf_model
    name = getattr(m.config, "name_or_path", None) or "google/gemma-3-270m"
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    # the multimodal adapter tries AutoProcessor.from_pretrained(name), then `pip install torchvision`
    with offline_hub(), no_package_installs():
        bridge = TransformerBridge.boot_transformers(name, hf_model=m, tokenizer=tok, device="cpu")
    if compat:
        bridge.enable_compatibility_mode()
    return bridge.eval()


def random_sae(
    model: str,
    site: str,
    layer: int | None,
    *,
    d_in: int,
    d_sae: int = 32,
    d_out: int | None = None,
    site_out: str | None = None,
    skip: bool = False,
    seed: int = 0,
    threshold: float = 0.05,
) -> Any:
    """A SAELens JumpReLU SAE / transcoder with random weights and Gemma Scope metadata, for tests
    and examples (no file, no hub). **Random weights: says nothing about Gemma.**"""
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    from ..hooks import hook_for
    from ..models import get_model

    facts = get_model(model)
    spec = hook_for(facts.key, site, layer)
    g = torch.Generator().manual_seed(seed)
    out_site = site_out or site
    d_out = d_out or d_in
    meta = {"model_name": facts.hf_id, "hook_name": spec.hook_name}
    if out_site != site:
        meta["hook_name_out"] = hook_for(facts.key, out_site, layer).hook_name
        kw = dict(
            d_in=d_in, d_sae=d_sae, d_out=d_out, apply_b_dec_to_input=False, metadata=SAEMetadata(**meta)
        )
        cfg = (JumpReLUSkipTranscoderConfig if skip else JumpReLUTranscoderConfig)(**kw)  # type: ignore[arg-type]
        sae = (JumpReLUSkipTranscoder if skip else JumpReLUTranscoder)(cfg)  # type: ignore[arg-type]
    else:
        cfg = JumpReLUSAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            apply_b_dec_to_input=False,
            reshape_activations=spec.reshape,
            metadata=SAEMetadata(**meta),
        )
        sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.W_dec.copy_(torch.randn(d_sae, d_out, generator=g) / d_sae**0.5)
        sae.b_dec.copy_(torch.randn(d_out, generator=g) * 0.1)
        sae.threshold.fill_(threshold)
        if skip:
            sae.W_skip.copy_(torch.randn(d_out, d_in, generator=g) / d_in**0.5)
    return sae.eval()
