"""SAELens keeps its behaviour with the plugin installed.

The source distribution of sae-lens 6.54.12 ships no tests, so ``SAELENS_CHECKS`` below are our own
copies of the assertions of SAELens's config and directory tests (``tests/loading/
test_pretrained_sae_loaders.py`` and ``test_pretrained_saes_directory.py``: the expected values are
theirs, the code is ours). Each check runs twice, in fresh interpreters with ``HF_HUB_OFFLINE=1``:
with plain SAELens and with ``import sae_lens_gemmascope``. An outcome may differ only where every
differing config field is listed in ``docs/saelens_differences.md``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "saelens_differences.md"

# Expected values copied from SAELens's own tests for 6.54.12.
GS1_COMMON_METADATA = {
    "model_name": "gemma-2-2b",
    "hook_head_index": None,
    "prepend_bos": True,
    "dataset_path": "monology/pile-uncopyrighted",
    "context_size": 1024,
    "sae_lens_training_version": None,
}
SAELENS_CHECKS: dict[str, Any] = {
    "test_load_sae_config_from_huggingface_gemma_2": {
        "call": [
            "load_sae_config_from_huggingface",
            "gemma-scope-2b-pt-res",
            "embedding/width_4k/average_l0_6",
        ],
        "expected": {
            "d_in": 2304,
            "d_sae": 4096,
            "dtype": "float32",
            "apply_b_dec_to_input": False,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "device": "cpu",
            "metadata": {**GS1_COMMON_METADATA, "hook_name": "hook_embed", "neuronpedia_id": None},
            "architecture": "jumprelu",
        },
    },
    "test_load_sae_config_from_huggingface_gemma_2_hook_z_saes": {
        "call": [
            "load_sae_config_from_huggingface",
            "gemma-scope-2b-pt-att",
            "layer_0/width_16k/average_l0_104",
        ],
        "expected": {
            "d_in": 2048,
            "d_sae": 16384,
            "dtype": "float32",
            "apply_b_dec_to_input": False,
            "normalize_activations": "none",
            "reshape_activations": "hook_z",
            "device": "cpu",
            "metadata": {**GS1_COMMON_METADATA, "hook_name": "blocks.0.attn.hook_z", "neuronpedia_id": None},
            "architecture": "jumprelu",
        },
    },
    "test_load_sae_config_from_huggingface_gemma_2_transcoder": {
        "call": [
            "load_sae_config_from_huggingface",
            "gemma-scope-2b-pt-transcoders",
            "layer_3/width_16k/average_l0_54",
        ],
        "expected": {
            "d_in": 2304,
            "d_out": 2304,
            "d_sae": 16384,
            "dtype": "float32",
            "device": "cpu",
            "normalize_activations": "none",
            "apply_b_dec_to_input": False,
            "reshape_activations": "none",
            "metadata": {
                **GS1_COMMON_METADATA,
                "hook_name": "blocks.3.ln2.hook_normalized",
                "hook_name_out": "blocks.3.hook_mlp_out",
                "hook_head_index_out": None,
                "neuronpedia_id": "gemma-2-2b/3-gemmascope-transcoder-16k",
            },
            "architecture": "jumprelu_transcoder",
        },
    },
    "test_get_gemma_2_transcoder_config_from_hf": {
        "call": [
            "get_gemma_2_transcoder_config_from_hf",
            "google/gemma-scope-2b-pt-transcoders",
            "layer_3/width_16k/average_l0_54",
        ],
        "expected": {
            "architecture": "jumprelu_transcoder",
            "d_in": 2304,
            "d_out": 2304,
            "d_sae": 16384,
            "dtype": "float32",
            "device": "cpu",
            "activation_fn": "relu",
            "normalize_activations": "none",
            "model_name": "gemma-2-2b",
            "hook_name": "blocks.3.ln2.hook_normalized",
            "hook_name_out": "blocks.3.hook_mlp_out",
            "hook_head_index": None,
            "hook_head_index_out": None,
            "prepend_bos": True,
            "dataset_path": "monology/pile-uncopyrighted",
            "context_size": 1024,
            "apply_b_dec_to_input": False,
        },
    },
    "test_infer_gemma_3_raw_cfg_dict[transcoder]": {
        "call": [
            "_infer_gemma_3_raw_cfg_dict",
            "google/gemma-scope-2-4b-it",
            "transcoder_all/layer_5_width_16k_l0_big_affine",
        ],
        "expected": {
            "architecture": "jump_relu",
            "model_name": "google/gemma-3-4b-it",
            "hf_hook_point_in": "model.layers.5.pre_feedforward_layernorm.output",
            "hf_hook_point_out": "model.layers.5.post_feedforward_layernorm.output",
            "affine_connection": True,
        },
    },
    "test_get_pretrained_saes_directory_unique_np_ids": {"call": ["unique_np_ids"], "expected": 1},
    "test_get_repo_id_and_folder_name_release_found": {
        "call": ["get_repo_id_and_folder_name", "gpt2-small-res-jb", "blocks.0.hook_resid_pre"],
        "expected": ["jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre"],
    },
    "test_get_repo_id_and_folder_name_release_not_found": {
        "call": ["get_repo_id_and_folder_name", "release1", "sae1"],
        "expected": ["release1", "sae1"],
    },
    "test_get_repo_id_and_folder_name_raises_error_if_sae_id_not_found": {
        "call": ["raises_value_error", "gpt2-small-res-jb", "sae1"],
        "expected": True,
    },
    "test_get_releases_for_repo_id_not_found": {
        "call": ["get_releases_for_repo_id", "nonexistent/repo"],
        "expected": [],
    },
    "test_get_config_overrides_with_unknown_release": {
        "call": ["get_config_overrides", "nonexistent-release", "sae1"],
        "expected": {},
    },
    "test_get_config_overrides_with_known_release": {
        "call": ["get_config_overrides", "gpt2-small-res-jb", "blocks.0.hook_resid_pre"],
        "expected": {
            "model_from_pretrained_kwargs": {"center_writing_weights": True},
            "neuronpedia_id": "gpt2-small/0-res-jb",
        },
    },
}

RUNNER = r"""
import json, sys
checks = json.loads(sys.argv[1])
if sys.argv[2] == "plugin":
    import sae_lens_gemmascope  # noqa: F401
import sae_lens.loading.pretrained_sae_loaders as L
import sae_lens.loading.pretrained_saes_directory as D

def unique_np_ids():
    seen = {}
    for release, lookup in D.get_pretrained_saes_directory().items():
        for sae_id, np_id in (lookup.neuronpedia_id or {}).items():
            if np_id is not None:
                seen[np_id] = seen.get(np_id, 0) + 1
    return max(seen.values())

def raises_value_error(release, sae_id):
    try:
        D.get_repo_id_and_folder_name(release, sae_id=sae_id)
    except ValueError:
        return True
    return False

def call(name, *args):
    if name in ("unique_np_ids", "raises_value_error"):
        return globals()[name](*args)
    if name == "load_sae_config_from_huggingface":
        return L.load_sae_config_from_huggingface(args[0], sae_id=args[1])
    if name == "get_gemma_2_transcoder_config_from_hf":
        return L.get_gemma_2_transcoder_config_from_hf(repo_id=args[0], folder_name=args[1], device="cpu")
    if name == "_infer_gemma_3_raw_cfg_dict":
        return L._infer_gemma_3_raw_cfg_dict(*args)
    if name == "get_repo_id_and_folder_name":
        return list(D.get_repo_id_and_folder_name(args[0], sae_id=args[1]))
    return getattr(D, name)(*args)

def diff(want, got, prefix=""):
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(want) | set(got)):
            out += diff(want.get(k, "<unset>"), got.get(k, "<unset>"), f"{prefix}{k}.")
        return out
    return [] if want == got else [prefix.rstrip(".")]

result = {}
for name, check in checks.items():
    try:
        got = call(*check["call"])
    except Exception as exc:
        result[name] = {"outcome": "error " + type(exc).__name__, "diff": []}
        continue
    d = diff(check["expected"], got)
    result[name] = {"outcome": "pass" if not d else "fail", "diff": d}
print("RESULT" + json.dumps(result))
"""


def _run(mode: str, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(SAELENS_CHECKS), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[-1][len("RESULT") :])


def documented_fields() -> set[str]:
    """Config fields listed in the first column of the tables in docs/saelens_differences.md."""
    fields = set()
    for row in DOCS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([\w.]+)`", row)
        if m:
            fields.add(m.group(1))
    return fields


def test_saelens_checks_same_outcome_with_and_without_plugin(tmp_path: Path) -> None:
    plain = _run("plain", tmp_path)
    plugged = _run("plugin", tmp_path)
    documented = documented_fields()
    undocumented = {}
    for name in SAELENS_CHECKS:
        if plain[name]["outcome"] == plugged[name]["outcome"]:
            continue
        extra = [f for f in plugged[name]["diff"] if f not in documented]
        if extra or not plugged[name]["diff"]:
            undocumented[name] = (plain[name], plugged[name])
    assert not undocumented, undocumented
    # the checks the issue named: context_size kept, directory ids unique
    assert "metadata.context_size" not in plugged["test_load_sae_config_from_huggingface_gemma_2"]["diff"]
    assert plugged["test_get_pretrained_saes_directory_unique_np_ids"]["outcome"] == "pass"
    # checks that do not touch Gemma Scope give exactly SAELens's outcome
    for name in (
        "test_get_gemma_2_transcoder_config_from_hf",
        "test_get_config_overrides_with_known_release",
    ):
        assert plugged[name] == plain[name]
    summary = {n: (plain[n]["outcome"], plugged[n]["outcome"], plugged[n]["diff"]) for n in SAELENS_CHECKS}
    print(json.dumps(summary, indent=1))


def test_documented_differences_are_pinned() -> None:
    """Each documented fix is a fact the code keeps (here from registry facts, no file read)."""
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    import sae_lens_gemmascope  # noqa: F401

    gs1 = load_sae_config_from_huggingface("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    assert gs1["metadata"]["context_size"] == 1024 and gs1["metadata"]["model_name"] == "gemma-2-2b"
    assert gs1["metadata"].get("dataset_path") is None  # not the Pile: gemma-scope-1.md section 3
    gs2 = load_sae_config_from_huggingface("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    assert gs2["metadata"].get("context_size") is None and gs2["metadata"].get("dataset_path") is None
    assert gs2["metadata"]["model_name"] == "google/gemma-3-270m"
    assert {"metadata.dataset_path", "metadata.context_size", "metadata.hf_hook_name"} <= documented_fields()


def test_neuronpedia_ids_unique_and_links_kept() -> None:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from sae_lens_gemmascope import registry

    count: dict[str, list[tuple[str, str]]] = {}
    for release, lookup in get_pretrained_saes_directory().items():
        for sae_id, np_id in (lookup.neuronpedia_id or {}).items():
            if np_id is not None:
                count.setdefault(np_id, []).append((release, sae_id))
    dups = {k: v for k, v in count.items() if len(v) > 1}
    assert not dups, list(dups.items())[:3]
    e = registry.get("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    assert e.neuronpedia_url == "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-16k"
    lookup = get_pretrained_saes_directory()["gemma-scope-2b-pt-res-canonical"]
    assert lookup.neuronpedia_id["layer_20/width_16k/canonical"] == "gemma-2-2b/20-gemmascope-res-16k"


def test_activations_store_from_sae_on_gs1(hf_cache: Path, no_network: None) -> None:
    import torch
    from datasets import Dataset
    from sae_lens import SAE
    from sae_lens.training.activations_store import ActivationsStore

    import sae_lens_gemmascope  # noqa: F401
    from sae_lens_gemmascope import registry
    from sae_lens_gemmascope.offline.synthetic import write_entry
    from sae_lens_gemmascope.offline.tiny import tiny_gemma, to_hooked

    entry = registry.get("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6")  # the smallest GS1 file
    write_entry(entry, hf_cache)
    sae = SAE.from_pretrained(entry.release, entry.sae_id)
    assert sae.cfg.metadata.context_size == 1024
    hf_model, _ = tiny_gemma("gemma2")
    model = to_hooked(hf_model, "gemma2")
    vocab = int(model.cfg.d_vocab)
    tokens = torch.randint(3, vocab, (4, 1024), generator=torch.Generator().manual_seed(0))
    dataset = Dataset.from_dict({"input_ids": tokens.tolist()})
    store = ActivationsStore.from_sae(model, sae, dataset)
    assert store.context_size == 1024 and store.hook_name == "hook_embed"
    assert store.prepend_bos is True
