"""The network rows of issue #14: servers on 127.0.0.1 that the tests start stand in for the hub.

* an endpoint that accepts connections and never answers (a black hole), and a closed port: a load
  of a missing file fails in seconds with what to do (``HF_HUB_OFFLINE=1`` or ``gemmascope download``);
* a fully cached artifact with ``HF_HUB_OFFLINE`` unset: no connection is even attempted;
* ``gemmascope download`` against a small fake hub: a 503 on ``config.json`` (on HEAD or on GET)
  exits non-zero naming the file, a complete download exits 0, an optional 404 is fine.

No connection leaves 127.0.0.1 (``loopback_only``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_hardening import D_SAE, GS2, _files, _run_with_guard, clt_entry, load_gs2

from sae_lens_gemmascope import errors, registry
from sae_lens_gemmascope.offline.synthetic import DEFAULT_COMMIT, repo_cache_dir, write_entry

# ---- network helpers (servers on 127.0.0.1 only)


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect = socket.socket.connect
    real_cc = socket.create_connection

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise RuntimeError(f"non-loopback connection to {address!r}")
        return real_connect(self, address)

    def guarded_cc(address: Any, *a: Any, **k: Any) -> Any:
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise RuntimeError(f"non-loopback connection to {address!r}")
        return real_cc(address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection", guarded_cc)
    yield


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.srv.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class FakeHub:
    """A minimal hub on 127.0.0.1: HEAD/GET ``/<repo>/resolve/<rev>/<path>`` for the files given,
    503 on GET for the paths in ``fail``, 404 for everything else."""

    def __init__(
        self, repo_id: str, files: dict[str, bytes], fail: set[str] | None = None, fail_head: bool = False
    ) -> None:
        import hashlib

        fail = fail or set()
        hub = self
        self.log: list[tuple[str, str]] = []

        class H(BaseHTTPRequestHandler):
            def _resolve(self, body: bool) -> None:
                hub.log.append((self.command, self.path))
                prefix = f"/{repo_id}/resolve/"
                if not self.path.startswith(prefix):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rel = self.path[len(prefix) :].split("/", 1)[1]
                if rel not in files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if rel in fail and (body or fail_head):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = files[rel]
                self.send_response(200)
                self.send_header("X-Repo-Commit", DEFAULT_COMMIT)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802
                self._resolve(False)

            def do_GET(self) -> None:  # noqa: N802
                self._resolve(True)

            def log_message(self, *a: Any) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def _online(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    import huggingface_hub.constants as hfc

    from sae_lens_gemmascope import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hfc, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(
        hfc,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        f"http://127.0.0.1:{port}" + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(hfc, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hub, "_probe_cache", {}, raising=False)


# ----------------------------------------------------------------------------- network rows


def _assert_unreachable_message(err: BaseException | None) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert isinstance(err, errors.ArtifactNotCachedError) and isinstance(err, LocalEntryNotFoundError), repr(
        err
    )
    msg = str(err)
    for part in (*GS2, "params.safetensors", "HF_HUB_OFFLINE=1", "gemmascope download"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize("where", ["black-hole", "closed-port"])
def test_unreachable_hub_fails_fast_with_what_to_do(
    where: str, hf_cache: Path, loopback_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    hole = BlackHole() if where == "black-hole" else None
    port = hole.port if hole else closed_port()
    _online(monkeypatch, port)
    monkeypatch.setenv("GEMMASCOPE_HUB_PROBE_TIMEOUT", "2")
    before = _files(hf_cache)
    try:
        _, err = _run_with_guard(load_gs2, seconds=60)  # huggingface_hub alone retries for ~400 s
    finally:
        if hole:
            hole.close()
    _assert_unreachable_message(err)
    assert _files(hf_cache) == before


def test_cached_artifact_opens_no_socket_with_offline_unset(
    hf_cache: Path, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hfc

    write_entry(registry.get(*GS2), hf_cache, d_sae=D_SAE)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        hfc, "HF_HUB_DISABLE_TELEMETRY", False
    )  # the agent lookup runs only with telemetry on
    monkeypatch.setattr(hfc, "AGENT_HARNESSES_PATH", str(hf_cache.parent / "no-agent-cache.json"))
    # huggingface_hub swallows a failed lookup, so the guard's exception alone would go unseen: record
    attempts: list[object] = []
    blocked_connect, blocked_cc = socket.socket.connect, socket.create_connection

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
        return blocked_connect(self, address)

    def create_connection(address: Any, *a: Any, **k: Any) -> Any:
        attempts.append(address)
        return blocked_cc(address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    for local_files_only in (None, True):
        sae = load_gs2(local_files_only=local_files_only)
        assert sae.cfg.d_sae == D_SAE
    assert attempts == []


def _clt_files(e: registry.Entry, tmp: Path) -> dict[str, bytes]:
    write_entry(e, tmp, d_sae=4, d_in=16, d_out=16)
    snap = repo_cache_dir(tmp, e.repo_id) / "snapshots" / DEFAULT_COMMIT
    return {str(p.relative_to(snap)): p.read_bytes() for p in snap.rglob("*") if p.is_file()}


@pytest.mark.parametrize("on", ["GET", "HEAD"])  # HEAD: hub retries ~23 s
def test_download_with_a_503_on_config_json_exits_nonzero(
    on: str,
    hf_cache: Path,
    tmp_path: Path,
    loopback_only: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sae_lens_gemmascope.cli import main
    from sae_lens_gemmascope.hub import cached_file

    e = clt_entry()
    files = _clt_files(e, tmp_path / "src")
    hub = FakeHub(e.repo_id, files, fail={f"{e.path}/config.json"}, fail_head=on == "HEAD")
    _online(monkeypatch, hub.port)
    try:
        rc = main(["download", e.release, e.sae_id, "--yes"])
    finally:
        hub.close()
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{e.path}/config.json" in err and e.release in err
    assert "503" in err if on == "GET" else "HF_HUB_OFFLINE=1" in err
    assert cached_file(e, "config.json") is None  # nothing half-written that a loader takes for complete
    assert cached_file(e, "params_layer_0.safetensors") is not None  # the rest is kept (resumable)


def test_download_complete_exits_zero_and_optional_404_is_fine(
    hf_cache: Path, tmp_path: Path, loopback_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sae_lens_gemmascope.cli import main
    from sae_lens_gemmascope.hub import cached_file

    e = registry.get(*GS2)
    write_entry(e, tmp_path / "src", d_sae=D_SAE)
    snap = repo_cache_dir(tmp_path / "src", e.repo_id) / "snapshots" / DEFAULT_COMMIT
    files = {
        f"{e.path}/params.safetensors": (snap / e.path / "params.safetensors").read_bytes()
    }  # no config.json
    hub = FakeHub(e.repo_id, files)
    _online(monkeypatch, hub.port)
    try:
        rc = main(["download", *GS2, "--yes"])
    finally:
        hub.close()
    assert rc == 0
    path = cached_file(e, "params.safetensors")
    assert path is not None and path.read_bytes() == files[f"{e.path}/params.safetensors"]
