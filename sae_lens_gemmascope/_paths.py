"""Where the YAML registry and the compiled index live (wheel install or source checkout)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INDEX_DIR = PACKAGE_DIR / "_index"


def registry_dir() -> Path:
    """The directory holding ``models.yaml`` and one YAML file per Hugging Face repo.

    In a wheel the files are shipped inside the package (``_registry/``); in a source checkout or
    an editable install they are read from ``registry/`` at the repository root.
    """
    for cand in (PACKAGE_DIR / "_registry", PACKAGE_DIR.parent / "registry"):
        if (cand / "models.yaml").is_file():
            return cand
    raise FileNotFoundError(
        "The Gemma Scope YAML registry was not found next to the package "
        f"({PACKAGE_DIR / '_registry'}) or in the source tree ({PACKAGE_DIR.parent / 'registry'})."
    )
