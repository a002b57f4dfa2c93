"""One block of documents through the model and every SAE: one forward pass, all sites hooked.

:class:`Extractor` installs :func:`sae_lens_gemmascope.attach.record` hooks at every SAE's input site
and a hook on the deepest layer needed that raises, so the pass stops there (no later layer, no
unembedding). For each SAE it keeps the tokens Gemma Scope was trained on
(:func:`sae_lens_gemmascope.attach.untrained_positions`: no ``<bos>``, no IT chat prefix for IT
transcoders, no padding) and encodes them with :func:`sae_lens_gemmascope.sparse.encode_codes`: one
chunked pass that yields each token's top ``K`` (the rows) and every non-zero (the statistics), with no
dense ``[tokens, d_sae]`` tensor.

Example (a tiny random model and SAE; ``tests/test_extract.py`` has the numbers):
    >>> import torch
    >>> from sae_lens_gemmascope.extract.corpus import Block
    >>> from sae_lens_gemmascope.extract.runner import Extractor
    >>> from sae_lens_gemmascope.offline.tiny import random_sae
    >>> from sae_lens_gemmascope.sparse import encode_codes
    >>> sae = random_sae("gemma-3-270m", "resid_post", 0, d_in=4, d_sae=6)
    >>> codes = encode_codes(sae, torch.randn(3, 4), k=2)
    >>> tuple(codes.values.shape), bool((codes.values[:, 0] >= codes.values[:, 1]).all())
    ((3, 2), True)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from ..models import get_model
from ..sparse import LATENT_CHUNK, encode_codes
from .corpus import Block
from .setup import SaeSlot
from .stats import FeatureStats

#: Dense ``[tokens, latents]`` chunk size, in floats (32 MB of fp32): 1024 tokens x 8192 latents.
CHUNK_FLOATS = 1 << 23


class _StopForward(Exception):
    """Raised by the hook on the deepest layer needed: the rest of the forward pass is not computed."""


@dataclass
class SaeResult:
    """One SAE's share of a block: its rows (top-K per token) and its non-zero activations."""

    seq: torch.Tensor  # rows, int64
    pos: torch.Tensor  # int32
    feature: torch.Tensor  # int32
    value: torch.Tensor  # float32
    nz_seq: torch.Tensor
    nz_pos: torch.Tensor
    nz_feature: torch.Tensor
    nz_value: torch.Tensor
    n_tokens: int

    def add_to(self, stats: FeatureStats) -> None:
        stats.add(self.nz_feature, self.nz_value, self.nz_seq, self.nz_pos)
        stats.n_tokens += self.n_tokens


@dataclass
class BlockResult:
    index: int
    seqs: list[int]
    ids: list[list[int]]
    per_sae: list[SaeResult]
    n_tokens: int


class Extractor:
    """Runs blocks through ``hf`` and the SAEs of ``slots``; use as a context manager (hooks)."""

    def __init__(self, hf: Any, tokenizer: Any, slots: list[SaeSlot], top_k: int) -> None:
        self.hf, self.slots, self.top_k = hf, slots, int(top_k)
        self.model_key = slots[0].entry.model
        self.points = list(dict.fromkeys(s.point for s in slots))
        self.bos = tokenizer.bos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = next(hf.parameters()).device
        deepest = max((layer for _, layer in self.points if layer is not None), default=0)
        self._last = hf.get_submodule(get_model(self.model_key).hf_layers_path)[deepest]
        self._stack: contextlib.ExitStack | None = None
        self._got: dict[tuple[str, int | None], torch.Tensor] = {}

    def __enter__(self) -> Extractor:
        from ..attach import record

        stack = contextlib.ExitStack()
        self._got = stack.enter_context(record(self.hf, self.model_key, self.points))

        def stop(module: Any, args: Any, out: Any) -> None:
            raise _StopForward

        handle = self._last.register_forward_hook(stop)  # after record's hooks: they fire first
        stack.callback(handle.remove)
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def forward(self, ids: torch.Tensor) -> dict[tuple[str, int | None], torch.Tensor]:
        """Activations at every point for ``ids`` ``[B, T]`` (right-padded: causal attention never
        lets a real token see the padding)."""
        if self._stack is None:
            raise RuntimeError("use `with Extractor(...) as ex:`")
        self._got.clear()
        with torch.no_grad():
            try:
                self.hf(input_ids=ids.to(self.device), use_cache=False)
            except _StopForward:
                pass
        return dict(self._got)

    def run(self, block: Block) -> BlockResult:
        """Rows and non-zero activations of every SAE for one block."""
        from ..attach import untrained_positions

        lens = torch.tensor([len(x) for x in block.ids])
        t = int(lens.max())
        ids = torch.full((len(block.ids), t), self.pad, dtype=torch.long)
        for b, doc in enumerate(block.ids):
            ids[b, : len(doc)] = torch.tensor(doc, dtype=torch.long)
        acts = self.forward(ids)
        valid = torch.arange(t)[None, :] < lens[:, None]
        seq_grid = torch.tensor(block.seqs, dtype=torch.int64)[:, None].expand(-1, t)
        pos_grid = torch.arange(t, dtype=torch.int64)[None, :].expand(len(block.ids), -1)
        out = []
        for slot in self.slots:
            x = acts[slot.point]
            bad = untrained_positions(x, ids, bos_token_id=self.bos, prefix_len=slot.zero_prefix)
            keep = valid if bad is None else valid & ~bad.cpu()
            out.append(self._encode(slot, x[keep.to(x.device)], seq_grid[keep], pos_grid[keep]))
        return BlockResult(block.index, block.seqs, block.ids, out, int(lens.sum()))

    def _encode(self, s: SaeSlot, x: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor) -> SaeResult:
        k = min(self.top_k, s.d_sae)
        chunk = max(1, CHUNK_FLOATS // min(s.d_sae, LATENT_CHUNK))
        c = encode_codes(s.sae, x, k, token_chunk=chunk)
        live = (c.values > 0).cpu()
        r = torch.nonzero(live)[:, 0]
        tok = c.nz_row.cpu()
        return SaeResult(
            seq[r],
            pos[r].to(torch.int32),
            c.indices.cpu()[live].to(torch.int32),
            c.values.float().cpu()[live],
            seq[tok],
            pos[tok].to(torch.int32),
            c.nz_feature.cpu().to(torch.int32),
            c.nz_value.float().cpu(),
            int(x.shape[0]),
        )
