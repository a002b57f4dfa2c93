"""Per-feature statistics that merge exactly, in any grouping and any order.

For one SAE, over every token it was trained on (no ``<bos>``, no IT chat prefix of IT transcoders,
no padding) and every **non-zero** activation (not only the top ``K`` kept as rows):

* ``count``: tokens where the feature is active (int64);
* ``sum_fx``: the sum of its activations in fixed point, ``round(value * 2**24)`` per activation, summed
  as int64 (so the sum is associative: exact in any order; ``sum = sum_fx / 2**24``, each activation
  rounded to 2**-24 ≈ 6e-8, room for sums up to 5e11);
* ``max``: the largest activation (float32, exact);
* ``hist``: counts in :data:`N_BINS` fixed bins (:data:`HIST_EDGES`: 10 per decade from 1e-3 to 1e5,
  bin 0 below 1e-3, the last bin at or above 1e5; a value equal to an edge goes to the bin above it);
* the top ``N`` examples ``(value, seq, pos)``, ordered by value descending, then ``seq`` and ``pos``
  ascending (deterministic ties), so the top-N of a union is the top-N of the top-Ns.

Integer sums, maxima and a total order make :meth:`FeatureStats.merge` exact: one shard equals any
number of shards merged, bit for bit.

Example:
    >>> import torch
    >>> from sae_lens_gemmascope.extract.stats import FeatureStats
    >>> a, b = FeatureStats(3, top_n=2), FeatureStats(3, top_n=2)
    >>> a.add(torch.tensor([0, 2]), torch.tensor([0.5, 2.0]), torch.tensor([0, 0]), torch.tensor([1, 1]))
    >>> b.add(torch.tensor([2, 2]), torch.tensor([2.0, 1.0]), torch.tensor([1, 1]), torch.tensor([1, 2]))
    >>> a.merge(b)
    >>> a.count.tolist(), a.max.tolist()
    ([1, 0, 3], [0.5, 0.0, 2.0])
    >>> [(int(f), float(v), int(s), int(p)) for f, v, s, p in zip(*a.examples())]
    [(0, 0.5, 0, 1), (2, 2.0, 0, 1), (2, 2.0, 1, 1)]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Histogram edges (float64): 10 log-spaced bins per decade from 1e-3 to 1e5.
HIST_EDGES = np.power(10.0, np.arange(-30, 51) / 10.0)
HIST_EDGES_ID = "log10 -3..5 x10 v1"
N_BINS = len(HIST_EDGES) + 1
SUM_BITS = 24
_PRUNE_AT = 1 << 20


def _order(feat: torch.Tensor, val: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by feature, then value descending, seq, pos (stable sorts, last key first)."""
    perm = torch.argsort(pos, stable=True)
    perm = perm[torch.argsort(seq[perm], stable=True)]
    perm = perm[torch.argsort(val[perm], descending=True, stable=True)]
    return perm[torch.argsort(feat[perm], stable=True)]


class FeatureStats:
    """Mergeable statistics of ``d_sae`` features (see the module docstring)."""

    def __init__(self, d_sae: int, top_n: int = 1000, device: str | torch.device = "cpu") -> None:
        self.d_sae, self.top_n, self.device = int(d_sae), int(top_n), torch.device(device)
        self.n_tokens = 0
        dev = self.device
        self.count = torch.zeros(d_sae, dtype=torch.int64, device=dev)
        self.sum_fx = torch.zeros(d_sae, dtype=torch.int64, device=dev)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=dev)
        self.hist = torch.zeros(d_sae * N_BINS, dtype=torch.int64, device=dev)
        self._edges = torch.tensor(HIST_EDGES, dtype=torch.float64, device=self.device)
        self._thr = torch.full((d_sae,), -float("inf"), dtype=torch.float32, device=self.device)
        self._cand: list[tuple[torch.Tensor, ...]] = []
        self._n_cand = 0

    # ----------------------------------------------------------------------------- accumulate

    def add(self, feat: torch.Tensor, val: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor) -> None:
        """Add non-zero activations: ``val[i]`` of feature ``feat[i]`` at document ``seq[i]``, token ``pos[i]``."""
        d = self.device
        feat, seq, pos = feat.to(d, torch.int64), seq.to(d, torch.int64), pos.to(d, torch.int64)
        val = val.to(d, torch.float32)
        if feat.numel() == 0:
            return
        self.count += torch.bincount(feat, minlength=self.d_sae)
        self.sum_fx.index_add_(0, feat, torch.round(val.double() * 2.0**SUM_BITS).to(torch.int64))
        self.max.scatter_reduce_(0, feat, val, reduce="amax")
        b = torch.bucketize(val.double(), self._edges, right=True)
        self.hist += torch.bincount(feat * N_BINS + b, minlength=self.d_sae * N_BINS)
        keep = val >= self._thr[feat]
        if not bool(keep.all()):
            feat, val, seq, pos = feat[keep], val[keep], seq[keep], pos[keep]
        self._cand.append((feat, val, seq, pos))
        self._n_cand += int(feat.numel())
        if self._n_cand > max(_PRUNE_AT, 2 * self.top_n):
            self._prune()

    def _prune(self) -> None:
        if not self._cand:
            return
        feat, val, seq, pos = (torch.cat(x) for x in zip(*self._cand, strict=True))
        perm = _order(feat, val, seq, pos)
        feat, val, seq, pos = feat[perm], val[perm], seq[perm], pos[perm]
        counts = torch.bincount(feat, minlength=self.d_sae)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(feat.numel(), device=self.device) - starts[feat]
        keep = rank < self.top_n
        feat, val, seq, pos = feat[keep], val[keep], seq[keep], pos[keep]
        full = counts >= self.top_n
        if bool(full.any()):  # the N-th best value: nothing below it can enter that feature's top-N
            kept = torch.clamp(counts, max=self.top_n)
            last = (torch.cumsum(kept, 0) - kept + self.top_n - 1)[full]
            self._thr[full] = val[last]
        self._cand = [(feat, val, seq, pos)]
        self._n_cand = int(feat.numel())

    def merge(self, other: FeatureStats) -> None:
        """Add ``other`` (same ``d_sae`` and ``top_n``) into this one, exactly."""
        if (other.d_sae, other.top_n) != (self.d_sae, self.top_n):
            raise ValueError(
                f"cannot merge stats of {other.d_sae}/{other.top_n} into {self.d_sae}/{self.top_n}"
            )
        self.n_tokens += other.n_tokens
        self.count += other.count.to(self.device)
        self.sum_fx += other.sum_fx.to(self.device)
        self.max = torch.maximum(self.max, other.max.to(self.device))
        self.hist += other.hist.to(self.device)
        f, v, s, p = other.examples()
        self._cand.append((f.to(self.device), v.to(self.device), s.to(self.device), p.to(self.device)))
        self._n_cand += int(f.numel())
        self._prune()

    # ----------------------------------------------------------------------------- read out

    def examples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(feature, value, seq, pos)`` of the top-N examples of every feature, sorted (see module)."""
        self._prune()
        if not self._cand:
            e = torch.zeros(0, dtype=torch.int64)
            return e, e.float(), e, e
        feat, val, seq, pos = self._cand[0]
        return feat, val, seq, pos

    @property
    def sum(self) -> np.ndarray:
        """The sums of the activations (float64, from the fixed-point sums)."""
        out: np.ndarray = self.sum_fx.cpu().numpy().astype(np.float64) / 2.0**SUM_BITS
        return out

    def stats_table(self, extra: dict[str, Any] | None = None) -> Any:
        """A ``pyarrow.Table``: one row per feature that fired (``feature, count, sum_fx, max, hist``)."""
        import pyarrow as pa

        active = torch.nonzero(self.count).flatten().cpu()
        hist = self.hist.view(self.d_sae, N_BINS).cpu()[active].numpy()
        cols: dict[str, Any] = {}
        for k, v in (extra or {}).items():
            cols[k] = pa.array([v] * len(active), pa.string())
        cols["feature"] = pa.array(active.numpy().astype(np.int32))
        cols["count"] = pa.array(self.count.cpu()[active].numpy())
        cols["sum_fx"] = pa.array(self.sum_fx.cpu()[active].numpy())
        cols["max"] = pa.array(self.max.cpu()[active].numpy())
        cols["hist"] = pa.FixedSizeListArray.from_arrays(pa.array(hist.reshape(-1)), N_BINS)
        return pa.table(cols)

    def examples_table(self, extra: dict[str, Any] | None = None) -> Any:
        """A ``pyarrow.Table`` of the top-N examples: ``feature, value, seq, pos``."""
        import pyarrow as pa

        f, v, s, p = (x.cpu().numpy() for x in self.examples())
        cols: dict[str, Any] = {}
        for k, x in (extra or {}).items():
            cols[k] = pa.array([x] * len(f), pa.string())
        cols.update(
            feature=pa.array(f.astype(np.int32)),
            value=pa.array(v.astype(np.float32)),
            seq=pa.array(s.astype(np.int64)),
            pos=pa.array(p.astype(np.int32)),
        )
        return pa.table(cols)

    @classmethod
    def from_tables(cls, d_sae: int, top_n: int, n_tokens: int, stats: Any, examples: Any) -> FeatureStats:
        """Rebuild from :meth:`stats_table` / :meth:`examples_table` (already filtered to one SAE)."""
        out = cls(d_sae, top_n)
        out.n_tokens = int(n_tokens)
        feat = torch.from_numpy(stats.column("feature").to_numpy().astype(np.int64))
        out.count[feat] = torch.from_numpy(np.array(stats.column("count").to_numpy(), np.int64))
        out.sum_fx[feat] = torch.from_numpy(np.array(stats.column("sum_fx").to_numpy(), np.int64))
        out.max[feat] = torch.from_numpy(np.array(stats.column("max").to_numpy(), np.float32))
        h = stats.column("hist").combine_chunks().flatten().to_numpy().reshape(-1, N_BINS)
        out.hist.view(d_sae, N_BINS)[feat] = torch.from_numpy(np.array(h, np.int64))
        cols = [examples.column(c).to_numpy() for c in ("feature", "value", "seq", "pos")]
        out._cand = [
            (
                torch.from_numpy(cols[0].astype(np.int64)),
                torch.from_numpy(cols[1].astype(np.float32)),
                torch.from_numpy(cols[2].astype(np.int64)),
                torch.from_numpy(cols[3].astype(np.int64)),
            )
        ]
        out._n_cand = len(cols[0])
        out._prune()
        return out
