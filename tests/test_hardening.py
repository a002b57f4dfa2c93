"""Every bad input of issue #14 is refused cleanly: one table row per class of fault.

Each row builds its input (malformed files are written byte by byte: 8-byte header length, JSON
header, data; into the ``hf_cache`` fixture through ``offline.synthetic.put_file``), runs one public
call, and checks

* the error type (ours, and the standard / huggingface_hub class code already catches);
* that the message names the artifact (release, id, file) or the argument;
* that no state is left behind (the cache holds exactly the files it held before);
* that no socket is opened (``no_network``), except the rows about the network, which only talk to
  servers on 127.0.0.1 that the row starts.

The file-content rows (dtypes, thresholds, header offsets, config.json, CLT headers) are checked by
the reading layer (``sae_lens_gemmascope.reading``) before any data is read.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
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


def _nan_weight_full(cache: Path) -> Callable[[], Any]:
    """A NaN inside a matrix: the default load checks only biases and thresholds (documented); the
    full verification scans every matrix."""
    put_params(cache, _nan_weight())
    return lambda: load_gs2(verify="full")


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


CORRUPT, SHAPE, CACHE = errors.CorruptArtifactError, errors.ShapeMismatchError, errors.CacheEntryError
NOT_CACHED, BAD_ARG, NO_DEVICE = (
    errors.ArtifactNotCachedError,
    errors.InvalidArgumentError,
    errors.DeviceUnavailableError,
)
P2 = (*GS2, "params.safetensors")  # release, id and file of the GS2 SAE the rows use
P2_ID = (GS2[1], "params.safetensors")  # id and file (messages that name the cached path)
CLT_ID = clt_entry().sae_id
_bad_header_clt = _clt(_clt_bad_header)
_no_files = _clt(lambda c, e: None, lambda: load_clt(dtype="bogus"))
_no_files_cuda = _clt(lambda c, e: None, lambda: load_clt(device="cuda:1"))
_list = ("list", "--model", "gemma-2-2b")

# fmt: off
CASES: list[Case] = [
    # --- safetensors headers the hand-written parser accepts
    Case("overlapping-offsets", "header", _gs2_file(_overlap), CORRUPT, names=P2),
    Case("offsets-past-end", "header", _gs2_file(_out_of_range), CORRUPT, names=P2),
    Case("shape-product-overflow", "header", _gs2_file(_overflow), (CORRUPT, SHAPE), names=P2),
    Case("header-length-past-end", "header", _gs2_file(_header_too_long), CORRUPT, names=P2_ID),
    Case("header-not-json", "header", _gs2_file(_header_not_json), CORRUPT, names=P2_ID),
    Case("tensor-missing", "header", _gs2_file(_missing_tensor), (CORRUPT, SHAPE), names=(*P2_ID, "threshold")),
    # --- dtypes and values the registry does not expect
    Case("f16-where-f32", "dtype", _gs2_file(lambda: raw_safetensors(gs2_tensors("F16"))), CORRUPT,
         names=(*P2, "F16")),
    Case("f64-where-f32", "dtype", _gs2_file(lambda: raw_safetensors(gs2_tensors("F64"))), CORRUPT,
         names=(*P2, "F64")),
    Case("gs1-f16-npz", "dtype", _gs1_f16, CORRUPT, names=(*GS1, "params.npz")),
    Case("negative-threshold", "value", _gs2_file(_negative_threshold), CORRUPT, names=(*P2, "threshold")),
    Case("nan-threshold", "value", _gs2_file(_nan_threshold), CORRUPT, names=(*P2_ID, "threshold")),
    Case("nan-weight", "value", _nan_weight_full, CORRUPT, names=(*P2_ID, "w_enc")),
    Case("gs1-not-a-zip", "value", _gs1_not_npz, CORRUPT, names=(GS1[1], "params.npz")),
    # --- malformed config.json, CLT layer headers, examples headers
    Case("config-width-not-int", "config", _gs2_config({"width": "many", "type": "sae"}), CORRUPT,
         names=(*GS2, "config.json", "width")),
    Case("config-json-list", "config", _gs2_config([1, 2, 3]), CORRUPT, names=(*GS2, "config.json")),
    Case("config-wrong-type", "config", _gs2_config({"type": "transcoder"}), SHAPE, names=(GS2[1], "config.json")),
    Case("clt-config-not-json", "config", _clt(_clt_config(b"{not json")), CORRUPT, names=(CLT_ID, "config.json")),
    Case("clt-config-width-not-int", "config", _clt(_clt_config({"width": "wide", "type": "clt"})), CORRUPT,
         names=(CLT_RELEASE, CLT_ID, "config.json", "width")),
    Case("clt-config-json-list", "config", _clt(_clt_config([1])), CORRUPT,
         names=(CLT_RELEASE, CLT_ID, "config.json")),
    Case("clt-wrong-layer-width", "clt-header", _clt(_clt_wrong_width, lambda: load_clt(layers=[1])), SHAPE,
         names=(CLT_RELEASE, "params_layer_1.safetensors")),
    Case("clt-header-truncated", "clt-header", _bad_header_clt, CORRUPT, names=(CLT_ID, "params_layer_0.safetensors")),
    Case("examples-not-safetensors", "examples", _examples(struct.pack("<Q", 3) + b"{]}"), CORRUPT,
         names=(*GS2, "examples.safetensors")),
    Case("examples-wrong-length", "examples", _examples(safetensors_bytes({"feature_frequencies": np.ones(3, "f4")})),
         (SHAPE, CORRUPT), names=(GS2[1], "feature_frequencies")),
    # --- cache anomalies (no read may block on a special file)
    Case("snapshot-is-directory", "cache", _snapshot_entry("dir"), CACHE, (OSError,), (*P2, "directory")),
    Case("snapshot-is-fifo", "cache", _snapshot_entry("fifo"), CACHE, (OSError,), (*P2, "FIFO")),
    Case("snapshot-is-device", "cache", _snapshot_entry("device"), CACHE, (OSError,), (*P2, "device")),
    Case("snapshot-dangling-link", "cache", _snapshot_entry("dangling"), NOT_CACHED, (FileNotFoundError,),
         (*P2, "gemmascope download")),
    Case("killed-download-incomplete-blob", "cache", _killed_download, NOT_CACHED, names=(*P2, "gemmascope download")),
    Case("refs-main-without-snapshot", "cache", _no_snapshot, NOT_CACHED, names=P2),
    Case("not-cached-offline", "cache", _plain(load_gs2), NOT_CACHED, (FileNotFoundError,), (*P2, "gemmascope download")),
    # --- API misuse
    Case("device-cuda-on-cpu-torch", "api", _with_entry(lambda: load_gs2(device="cuda")), NO_DEVICE, (ValueError,),
         ("cuda", "cpu")),
    Case("device-nonsense", "api", _with_entry(lambda: load_gs2(device="gpu0")), BAD_ARG, (ValueError, TypeError),
         ("gpu0",)),
    Case("device-wrong-type", "api", _with_entry(lambda: load_gs2(device=["cpu"])), BAD_ARG, (TypeError,), ("device",)),
    Case("dtype-int8", "api", _with_entry(lambda: load_gs2(dtype="int8")), BAD_ARG, names=("int8", "float32")),
    Case("dtype-torch-int64", "api", _with_entry(lambda: load_gs2(dtype=__import__("torch").int64)), BAD_ARG,
         names=("int64",)),
    Case("saelens-device-cuda", "api", _with_entry(_saelens(device="cuda")), NO_DEVICE, names=("cuda",)),
    Case("saelens-dtype-nonsense", "api", _with_entry(_saelens(dtype="float8")), BAD_ARG, names=("float8",)),
    Case("clt-dtype-nonsense", "api", _no_files, BAD_ARG, names=("bogus",)),
    Case("clt-device-cuda", "api", _no_files_cuda, NO_DEVICE, names=("cuda:1",)),
    Case("clt-fractional-block", "api", _clt_module(lambda m: m.decoder(0.5, 1)), BAD_ARG, (TypeError,),
         ("0.5", "block")),
    Case("clt-block-out-of-range", "api", _clt_module(lambda m: m.global_latent_id(99, 0)), errors.BlockIndexError,
         (IndexError,), ("99", "CrossLayerTranscoder")),
    Case("nearest-nan", "api", _plain(lambda: registry.nearest(float("nan"), model="gemma-2-2b")), BAD_ARG,
         names=("nan",)),
    Case("nearest-inf", "api", _plain(lambda: registry.nearest(float("inf"))), BAD_ARG, names=("inf",)),
    Case("get-sae-id-none", "api", _plain(lambda: registry.get(GS2[0], None)), BAD_ARG, (ValueError,), ("sae_id",)),
    Case("get-release-list", "api", _plain(lambda: registry.get(["x"], "y")), BAD_ARG, names=("release",)),
    Case("l0-typo-suggests-nearest-l0", "api", _plain(lambda: registry.get(GS1[0], GS1[1][:-2] + "72")),
         errors.UnknownSaeIdError, (ValueError,),
         ("Close matches: layer_20/width_16k/average_l0_71, layer_20/width_16k/average_l0_38",)),
    Case("unknown-release-is-value-error", "api", _plain(lambda: registry.get("gemma-scope-2b-pt-rse", "x")),
         errors.UnknownReleaseError, (ValueError,), ("Did you mean: gemma-scope-2b-pt-res,",)),
    Case("gemma2-sae-on-gemma3-model", "api", _gemma2_sae_on_gemma3, errors.HookMappingError,
         names=("gemma-2-2b", "gemma-3-270m")),
    Case("cli-list-negative-limit", "cli", _cli(*_list, "--limit", "-1"), SystemExit, names=("-1",)),
    Case("cli-search-negative-limit", "cli", _cli("search", "gemma", "--limit", "-5"), SystemExit, names=("-5",)),
    Case("cli-demo-negative-top-k", "cli", _cli("demo", "--top-k", "-2"), SystemExit, names=("-2",)),
    Case("cli-list-negative-layer", "cli", _cli("list", "--layer", "-3"), SystemExit, names=("-3",)),
    # --- the network, offline (no socket): the rows that need a hub are in test_hardening_network.py
    Case("download-offline-our-message", "network", _cli("download", *GS2), None, names=(*GS2, "HF_HUB_OFFLINE"),
         not_in_message=("check your connection",), check=_cli_exit(1)),
    Case("download-unknown-id", "network", _cli("download", GS2[0], GS2[1][:-1] + "n"), None,
         names=("Close matches: layer_9_width_16k_l0_medium",), check=_cli_exit(2)),
]
# fmt: on


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


def test_table_covers_every_class() -> None:
    assert len(CASES) >= 40
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
