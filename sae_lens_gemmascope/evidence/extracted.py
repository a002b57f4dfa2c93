"""The evidence of a ``gemmascope extract`` run, read like an official ``examples.safetensors``.

``gemmascope merge DIR`` writes one Gemma-Scope-2-format ``examples.safetensors`` per SAE of the job
(``DIR/merged/<release>/<sae_id>/``) and the tokenizer's vocabulary (``DIR/merged/vocab.json``).
:func:`open_extraction` opens one of them as an :class:`~sae_lens_gemmascope.evidence.examples.Examples`
whose tokens decode with the extraction's own tokenizer (a Gemma 2 one for Gemma Scope 1 SAEs), so
``explain`` and ``dashboard`` work on SAEs that ship no examples file.

Example:
    >>> from sae_lens_gemmascope.evidence import open_extraction
    >>> ex = open_extraction("feats", "gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")  # doctest: +SKIP
    >>> [e.marked() for e in ex.top(123, n=3)]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import GemmaScopeError
from .examples import Examples, ExamplesNotAvailableError
from .vocab import Vocab


def _job_saes(out: Path) -> list[tuple[str, str]]:
    from ..extract.spec import read_job

    try:
        job = read_job(out)
    except (OSError, ValueError) as exc:
        raise ExamplesNotAvailableError(f"{out}/job.json is unreadable ({exc}).") from exc
    if job is None:
        raise ExamplesNotAvailableError(
            f"{out} holds no extraction (no job.json). Run `gemmascope extract --sae RELEASE SAE_ID "
            f"--text FILE --out {out}`, then `gemmascope merge {out}`."
        )
    return [(str(r), str(s)) for r, s in job["identity"]["saes"]]


def _canonical(release: str, sae_id: str) -> tuple[str, str]:
    from .. import registry

    try:
        e = registry.get(release, sae_id)
    except GemmaScopeError:  # not in the registry: compare as written
        return release, sae_id
    return e.alias_of if e.alias_of is not None else (e.release, e.sae_id)


def extraction_vocab(out: str | os.PathLike[str]) -> tuple[Vocab, int]:
    """``(vocabulary, pad id)`` of the tokenizer an extraction used (``DIR/merged/vocab.json``); for a
    job merged before that file existed, the tokenizer is loaded as the extraction loaded it."""
    from ..extract.merge import vocab_path

    out = Path(out)
    path = vocab_path(out)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Vocab(data["pieces"]), int(data["pad_token_id"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExamplesNotAvailableError(
            f"{path} is unreadable ({exc}). Run `gemmascope merge {out}` again to rewrite it."
        ) from exc
    from ..extract.setup import entries_of, load_tokenizer
    from ..extract.spec import ExtractSpec, read_job

    job = read_job(out)
    assert job is not None  # checked by the caller
    spec = ExtractSpec.from_json(job["spec"])
    tok = load_tokenizer(spec, entries_of(spec))
    return Vocab.from_tokenizer(tok), int(tok.pad_token_id if tok.pad_token_id is not None else 0)


def open_extraction(
    out: str | os.PathLike[str], release: str, sae_id: str, *, tokenizer: Any = None
) -> Examples:
    """The merged evidence of ``release`` / ``sae_id`` in the extraction directory ``out``.

    ``tokenizer`` (a Hugging Face tokenizer or a :class:`Vocab`) overrides the extraction's own
    vocabulary. Raises :class:`ExamplesNotAvailableError`, naming the fix, when ``out`` is not an
    extraction, the SAE is not one of its SAEs, or the job has not been merged.

    Example:
        >>> ex = open_extraction("feats", "gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")  # doctest: +SKIP
    """
    from .. import registry
    from ..extract.merge import examples_path

    out = Path(out)
    saes = _job_saes(out)
    want = _canonical(release, sae_id)
    match = [s for s in saes if s == (release, sae_id) or _canonical(*s) == want]
    if not match:
        listed = "\n".join(f"    {r} {s}" for r, s in saes)
        raise ExamplesNotAvailableError(
            f"{release}/{sae_id} is not one of the SAEs extracted in {out}. It has:\n{listed}\n"
            f"Pick one of them, or run `gemmascope extract --sae {release} {sae_id} ... --out OTHER_DIR`."
        )
    rel, sid = match[0]
    path = examples_path(out, rel, sid)
    if not path.exists():
        raise ExamplesNotAvailableError(
            f"{out} has no merged evidence for {rel}/{sid} ({path} is missing). "
            f"Run `gemmascope merge {out}` (after every shard has finished)."
        )
    try:
        entry = registry.get(rel, sid)
    except GemmaScopeError:
        entry = None
    vocab, pad_id = extraction_vocab(out)  # the pad id the merge wrote the corpus rows with
    # the file was written from the SAE the job loaded (its width may be narrowed, --no-check-shapes):
    # no width check against the registry
    return Examples(
        path,
        entry=entry,
        tokenizer=vocab if tokenizer is None else tokenizer,
        source=f"extraction {out}",
        pad_id=pad_id,
    )
