"""Error paths: typed, teaching, and without partial state."""

from __future__ import annotations

import numpy as np
import pytest

from sae_lens_gemmascope import load, registry
from sae_lens_gemmascope.errors import (
    ArtifactNotCachedError,
    CorruptArtifactError,
    ShapeMismatchError,
    UnknownReleaseError,
    UnknownSaeIdError,
)
from sae_lens_gemmascope.offline.synthetic import (
    jumprelu_params,
    npz_bytes,
    put_file,
    safetensors_bytes,
    write_entry,
)

GS1 = ("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
GS2 = ("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_medium")


def test_unknown_release_and_id(no_network):
    with pytest.raises(UnknownReleaseError, match="gemma-scope-2b-pt-res"):
        load("gemma-scope-2b-pt-rse", "x")
    with pytest.raises(UnknownReleaseError, match="gemma-scope-2b-pt-res-canonical"):
        load("google/gemma-scope-2b-pt-res", "x")
    with pytest.raises(UnknownSaeIdError, match="average_l0_71"):
        load(GS1[0], "layer_20/width_16k/average_l0_70")


@pytest.mark.parametrize("rel_id", [GS1, GS2])
def test_missing_file_offline_names_the_download_command(rel_id, hf_cache, no_network):
    with pytest.raises(ArtifactNotCachedError, match=f"gemmascope download {rel_id[0]} {rel_id[1]}"):
        load(*rel_id)


def test_local_files_only(hf_cache, no_network, monkeypatch):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ArtifactNotCachedError, match="local_files_only=True"):
        load(*GS1, local_files_only=True)


def test_truncated_npz(hf_cache, no_network):
    e = registry.get(*GS1)
    data = npz_bytes(jumprelu_params(e.d_in, 8))
    put_file(hf_cache, e.repo_id, f"{e.path}/params.npz", data[: len(data) // 2])
    with pytest.raises(CorruptArtifactError, match=r"params\.npz.*force_download=True"):
        load(*GS1, check_shapes=False)


def test_truncated_safetensors(hf_cache, no_network):
    e = registry.get(*GS2)
    data = safetensors_bytes(jumprelu_params(e.d_in, 8))
    put_file(hf_cache, e.repo_id, f"{e.path}/params.safetensors", data[:-100])
    with pytest.raises(CorruptArtifactError, match=r"params\.safetensors.*force_download=True"):
        load(*GS2, check_shapes=False)


def test_shape_mismatch_names_both(hf_cache, no_network):
    e = registry.get(*GS2)
    write_entry(e, hf_cache, d_sae=8)
    with pytest.raises(ShapeMismatchError, match=r"registry says \(1152, 16384\).*holds \(1152, 8\)"):
        load(*GS2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_refused(hf_cache, no_network, bad):
    """One non-finite value in a GS1 decoder or a GS2 threshold is refused; the same file without it loads."""
    e = registry.get(*GS1)
    p = jumprelu_params(e.d_in, 8)
    put_file(hf_cache, e.repo_id, f"{e.path}/params.npz", npz_bytes(p))
    load(*GS1, check_shapes=False)  # control: the clean file loads
    p["w_dec"][3, 5] = bad
    put_file(hf_cache, e.repo_id, f"{e.path}/params.npz", npz_bytes(p))
    with pytest.raises(CorruptArtifactError, match="NaN or inf"):
        load(*GS1, check_shapes=False, verify="full")
    e2 = registry.get(*GS2)
    p2 = jumprelu_params(e2.d_in, 8)
    put_file(hf_cache, e2.repo_id, f"{e2.path}/params.safetensors", safetensors_bytes(p2))
    load(*GS2, check_shapes=False)
    p2["threshold"][0] = bad
    put_file(hf_cache, e2.repo_id, f"{e2.path}/params.safetensors", safetensors_bytes(p2))
    with pytest.raises(CorruptArtifactError, match="threshold"):
        load(*GS2, check_shapes=False)


def test_config_json_cross_check(hf_cache, no_network):
    import json

    e = registry.get("gemma-scope-2-270m-pt-transcoders", "transcoder/layer_9_width_16k_l0_small_affine")
    write_entry(e, hf_cache, d_sae=8)
    cfg = {"width": 8, "affine_connection": False, "type": "transcoder"}
    put_file(hf_cache, e.repo_id, f"{e.path}/config.json", json.dumps(cfg).encode())
    with pytest.raises(ShapeMismatchError, match="affine_connection"):
        load(e.release, e.sae_id, check_shapes=False)


def test_download_cli_refuses_big_without_tty(capsys, monkeypatch):
    from argparse import Namespace

    from sae_lens_gemmascope.download import cli_download

    monkeypatch.setattr("sys.stdin", None)
    args = Namespace(
        release="gemma-scope-2b-pt-res",
        sae_ids=[],
        release_all=True,
        yes=False,
        revision=None,
        force_download=False,
        cache_dir=None,
        dry_run=False,
    )
    assert cli_download(args) == 1
    assert "--yes" in capsys.readouterr().err
