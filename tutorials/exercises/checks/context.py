"""The shared :class:`Context`: one offline sandbox, the real Gemma 3 270M, its activations on
the fixed prompts and the Gemma-Scope-format files fitted to it, built lazily and reused.

Part of the exercise checker; see :mod:`tutorials.exercises.checks`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

import torch

from .core import CLT, DOWNSTREAM, N_LAYERS, RES, TEXT, TEXT_2, TRANSCODER

# ================================================================================== the shared context


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence loaders (progress bars, warnings, TransformerLens' "Loaded pretrained model" line);
    replay what they said if they fail."""
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise


class Context:
    """One offline sandbox, one Hugging Face model, one HookedTransformer and the artifacts, loaded
    lazily and shared by every check of a run (and by several runs in the same process).

    ``online=False`` by default: the checks are meant to be reproducible without the hub (with
    ``online=True`` the sandbox would use the hub's real Gemma Scope weights, and the CLT files would
    not be in the sandbox cache).
    """

    def __init__(
        self, *, online: bool | None = False, shrink: int = 16, stream: TextIO | None = None
    ) -> None:
        self.online = online
        self.shrink = shrink
        self.stream = stream
        self._memo: dict[Any, Any] = {}
        self.verified: set[str] = set()

    def say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per context."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # ----- models

    @cached_property
    def sb(self) -> Any:
        from sae_lens_gemmascope.offline.sandbox import Sandbox

        sb = Sandbox(online=self.online, shrink=self.shrink)
        self.say(
            f"[checks] {sb.mode} sandbox: the real Gemma 3 270M; Gemma-Scope-format files with "
            + ("real weights" if sb.online else f"SYNTHETIC weights (widths / {self.shrink})")
        )
        return sb

    @cached_property
    def hf(self) -> Any:
        with _quiet():
            model, _ = self.sb.hf()
        return model

    @cached_property
    def tok(self) -> Any:
        return self.sb.tokenizer()

    @cached_property
    def ht(self) -> Any:
        """The HookedTransformer (unprocessed, with ``mlp.hook_in``); its parameters are frozen."""
        with _quiet():
            model = self.sb.hooked()
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def tokens(self, text: str) -> torch.Tensor:
        return self.memo(("tokens", text), lambda: self.sb.tokens(text))

    @cached_property
    def tokens2(self) -> torch.Tensor:
        """``[2, P]``: :data:`TEXT` and :data:`TEXT_2`, cut to the same length (both start with BOS)."""
        a, b = self.tokens(TEXT), self.tokens(TEXT_2)
        n = min(a.shape[1], b.shape[1])
        return torch.cat([a[:, :n], b[:, :n]])

    @cached_property
    def hf_acts(self) -> dict[tuple[str, int], torch.Tensor]:
        """Hugging Face module tensors ``[1, P, d]`` of :data:`TEXT` at every layer, by torch forward hooks.

        Keys: ``(name, layer)`` with name in ``layer_in`` (decoder layer input), ``resid_post`` (layer
        output), ``attn_o_in`` / ``attn_o_out`` (``o_proj`` input / output), ``post_attn_norm``,
        ``resid_mid`` (``pre_feedforward_layernorm`` input), ``mlp_in`` (its output), ``mlp_raw_out``
        (MLP output before the post-feedforward norm), ``mlp_out`` (``post_feedforward_layernorm``
        output) and ``mlp_in_no_gain`` (``resid_mid / rms(resid_mid)``, computed).
        """
        hf = self.hf
        got: dict[tuple[str, int], torch.Tensor] = {}
        handles = []

        def out_hook(key: tuple[str, int]) -> Any:
            def fn(m: Any, args: Any, out: Any) -> None:
                got[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()

            return fn

        def in_hook(key: tuple[str, int]) -> Any:
            def fn(m: Any, args: Any, kwargs: dict[str, Any]) -> None:
                x = args[0] if args else kwargs["hidden_states"]
                got[key] = x.detach().clone()

            return fn

        for L, layer in enumerate(hf.model.layers):
            handles += [
                layer.register_forward_pre_hook(in_hook(("layer_in", L)), with_kwargs=True),
                layer.register_forward_hook(out_hook(("resid_post", L))),
                layer.self_attn.o_proj.register_forward_pre_hook(in_hook(("attn_o_in", L)), with_kwargs=True),
                layer.self_attn.o_proj.register_forward_hook(out_hook(("attn_o_out", L))),
                layer.post_attention_layernorm.register_forward_hook(out_hook(("post_attn_norm", L))),
                layer.pre_feedforward_layernorm.register_forward_pre_hook(
                    in_hook(("resid_mid", L)), with_kwargs=True
                ),
                layer.pre_feedforward_layernorm.register_forward_hook(out_hook(("mlp_in", L))),
                layer.mlp.register_forward_hook(out_hook(("mlp_raw_out", L))),
                layer.post_feedforward_layernorm.register_forward_hook(out_hook(("mlp_out", L))),
            ]
        try:
            with torch.no_grad():
                hf(self.tokens(TEXT))
        finally:
            for h in handles:
                h.remove()
        eps = float(getattr(hf.config, "rms_norm_eps", 1e-6))
        for L in range(len(hf.model.layers)):
            r = got[("resid_mid", L)].double()
            got[("mlp_in_no_gain", L)] = (r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps)).float()
        return got

    def ht_act(self, hook_name: str, tokens: torch.Tensor) -> torch.Tensor:
        """The HookedTransformer activation at ``hook_name`` for ``tokens`` (detached)."""

        def make() -> torch.Tensor:
            m = re.match(r"blocks\.(\d+)\.", hook_name)
            stop = int(m.group(1)) + 1 if m else None
            with torch.no_grad():
                _, cache = self.ht.run_with_cache(tokens, names_filter=[hook_name], stop_at_layer=stop)
            return cache[hook_name].detach().clone()

        return self.memo(
            ("ht_act", hook_name, tokens.shape, hashlib.sha1(tokens.numpy().tobytes()).hexdigest()), make
        )

    def logits(self, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str, Any]] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.ht.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks)).detach()

    def downstream(self, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str, Any]] = ()) -> torch.Tensor:
        """The residual stream after block :data:`DOWNSTREAM` - 1 (a few blocks past the hooks of
        exercises 3 and 4; stopping there skips the 262k-token unembedding)."""
        with torch.no_grad():
            return self.ht.run_with_hooks(
                tokens, fwd_hooks=list(fwd_hooks), stop_at_layer=DOWNSTREAM
            ).detach()

    # ----- artifacts

    def _params_file(self, release_id: tuple[str, str], filename: str) -> Path:
        from sae_lens_gemmascope.hub import cached_file

        entry = self.sb.entry(*release_id)
        path = cached_file(entry, filename, cache_dir=str(self.sb.cache_dir))
        if path is None:
            raise RuntimeError(f"{entry.release}/{entry.sae_id}: {filename} is not in {self.sb.cache_dir}")
        return path

    @cached_property
    def sae(self) -> Any:
        with _quiet():
            sae = self.sb.sae(*RES)
        return sae.eval()

    @cached_property
    def sae_params(self) -> dict[str, torch.Tensor]:
        """The raw tensors of the residual SAE's ``params.safetensors`` (on-disk names)."""
        from safetensors.torch import load_file

        self.sae  # noqa: B018  (writes the file in the sandbox cache)
        return load_file(str(self._params_file(RES, "params.safetensors")))

    @cached_property
    def transcoder(self) -> Any:
        with _quiet():
            tc = self.sb.sae(*TRANSCODER)
        return tc.eval()

    @cached_property
    def clt(self) -> Any:
        with _quiet():
            return self.sb.clt(*CLT)

    @cached_property
    def clt_blocks(self) -> list[dict[str, torch.Tensor]]:
        """The raw tensors of every ``params_layer_{i}.safetensors`` of the CLT."""
        from safetensors.torch import load_file

        self.clt  # noqa: B018  (writes the files in the sandbox cache)
        return [
            load_file(str(self._params_file(CLT, f"params_layer_{i}.safetensors"))) for i in range(N_LAYERS)
        ]
