"""SAE.from_pretrained goes through our converters for every registry release, offline."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import sae_lens_gemmascope
from sae_lens_gemmascope import registry
from sae_lens_gemmascope.loading import MultiLayerReleaseError
from sae_lens_gemmascope.offline.synthetic import write_entry


def test_import_is_cheap_and_registers_after_sae_lens():
    code = (
        "import sys, sae_lens_gemmascope\n"
        "assert 'sae_lens' not in sys.modules and 'torch' not in sys.modules and 'yaml' not in sys.modules\n"
        "from sae_lens.loading import pretrained_sae_loaders as L\n"
        "assert 'gemmascope_gs1_npz' in L.NAMED_PRETRAINED_SAE_LOADERS\n"
        "from sae_lens.saes import sae as S\n"
        "assert getattr(S.get_pretrained_saes_directory, '_gemmascope', False)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_is_idempotent_and_replaces_saelens_entries():
    from sae_lens.loading import pretrained_sae_loaders as L
    from sae_lens.saes import sae as S

    sae_lens_gemmascope.register()
    sae_lens_gemmascope.register()
    d = S.get_pretrained_saes_directory()
    assert d is S.get_pretrained_saes_directory()
    for rel in ("gemma-scope-2b-pt-res", "gemma-scope-2-1b-pt-transcoders", "gemma-scope-2-1b-pt-clt"):
        assert d[rel].conversion_func.startswith("gemmascope_")
    assert L.get_conversion_loader_name("gemma-scope-2b-pt-res") == "gemmascope_gs1_npz"
    assert d["gemma-scope-2b-pt-res-canonical"].saes_map["layer_20/width_16k/canonical"] == (
        "layer_20/width_16k/average_l0_71"
    )
    # releases SAELens lacks are there too (27b-pt transcoders)
    assert "gemma-scope-2-27b-pt-transcoders" in d


def test_sae_from_pretrained_uses_our_converter(hf_cache, no_network):
    from sae_lens import SAE

    entry = registry.get("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6")
    path = write_entry(entry, hf_cache)[0]  # real shapes: the registry check is on
    sae, cfg, sparsity = SAE.from_pretrained_with_cfg_and_sparsity(
        entry.release, entry.sae_id, dtype="bfloat16"
    )
    assert cfg["metadata"]["gemmascope_release"] == "gemma-scope-2b-pt-res"
    assert (
        sae.cfg.metadata.hook_name == "hook_embed" and sae.cfg.metadata.model_name == "gemma-2-2b"
    )  # SAELens 6.54.12 value
    assert sae.W_enc.dtype == torch.bfloat16 and sae.threshold.dtype == torch.float32
    with np.load(path) as z:
        np.testing.assert_allclose(sae.b_dec.detach().float().numpy(), z["b_dec"] * np.sqrt(2304), rtol=1e-2)
    assert sparsity is None


def test_gs2_from_pretrained_transcoder_hooks(hf_cache, no_network):
    from sae_lens import SAE

    entry = registry.get("gemma-scope-2-270m-pt-transcoders", "transcoder/layer_9_width_16k_l0_small_affine")
    write_entry(entry, hf_cache)
    with pytest.warns(UserWarning, match="from_pretrained_no_processing"):
        tc = SAE.from_pretrained(entry.release, entry.sae_id)
    md = tc.cfg.metadata
    assert type(tc).__name__ == "JumpReLUSkipTranscoder"
    assert (md.hook_name, md.hook_name_out) == ("blocks.9.mlp.hook_in", "blocks.9.hook_mlp_out")
    assert md.hf_hook_name == "model.layers.9.pre_feedforward_layernorm.output"
    assert md.model_name == "google/gemma-3-270m" and md.model_from_pretrained_kwargs == {"fold_ln": False}
    assert md.dataset_path is None and md.context_size is None


def test_converter_argument_with_raw_repo_id(hf_cache, no_network):
    from sae_lens import SAE

    from sae_lens_gemmascope.plugin import saelens_loader

    entry = registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    write_entry(entry, hf_cache)
    # the raw repo id is mapped to its release (so SAELens has no reason to warn about it)
    sae = SAE.from_pretrained(entry.repo_id, entry.path, converter=saelens_loader)
    assert sae.cfg.metadata.hook_name == "blocks.9.hook_resid_post"


def test_config_only_path():
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    cfg = load_sae_config_from_huggingface("gemma-scope-2-1b-pt-att", "layer_7_width_16k_l0_small")
    assert cfg["d_in"] == 1024 and cfg["reshape_activations"] == "hook_z"
    assert cfg["metadata"]["hook_name"] == "blocks.7.attn.hook_z"


def test_multilayer_release_points_to_multilayer_api(no_network):
    from sae_lens import SAE

    rel = "gemma-scope-2-1b-pt-clt"
    sid = registry.sae_ids(rel)[0]
    with pytest.raises(MultiLayerReleaseError, match=r"CrossLayerTranscoder\.from_pretrained"):
        SAE.from_pretrained(rel, sid)
    with pytest.raises(MultiLayerReleaseError, match=r"CrossLayerTranscoder\.from_pretrained"):
        sae_lens_gemmascope.load(rel, sid)
    rel = "gemma-scope-2-1b-pt-crosscoder"
    with pytest.raises(MultiLayerReleaseError, match=r"Crosscoder\.from_pretrained"):
        sae_lens_gemmascope.load(rel, registry.sae_ids(rel)[0])


@pytest.mark.parametrize(
    "release,sae_id,exc,says",
    [
        (
            "gemma-scope-2b-pt-rez",
            "layer_20/width_16k/average_l0_71",
            "UnknownReleaseError",
            "gemma-scope-2b-pt-res",
        ),
        ("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_70", "UnknownSaeIdError", "average_l0_71"),
        (
            "google/gemma-scope-2b-pt-res",
            "layer_20/width_16k/average_l0_7",
            "UnknownSaeIdError",
            "its releases are",
        ),
        (
            "google/gemma-scope-2b-pt-rs",
            "layer_20/width_16k/average_l0_71",
            "UnknownReleaseError",
            "Did you mean",
        ),
    ],
)
def test_sae_from_pretrained_errors_teach(release, sae_id, exc, says, hf_cache, no_network):
    from sae_lens import SAE

    with pytest.raises(ValueError) as info:  # SAELens' own errors are ValueErrors: still catchable as such
        SAE.from_pretrained(release, sae_id)
    assert type(info.value).__name__ == exc and says in str(info.value), str(info.value)


def test_sae_from_pretrained_accepts_a_raw_repo_id_and_folder(hf_cache, no_network):
    from sae_lens import SAE

    entry = registry.get("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
    write_entry(entry, hf_cache)  # real shapes: SAE.from_pretrained checks them against the registry
    sae = SAE.from_pretrained(entry.repo_id, entry.path)  # "google/gemma-scope-2-270m-pt", "resid_post/..."
    assert sae.cfg.metadata.gemmascope_release == entry.release  # loaded through its release
    assert sae.cfg.metadata.hook_name == "blocks.9.hook_resid_post" and sae.cfg.d_sae == 16384
