"""Every bad input of issue #14 is refused cleanly: one table row per class of fault.

Each row builds its input (malformed files are written byte by byte: 8-byte header length, JSON
header, data; into the ``hf_cache`` fixture through ``offline.synthetic.put_file``), runs one public
call, and checks

* the error type (ours, and the standard / huggingface_hub class code already catches);
* that the message names the artifact (release, id, file) or the argument;
* that no state is left behind (the cache holds exactly the files it held before);
* that no socket is opened (``no_network``), except the rows about the network, which only talk to
  servers on 127.0.0.1 that the row starts.

Rows about file contents that the reader rewrite (#11) will check are marked
``xfail(strict=True)`` so they flip to passing when it lands.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sae_lens_gemmascope import errors, registry
from sae_lens_gemmascope.offline.synthetic import (
    DEFAULT_COMMIT,
    jumprelu_params,
    npz_bytes,
    put_file,
    repo_cache_dir,
    safetensors_bytes,
    write_entry,
)

GS2 = ("gemma-scope-2-270m-pt-res", "layer_9_width_16k_l0_medium")
GS1 = ("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
CLT_RELEASE = "gemma-scope-2-270m-pt-clt"
D_SAE = 8
READER = pytest.mark.xfail(reason="reader rewrite (#11)", strict=True)


# ----------------------------------------------------------------------------- raw file builders


def raw_safetensors(
    tensors: dict[str, tuple[str, list[int], bytes]], *, header: dict[str, Any] | None = None
) -> bytes:
    """8-byte little-endian header length + JSON header + data, with offsets laid out in order."""
    hdr: dict[str, Any] = {}
    data = b""
    for name, (dtype, shape, blob) in tensors.items():
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    if header is not None:
        hdr = header
    text = json.dumps(hdr).encode()
    return struct.pack("<Q", len(text)) + text + data


def gs2_tensors(
    dtype: str = "F32", d_in: int = 640, d_sae: int = D_SAE, **override: np.ndarray
) -> dict[str, Any]:
    np_dtype = {"F32": np.float32, "F16": np.float16, "F64": np.float64}[dtype]
    p = jumprelu_params(d_in, d_sae, d_in, seed=3)
    p.update(override)
    return {
        k: (dtype, list(v.shape), np.ascontiguousarray(v, dtype=np_dtype).tobytes()) for k, v in p.items()
    }


def put_params(
    cache: Path, data: bytes, entry: registry.Entry | None = None, name: str = "params.safetensors"
) -> Path:
    e = entry or registry.get(*GS2)
    return put_file(cache, e.repo_id, f"{e.path}/{name}", data)


def load_gs2(**kw: Any) -> Any:
    from sae_lens_gemmascope import load

    return load(*GS2, check_shapes=False, **kw)


def clt_entry() -> registry.Entry:
    return registry.entries(CLT_RELEASE)[0]


def load_clt(**kw: Any) -> Any:
    from sae_lens_gemmascope.multilayer import CrossLayerTranscoder

    e = clt_entry()
    return CrossLayerTranscoder.from_pretrained(e.release, e.sae_id, strict_shapes=False, **kw)


# ----------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    klass: str  # the class of fault in issue #14
    setup: Callable[[Path], Callable[[], Any]]  # gets the cache, returns the call to make
    error: type[BaseException] | tuple[type[BaseException], ...] | None
    also: tuple[type[BaseException], ...] = ()  # standard classes the error must also be
    names: tuple[str, ...] = ()  # substrings the message must contain
    marks: tuple[Any, ...] = ()
    network: bool = False  # talks to a local server on 127.0.0.1
    not_in_message: tuple[str, ...] = ()
    check: Callable[[Path, Any], None] | None = None  # extra assertion on (cache, result)
    extra: dict[str, Any] = field(default_factory=dict)


def _gs2_file(data_fn: Callable[[], bytes]) -> Callable[[Path], Callable[[], Any]]:
    def setup(cache: Path) -> Callable[[], Any]:
        put_params(cache, data_fn())
        return load_gs2

    return setup


def _overlap() -> bytes:
    t = gs2_tensors()
    blob = raw_safetensors(t)
    n = int.from_bytes(blob[:8], "little")
    hdr = json.loads(blob[8 : 8 + n])
    hdr["b_enc"]["data_offsets"] = (
        hdr["w_enc"]["data_offsets"][0],
        hdr["w_enc"]["data_offsets"][0] + D_SAE * 4,
    )
    return raw_safetensors({}, header=hdr) + blob[8 + n :]


def _out_of_range() -> bytes:
    t = gs2_tensors()
    blob = raw_safetensors(t)
    n = int.from_bytes(blob[:8], "little")
    hdr = json.loads(blob[8 : 8 + n])
    end = len(blob) - 8 - n
    hdr["b_dec"]["data_offsets"] = [end - 4, end + 640 * 4 - 4]
    return raw_safetensors({}, header=hdr) + blob[8 + n :]


def _overflow() -> bytes:
    t = gs2_tensors()
    blob = raw_safetensors(t)
    n = int.from_bytes(blob[:8], "little")
    hdr = json.loads(blob[8 : 8 + n])
    hdr["threshold"]["shape"] = [2**62, 2**62]
    return raw_safetensors({}, header=hdr) + blob[8 + n :]


def _header_too_long() -> bytes:
    return struct.pack("<Q", 2**40) + b"{}"


def _header_not_json() -> bytes:
    return struct.pack("<Q", 10) + b"not json!!" + b"\0" * 16


def _missing_tensor() -> bytes:
    t = gs2_tensors()
    del t["threshold"]
    return raw_safetensors(t)


def _negative_threshold() -> bytes:
    return raw_safetensors(gs2_tensors(threshold=-np.ones(D_SAE, np.float32)))


def _nan_threshold() -> bytes:
    th = np.ones(D_SAE, np.float32)
    th[2] = np.nan
    return raw_safetensors(gs2_tensors(threshold=th))


def _nan_weight() -> bytes:
    w = np.ones((640, D_SAE), np.float32)
    w[0, 0] = np.nan
    return raw_safetensors(gs2_tensors(w_enc=w))


def _gs1_f16(cache: Path) -> Callable[[], Any]:
    e = registry.get(*GS1)
    p = {k: v.astype(np.float16) for k, v in jumprelu_params(2304, D_SAE, 2304, seed=1).items()}
    put_file(cache, e.repo_id, f"{e.path}/params.npz", npz_bytes(p))

    def call() -> Any:
        from sae_lens_gemmascope import load

        return load(*GS1, check_shapes=False)

    return call


def _gs1_not_npz(cache: Path) -> Callable[[], Any]:
    e = registry.get(*GS1)
    put_file(cache, e.repo_id, f"{e.path}/params.npz", b"PK\x03\x04 this is no zip archive")

    def call() -> Any:
        from sae_lens_gemmascope import load

        return load(*GS1, check_shapes=False)

    return call


def _gs2_config(cfg: Any) -> Callable[[Path], Callable[[], Any]]:
    def setup(cache: Path) -> Callable[[], Any]:
        e = registry.get(*GS2)
        write_entry(e, cache, d_sae=D_SAE)
        put_file(cache, e.repo_id, f"{e.path}/config.json", json.dumps(cfg).encode())
        return load_gs2

    return setup


def _clt(
    setup_files: Callable[[Path, registry.Entry], None], call: Callable[[], Any] | None = None
) -> Callable[[Path], Callable[[], Any]]:
    def setup(cache: Path) -> Callable[[], Any]:
        e = clt_entry()
        write_entry(e, cache, d_sae=4, d_in=16, d_out=16)
        setup_files(cache, e)
        return call or (lambda: load_clt(layers=[0]))

    return setup


def _clt_config(cfg: Any) -> Callable[[Path, registry.Entry], None]:
    def put(cache: Path, e: registry.Entry) -> None:
        data = cfg if isinstance(cfg, bytes) else json.dumps(cfg).encode()
        put_file(cache, e.repo_id, f"{e.path}/config.json", data)

    return put


def _clt_wrong_width(cache: Path, e: registry.Entry) -> None:
    n = len(e.layers)
    p = jumprelu_params(16, 5, 16, seed=2)  # 5 latents where every other file has 4
    p["w_dec"] = np.zeros((5, n, 16), np.float32)
    put_file(cache, e.repo_id, f"{e.path}/params_layer_1.safetensors", safetensors_bytes(p))


def _clt_bad_header(cache: Path, e: registry.Entry) -> None:
    put_file(cache, e.repo_id, f"{e.path}/params_layer_0.safetensors", struct.pack("<Q", 4) + b"[1,2")


def _examples(data: bytes) -> Callable[[Path], Callable[[], Any]]:
    def setup(cache: Path) -> Callable[[], Any]:
        e = registry.get(*GS2)
        write_entry(e, cache, d_sae=D_SAE)
        put_file(cache, e.repo_id, f"{e.path}/examples.safetensors", data)
        return lambda: load_gs2(with_sparsity=True)

    return setup


def _snapshot_entry(kind: str) -> Callable[[Path], Callable[[], Any]]:
    def setup(cache: Path) -> Callable[[], Any]:
        e = registry.get(*GS2)
        write_entry(e, cache, d_sae=D_SAE)
        snap = repo_cache_dir(cache, e.repo_id) / "snapshots" / DEFAULT_COMMIT / e.path / "params.safetensors"
        snap.unlink()
        if kind == "dir":
            snap.mkdir()
        elif kind == "fifo":
            os.mkfifo(snap)
        elif kind == "device":
            snap.symlink_to("/dev/zero")
        elif kind == "dangling":
            snap.symlink_to("../../../blobs/deleted-blob")
        return load_gs2

    return setup


def _killed_download(cache: Path) -> Callable[[], Any]:
    e = registry.get(*GS2)
    root = repo_cache_dir(cache, e.repo_id)
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / ("a" * 64 + ".incomplete")).write_bytes(b"\0" * 1000)  # half a download
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(DEFAULT_COMMIT)
    return load_gs2


def _no_snapshot(cache: Path) -> Callable[[], Any]:
    e = registry.get(*GS2)
    root = repo_cache_dir(cache, e.repo_id)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("f" * 40)
    return load_gs2


def _plain(fn: Callable[[], Any]) -> Callable[[Path], Callable[[], Any]]:
    return lambda cache: fn


def _with_entry(fn: Callable[[], Any]) -> Callable[[Path], Callable[[], Any]]:
    def setup(cache: Path) -> Callable[[], Any]:
        write_entry(registry.get(*GS2), cache, d_sae=D_SAE)
        return fn

    return setup


def _saelens(**kw: Any) -> Callable[[], Any]:
    def call() -> Any:
        from sae_lens import SAE

        import sae_lens_gemmascope  # noqa: F401

        return SAE.from_pretrained(*GS2, **kw)

    return call


def _clt_module(call: Callable[[Any], Any]) -> Callable[[Path], Callable[[], Any]]:
    def setup(cache: Path) -> Callable[[], Any]:
        e = clt_entry()
        write_entry(e, cache, d_sae=4, d_in=16, d_out=16)
        m = load_clt(lazy=True)
        return lambda: call(m)

    return setup


def _gemma2_sae_on_gemma3(cache: Path) -> Callable[[], Any]:
    from sae_lens_gemmascope.attach import check_model_match
    from sae_lens_gemmascope.offline.tiny import tiny_gemma

    model, _ = tiny_gemma("gemma3_text")
    return lambda: check_model_match(model, "gemma-2-2b")


def _cli(*argv: str) -> Callable[[Path], Callable[[], Any]]:
    def call() -> Any:
        from sae_lens_gemmascope.cli import main

        return main(list(argv))

    return lambda cache: call


def _cli_exit(code: int, *names: str) -> Callable[[Path, Any], None]:
    def check(cache: Path, rc: Any) -> None:
        assert rc == code

    return check


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


CASES: list[Case] = [
    # --- safetensors headers the hand-written parser accepts
    Case(
        "overlapping-offsets",
        "header",
        _gs2_file(_overlap),
        errors.CorruptArtifactError,
        names=GS2 + ("params.safetensors",),
        marks=(READER,),
    ),
    Case(
        "offsets-past-end",
        "header",
        _gs2_file(_out_of_range),
        errors.CorruptArtifactError,
        names=GS2 + ("params.safetensors",),
        marks=(READER,),
    ),
    Case(
        "shape-product-overflow",
        "header",
        _gs2_file(_overflow),
        (errors.CorruptArtifactError, errors.ShapeMismatchError),
        names=GS2 + ("params.safetensors",),
        marks=(READER,),
    ),
    Case(
        "header-length-past-end",
        "header",
        _gs2_file(_header_too_long),
        errors.CorruptArtifactError,
        names=("params.safetensors",),
    ),
    Case(
        "header-not-json",
        "header",
        _gs2_file(_header_not_json),
        errors.CorruptArtifactError,
        names=("params.safetensors",),
    ),
    Case(
        "tensor-missing",
        "header",
        _gs2_file(_missing_tensor),
        (errors.CorruptArtifactError, errors.ShapeMismatchError),
        names=("threshold",),
    ),
    # --- dtypes and values the registry does not expect
    Case(
        "f16-where-f32",
        "dtype",
        _gs2_file(lambda: raw_safetensors(gs2_tensors("F16"))),
        errors.CorruptArtifactError,
        names=GS2 + ("params.safetensors", "F16"),
        marks=(READER,),
    ),
    Case(
        "f64-where-f32",
        "dtype",
        _gs2_file(lambda: raw_safetensors(gs2_tensors("F64"))),
        errors.CorruptArtifactError,
        names=GS2 + ("params.safetensors", "F64"),
        marks=(READER,),
    ),
    Case(
        "gs1-f16-npz",
        "dtype",
        _gs1_f16,
        errors.CorruptArtifactError,
        names=GS1 + ("params.npz",),
        marks=(READER,),
    ),
    Case(
        "negative-threshold",
        "value",
        _gs2_file(_negative_threshold),
        errors.CorruptArtifactError,
        names=GS2 + ("threshold",),
        marks=(READER,),
    ),
    Case(
        "nan-threshold", "value", _gs2_file(_nan_threshold), errors.CorruptArtifactError, names=("threshold",)
    ),
    Case("nan-weight", "value", _gs2_file(_nan_weight), errors.CorruptArtifactError, names=("w_enc",)),
    Case("gs1-not-a-zip", "value", _gs1_not_npz, errors.CorruptArtifactError, names=("params.npz",)),
    # --- malformed config.json / CLT headers / examples headers
    Case(
        "config-width-not-int",
        "config",
        _gs2_config({"width": "many", "type": "sae"}),
        errors.CorruptArtifactError,
        names=GS2 + ("config.json", "width"),
        marks=(READER,),
    ),
    Case(
        "config-json-list",
        "config",
        _gs2_config([1, 2, 3]),
        errors.CorruptArtifactError,
        names=GS2 + ("config.json",),
        marks=(READER,),
    ),
    Case(
        "config-wrong-type",
        "config",
        _gs2_config({"type": "transcoder"}),
        errors.ShapeMismatchError,
        names=GS2[1:] + ("config.json",),
    ),
    Case(
        "clt-config-not-json",
        "config",
        _clt(_clt_config(b"{not json")),
        errors.CorruptArtifactError,
        names=("config.json",),
    ),
    Case(
        "clt-config-width-not-int",
        "config",
        _clt(_clt_config({"width": "wide", "type": "clt"})),
        errors.CorruptArtifactError,
        names=(CLT_RELEASE, "config.json", "width"),
        marks=(READER,),
    ),
    Case(
        "clt-config-json-list",
        "config",
        _clt(_clt_config([1])),
        errors.CorruptArtifactError,
        names=(CLT_RELEASE, "config.json"),
        marks=(READER,),
    ),
    Case(
        "clt-wrong-layer-width",
        "clt-header",
        _clt(_clt_wrong_width, lambda: load_clt(layers=[1])),
        errors.ShapeMismatchError,
        names=(CLT_RELEASE, "params_layer_1.safetensors"),
    ),
    Case(
        "clt-header-truncated",
        "clt-header",
        _clt(_clt_bad_header),
        errors.CorruptArtifactError,
        names=("params_layer_0.safetensors",),
    ),
    Case(
        "examples-not-safetensors",
        "examples",
        _examples(struct.pack("<Q", 3) + b"{]}"),
        errors.CorruptArtifactError,
        names=GS2 + ("examples.safetensors",),
        marks=(READER,),
    ),
    Case(
        "examples-wrong-length",
        "examples",
        _examples(safetensors_bytes({"feature_frequencies": np.ones(3, np.float32)})),
        (errors.ShapeMismatchError, errors.CorruptArtifactError),
        names=GS2[1:] + ("feature_frequencies",),
    ),
    # --- cache anomalies
    Case(
        "snapshot-is-directory",
        "cache",
        _snapshot_entry("dir"),
        errors.CacheEntryError,
        also=(OSError,),
        names=GS2 + ("params.safetensors", "directory"),
    ),
    Case(
        "snapshot-is-fifo",
        "cache",
        _snapshot_entry("fifo"),
        errors.CacheEntryError,
        also=(OSError,),
        names=GS2 + ("params.safetensors", "FIFO"),
    ),
    Case(
        "snapshot-is-device",
        "cache",
        _snapshot_entry("device"),
        errors.CacheEntryError,
        also=(OSError,),
        names=GS2 + ("params.safetensors", "device"),
    ),
    Case(
        "snapshot-dangling-link",
        "cache",
        _snapshot_entry("dangling"),
        errors.ArtifactNotCachedError,
        also=(FileNotFoundError,),
        names=GS2 + ("params.safetensors", "gemmascope download"),
    ),
    Case(
        "killed-download-incomplete-blob",
        "cache",
        _killed_download,
        errors.ArtifactNotCachedError,
        names=GS2 + ("params.safetensors", "gemmascope download"),
    ),
    Case(
        "refs-main-without-snapshot",
        "cache",
        _no_snapshot,
        errors.ArtifactNotCachedError,
        names=GS2 + ("params.safetensors",),
    ),
    Case(
        "not-cached-offline-is-local-entry-not-found",
        "cache",
        _plain(load_gs2),
        errors.ArtifactNotCachedError,
        also=(FileNotFoundError,),
        names=GS2 + ("params.safetensors", "gemmascope download"),
    ),
    # --- API misuse
    Case(
        "device-cuda-on-cpu-torch",
        "api",
        _with_entry(lambda: load_gs2(device="cuda")),
        errors.DeviceUnavailableError,
        also=(ValueError,),
        names=("cuda", "cpu"),
    ),
    Case(
        "device-nonsense",
        "api",
        _with_entry(lambda: load_gs2(device="gpu0")),
        errors.InvalidArgumentError,
        also=(ValueError, TypeError),
        names=("gpu0",),
    ),
    Case(
        "device-wrong-type",
        "api",
        _with_entry(lambda: load_gs2(device=["cpu"])),
        errors.InvalidArgumentError,
        also=(TypeError,),
        names=("device",),
    ),
    Case(
        "dtype-int8",
        "api",
        _with_entry(lambda: load_gs2(dtype="int8")),
        errors.InvalidArgumentError,
        names=("int8", "float32"),
    ),
    Case(
        "dtype-torch-int64",
        "api",
        _with_entry(lambda: load_gs2(dtype=__import__("torch").int64)),
        errors.InvalidArgumentError,
        names=("int64",),
    ),
    Case(
        "saelens-device-cuda",
        "api",
        _with_entry(_saelens(device="cuda")),
        errors.DeviceUnavailableError,
        names=("cuda",),
    ),
    Case(
        "saelens-dtype-nonsense",
        "api",
        _with_entry(_saelens(dtype="float8")),
        errors.InvalidArgumentError,
        names=("float8",),
    ),
    Case(
        "clt-dtype-nonsense",
        "api",
        _clt(lambda c, e: None, lambda: load_clt(dtype="bogus")),
        errors.InvalidArgumentError,
        names=("bogus",),
    ),
    Case(
        "clt-device-cuda",
        "api",
        _clt(lambda c, e: None, lambda: load_clt(device="cuda:1")),
        errors.DeviceUnavailableError,
        names=("cuda:1",),
    ),
    Case(
        "clt-fractional-block",
        "api",
        _clt_module(lambda m: m.decoder(0.5, 1)),
        errors.InvalidArgumentError,
        also=(TypeError,),
        names=("0.5", "block"),
    ),
    Case(
        "clt-block-out-of-range",
        "api",
        _clt_module(lambda m: m.global_latent_id(99, 0)),
        errors.BlockIndexError,
        also=(IndexError,),
        names=("99", "CrossLayerTranscoder"),
    ),
    Case(
        "nearest-nan",
        "api",
        _plain(lambda: registry.nearest(float("nan"), model="gemma-2-2b")),
        errors.InvalidArgumentError,
        names=("nan",),
    ),
    Case(
        "nearest-inf",
        "api",
        _plain(lambda: registry.nearest(float("inf"))),
        errors.InvalidArgumentError,
        names=("inf",),
    ),
    Case(
        "get-sae-id-none",
        "api",
        _plain(lambda: registry.get(GS2[0], None)),
        errors.InvalidArgumentError,
        also=(ValueError,),
        names=("sae_id",),
    ),
    Case(
        "get-release-list",
        "api",
        _plain(lambda: registry.get(["x"], "y")),
        errors.InvalidArgumentError,
        names=("release",),
    ),
    Case(
        "l0-typo-suggests-nearest-l0",
        "api",
        _plain(lambda: registry.get(GS1[0], "layer_20/width_16k/average_l0_72")),
        errors.UnknownSaeIdError,
        also=(ValueError,),
        names=("Close matches: layer_20/width_16k/average_l0_71, layer_20/width_16k/average_l0_38",),
    ),
    Case(
        "unknown-release-is-value-error",
        "api",
        _plain(lambda: registry.get("gemma-scope-2b-pt-rse", "x")),
        errors.UnknownReleaseError,
        also=(ValueError,),
        names=("Did you mean: gemma-scope-2b-pt-res,",),
    ),
    Case(
        "gemma2-sae-on-gemma3-model",
        "api",
        _gemma2_sae_on_gemma3,
        errors.HookMappingError,
        names=("gemma-2-2b", "gemma-3-270m"),
    ),
    Case(
        "cli-list-negative-limit",
        "cli",
        _cli("list", "--model", "gemma-2-2b", "--limit", "-1"),
        SystemExit,
        names=("-1",),
    ),
    Case(
        "cli-search-negative-limit",
        "cli",
        _cli("search", "gemma", "--limit", "-5"),
        SystemExit,
        names=("-5",),
    ),
    Case("cli-demo-negative-top-k", "cli", _cli("demo", "--top-k", "-2"), SystemExit, names=("-2",)),
    Case("cli-list-negative-layer", "cli", _cli("list", "--layer", "-3"), SystemExit, names=("-3",)),
    # --- the network (offline rows: HF_HUB_OFFLINE=1 and no socket)
    Case(
        "download-offline-our-message",
        "network",
        _cli("download", *GS2),
        None,
        names=GS2 + ("HF_HUB_OFFLINE",),
        not_in_message=("check your connection",),
        check=_cli_exit(1),
    ),
    Case(
        "download-unknown-id",
        "network",
        _cli("download", GS2[0], "layer_9_width_16k_l0_mediun"),
        None,
        names=("layer_9_width_16k_l0_medium",),
        check=_cli_exit(2),
    ),
]


def _files(cache: Path) -> set[tuple[str, int]]:
    out = set()
    for p in cache.rglob("*"):
        if p.is_symlink() or p.is_file():
            try:
                size = p.lstat().st_size
            except OSError:
                size = -1
            out.add((str(p.relative_to(cache)), size))
    return out


def _run_with_guard(call: Callable[[], Any], seconds: float = 120) -> tuple[Any, BaseException | None]:
    """Run ``call`` in a thread; a call still blocked after ``seconds`` fails the test (a hang)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"the call was still blocked after {seconds} s"
    return box.get("result"), box.get("error")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_refused_cleanly(
    case: Case, hf_cache: Path, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    call = case.setup(hf_cache)
    before = _files(hf_cache)
    result, err = _run_with_guard(call)
    out = capsys.readouterr()
    if case.error is None:
        assert err is None, f"unexpected {type(err).__name__}: {err}"
        message = out.out + out.err
    else:
        assert err is not None, f"expected {case.error}, the call returned {result!r}"
        assert isinstance(err, case.error), f"{type(err).__module__}.{type(err).__name__}: {err}"
        if case.error is not SystemExit:
            assert isinstance(err, errors.GemmaScopeError)
        for cls in case.also:
            assert isinstance(err, cls)
        message = str(err) + out.out + out.err
    for name in case.names:
        assert name in message, f"{name!r} not in message: {message}"
    for name in case.not_in_message:
        assert name not in message
    if case.check is not None:
        case.check(hf_cache, result)
    assert _files(hf_cache) == before, "the call left files behind in (or removed files from) the cache"


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


def test_table_covers_every_class() -> None:
    assert len(CASES) + 5 >= 40
    assert {c.klass for c in CASES} >= {
        "header",
        "dtype",
        "value",
        "config",
        "clt-header",
        "examples",
        "cache",
        "api",
        "cli",
        "network",
    }
