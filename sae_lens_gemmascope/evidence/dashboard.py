"""``gemmascope dashboard RELEASE SAE_ID --out DIR [--features LIST]``: a static, offline feature site.

The site is plain files, built from the official ``examples.safetensors`` by streaming over blocks of
features (memory stays flat whatever the width):

.. code-block:: text

    DIR/index.html             search by feature id or token text; DIR/index.html#<feature> opens one
    DIR/assets/                app.js, style.css and the vendored uPlot (MIT, licence file included)
    DIR/data/meta.js           release, sae_id, widths, Neuronpedia page pattern, shard sizes
    DIR/data/search/<k>.js     search index: id, frequency, max activation, its tokens (4096 per file)
    DIR/data/f/<k>.js          feature records, 64 per file (a feature page loads one such file)

**Why .js shards and not .json.** Each data file is a small script that calls ``GS.put(...)`` with its
records; the page loads it by adding a ``<script>`` tag. Browsers run local scripts from ``file://``
but block ``fetch()`` there, so the very same files work from any static HTTP server
(``python -m http.server``) *and* when ``index.html`` is opened straight from disk. Nothing is
requested from anywhere else: no CDN, no fonts, no analytics; the Neuronpedia link is a plain link.

A feature record holds its frequency, top/bottom logit tokens, a histogram and quantiles of its
stored activations (the top ``K`` = 1000 of the official files, not every token), and its ``top``
strongest examples as token windows. Every token of a window whose activation the file records
(another stored example of the same feature) is highlighted in proportion to it; the active token is
outlined. The page is rendered with a Jinja2 template; the chart is uPlot (vendored from npm).

Example:
    >>> parse_features("0-3,10", 16)
    [0, 1, 2, 3, 10]
    >>> build_dashboard("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_medium", "site")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GemmaScopeError
from .examples import Examples, order_slots, valid_slots

#: features per record shard (a feature page loads exactly one shard)
SHARD = 64
#: features per search-index file
SEARCH_SHARD = 4096
#: features read from the examples file at a time (peak memory ~ BLOCK x K x 20 bytes)
BLOCK = 256
#: histogram bins of a feature's stored activations
BINS = 24
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
#: distinct tokens per feature kept for search (strongest examples' active tokens + top logit tokens)
SEARCH_TOKENS = 8
ASSETS = ("app.js", "style.css")
VENDOR = ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE", "README.md")


@dataclass(frozen=True)
class DashboardStats:
    """What a build wrote."""

    out: Path
    features: int
    shards: int
    data_bytes: int

    @property
    def bytes_per_feature(self) -> float:
        return self.data_bytes / max(1, self.features)


def parse_features(spec: str | None, d_sae: int) -> list[int]:
    """``"0-99,123"`` -> sorted unique indices (None = all). Raises on an index outside ``0..d_sae-1``."""
    if not spec:
        return list(range(d_sae))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError as exc:
            raise GemmaScopeError(f"--features: cannot read {part!r}; use e.g. 0-99,123") from exc
    bad = sorted(i for i in out if not 0 <= i < d_sae)
    if bad:
        raise GemmaScopeError(f"--features: {bad[:5]} outside 0..{d_sae - 1}")
    return sorted(out)


def _blocks(features: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive features in runs of at most ``size`` sharing one contiguous read."""
    run: list[int] = []
    for f in features:
        if run and (f - run[0] >= size):
            yield run
            run = []
        run.append(f)
    if run:
        yield run


def _write(path: Path, text: str) -> int:
    """Write ``text`` atomically (temp file in the same directory, then ``os.replace``); return bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def _js(kind: str, key: object, payload: object) -> str:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"GS.put({json.dumps(kind)},{json.dumps(key)},{body});\n"


def _r(x: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits (smaller shards; the page shows 4)."""
    if x == 0 or not math.isfinite(x):
        return 0.0
    return float(f"{x:.{digits}g}")


def feature_record(
    f: int,
    acts: np.ndarray,
    seq: np.ndarray,
    pos: np.ndarray,
    freq: float,
    logits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rows: dict[int, np.ndarray],
    corpus_shape: tuple[int, int],
    top: int,
    window: tuple[int, int],
) -> tuple[dict[str, Any], set[int]]:
    """One feature's record (see the module docstring) and the token ids it references."""
    ok = np.flatnonzero(valid_slots(acts, seq, pos, corpus_shape))
    ok = ok[order_slots(acts[ok], seq[ok], pos[ok])]
    a_ok = acts[ok].astype(np.float64)
    tt, tv, bt, bv = logits
    used: set[int] = set()

    def side(ids: np.ndarray, vals: np.ndarray, desc: bool) -> list[list[float]]:
        keep = [k for k in range(len(ids)) if ids[k] >= 0 and math.isfinite(float(vals[k]))]
        keep.sort(key=lambda k: (-float(vals[k]) if desc else float(vals[k]), int(ids[k])))
        used.update(int(ids[k]) for k in keep)
        return [[int(ids[k]), _r(float(vals[k]))] for k in keep]

    rec: dict[str, Any] = {
        "f": int(f),
        "freq": _r(float(freq), 6) if math.isfinite(float(freq)) else None,
        "n": int(ok.size),
        "top": side(tt, tv, True),
        "bot": side(bt, bv, False),
    }
    if ok.size:
        lo, hi = float(a_ok.min()), float(a_ok.max())
        counts, edges = np.histogram(a_ok, bins=BINS, range=(0.0, hi if hi > 0 else 1.0))
        rec["max"] = _r(hi)
        rec["min"] = _r(lo)
        rec["hist"] = {"hi": _r(float(edges[-1])), "c": [int(c) for c in counts]}
        rec["q"] = [[q, _r(float(np.quantile(a_ok, q)))] for q in QUANTILES]
    shown = ok[: max(0, top)]
    known: dict[tuple[int, int], float] = {}
    if shown.size:  # activations the file records inside the shown windows (other examples)
        near = ok[np.isin(seq[ok], np.unique(seq[shown]))]
        known = {(int(seq[k]), int(pos[k])): float(acts[k]) for k in near[::-1]}  # the largest wins
    before, after = window
    exs = []
    for k in shown:
        s, p = int(seq[k]), int(pos[k])
        a = max(0, p - before)
        ids = [int(t) for t in rows[s][a : p + after + 1]]
        used.update(ids)
        lit = [[i, _r(known[(s, a + i)], 3)] for i in range(len(ids)) if (s, a + i) in known]
        exs.append([_r(float(acts[k])), s, p, p - a, ids, lit])
    rec["ex"] = exs
    return rec, used


def _search_tokens(rec: dict[str, Any], vocab: Any) -> str:
    """The tokens a feature is found by: its most frequent active tokens, then its top logit tokens."""
    from collections import Counter

    active = Counter(vocab.piece(ex[4][ex[3]]).strip() for ex in rec["ex"])
    seen = [t for t, _ in active.most_common()] + [vocab.piece(t).strip() for t, _ in rec["top"][:3]]
    out: list[str] = []
    for t in seen:
        if t and t not in out:
            out.append(t)
        if len(out) >= SEARCH_TOKENS:
            break
    return "\u241f".join(out)  # a separator no token contains


def _copy_assets(out: Path) -> None:
    pkg = resources.files("sae_lens_gemmascope.evidence")
    dst = out / "assets"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        _write(dst / name, pkg.joinpath("static").joinpath(name).read_text(encoding="utf-8"))
    for name in VENDOR:
        _write(
            dst / name, pkg.joinpath("static").joinpath("vendor").joinpath(name).read_text(encoding="utf-8")
        )


def _render_index(meta: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sae_lens_gemmascope.evidence", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        keep_trailing_newline=True,
    )
    return env.get_template("index.html.j2").render(meta=meta)


def write_dashboard(
    examples: Examples,
    out: str | os.PathLike[str],
    *,
    features: Sequence[int] | None = None,
    top: int = 20,
    window: tuple[int, int] = (16, 4),
    progress: bool = True,
    synthetic_note: str | None = None,
) -> DashboardStats:
    """Write the site for ``examples`` into ``out`` (see the module docstring); return what was written.

    Streams over blocks of :data:`BLOCK` features; every file is written atomically, ``index.html``
    last, so an interrupted build leaves no page that points at missing data.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    feats = list(range(examples.d_sae)) if features is None else sorted({int(f) for f in features})
    for f in feats:
        examples._feature(f)  # typed error for an index outside the SAE
    vocab = examples.vocab
    corpus = (examples.n_sequences, examples.context)
    entry = examples.entry
    data = out / "data"
    if (data / "f").exists():  # records of an earlier build of another selection
        shutil.rmtree(data / "f")
    if (data / "search").exists():
        shutil.rmtree(data / "search")
    shard_recs: dict[int, dict[str, Any]] = {}
    shard_toks: dict[int, set[int]] = {}
    search: dict[int, list[list[Any]]] = {}
    nbytes = 0
    shards_written = 0

    def flush(shard: int) -> None:
        nonlocal nbytes, shards_written
        recs = shard_recs.pop(shard)
        toks = sorted(shard_toks.pop(shard))
        payload = {"tok": {str(t): vocab.piece(t) for t in toks}, "features": recs}
        nbytes += _write(data / "f" / f"{shard}.js", _js("shard", shard, payload))
        shards_written += 1

    bar = tqdm(total=len(feats), desc="dashboard", unit="feature", disable=not progress)
    for run in _blocks(feats, BLOCK):
        a, b = run[0], run[-1] + 1
        acts = examples.rows("activations", a, b)
        seq = examples.rows("seq_ids", a, b)
        pos = examples.rows("positions", a, b)
        freq = examples.rows("feature_frequencies", a, b)
        lg = [examples.rows(k, a, b) for k in ("top_tokens", "top_logits", "bottom_tokens", "bottom_logits")]
        need: list[np.ndarray] = []
        for f in run:  # corpus rows of the strongest examples of this block
            i = f - a
            ok = np.flatnonzero(valid_slots(acts[i], seq[i], pos[i], corpus))
            ok = ok[order_slots(acts[i][ok], seq[i][ok], pos[i][ok])][:top]
            need.append(seq[i][ok])
        rows = examples.token_rows(np.concatenate(need) if need else np.zeros(0, np.int64))
        for f in run:
            i = f - a
            rec, used = feature_record(
                f,
                acts[i],
                seq[i],
                pos[i],
                float(freq[i]),
                (lg[0][i], lg[1][i], lg[2][i], lg[3][i]),
                rows,
                corpus,
                top,
                window,
            )
            sh = f // SHARD
            if sh not in shard_recs:
                for old in [k for k in shard_recs if k < sh]:
                    flush(old)
                shard_recs[sh] = {}
                shard_toks[sh] = set()
            shard_recs[sh][str(f)] = rec
            shard_toks[sh] |= used
            search.setdefault(f // SEARCH_SHARD, []).append(
                [f, rec["freq"], rec.get("max", 0.0), _search_tokens(rec, vocab)]
            )
        bar.update(len(run))
        del acts, seq, pos, lg, rows
    bar.close()
    for sh in sorted(shard_recs):
        flush(sh)
    for k, items in sorted(search.items()):
        nbytes += _write(data / "search" / f"{k}.js", _js("search", k, items))
    meta = {
        "release": entry.release if entry is not None else None,
        "sae_id": entry.sae_id if entry is not None else None,
        "title": f"{entry.release} / {entry.sae_id}" if entry is not None else examples.path.name,
        "d_sae": examples.d_sae,
        "n_features": len(feats),
        "examples_per_feature": examples.n_examples,
        "corpus": list(corpus),
        "shard": SHARD,
        "search_shard": SEARCH_SHARD,
        "search_files": sorted(search),
        "neuronpedia": (entry.feature_url(0) or "")[:-1] + "{f}" if entry and entry.feature_url(0) else None,
        "hub": entry.hub_url if entry is not None else None,
        "note": synthetic_note,
    }
    nbytes += _write(data / "meta.js", _js("meta", 0, meta))
    _copy_assets(out)
    _write(out / "index.html", _render_index(meta))
    return DashboardStats(out=out, features=len(feats), shards=shards_written, data_bytes=nbytes)


def build_dashboard(
    release: str,
    sae_id: str,
    out: str | os.PathLike[str],
    *,
    features: str | Sequence[int] | None = None,
    top: int = 20,
    progress: bool = True,
    extraction: str | os.PathLike[str] | None = None,
    **load_kwargs: Any,
) -> DashboardStats:
    """Load the examples of ``release`` / ``sae_id`` and write the site.

    The evidence is the official examples file (``load_kwargs`` go to ``load_examples``), or with
    ``extraction=DIR`` the merged output of ``gemmascope extract`` in ``DIR`` (any SAE, Gemma Scope 1
    included)."""
    from .explain import open_evidence

    with open_evidence(release, sae_id, extraction, **load_kwargs) as ex:
        feats = (
            parse_features(features, ex.d_sae) if isinstance(features, str) or features is None else features
        )
        return write_dashboard(ex, out, features=feats, top=top, progress=progress)


def cli_dashboard(args: Any) -> int:
    """``gemmascope dashboard``: build, then say where the site is and how to open it."""
    from .explain import evidence_kwargs

    st = build_dashboard(
        args.release,
        args.sae_id,
        args.out,
        features=args.features,
        top=args.top,
        extraction=args.extraction,
        **evidence_kwargs(args),
    )
    index = (st.out / "index.html").resolve()
    print(
        f"wrote {st.features} features in {st.shards} shards ({st.data_bytes / 1e6:.1f} MB of data, "
        f"{st.bytes_per_feature / 1e3:.1f} KB per feature) to {st.out}\n"
        f"open {index.as_uri()}  (or: python -m http.server -d {st.out}  then http://127.0.0.1:8000/)\n"
        f"one feature: index.html#<feature>"
    )
    return 0
