"""Compare the registry with what is on the Hugging Face hub: ``gemmascope check-hub``.

For every selected repo it lists the files on the hub and reports, as :class:`Finding` objects:

=================  ========  ===========================================================================
code               severity  meaning
=================  ========  ===========================================================================
``missing``        error     an ``observed`` registry entry has no folder on the hub
``missing-file``   error     the folder exists but a file the entry needs is not there
``extra``          error     a hub folder that the registry does not list (``--write`` adds GS1 L0s and
                             GS2 single-layer folders of known families)
``unparsed``       error     a weights file in a folder whose name follows no known pattern
``shape``          error     (``--shapes``) a safetensors header disagrees with ``Entry.tensor_shapes()``
``size``           error     (``--shapes``) a GS1 ``params.npz`` size disagrees with the shapes
``unreadable``     error     a header could not be read
``neuronpedia``    error     (``--neuronpedia``) a Neuronpedia id answers with no feature
``no-listing``     error     the repo could not be listed (network, auth, missing recording)
``confirmed``      note      an ``expected`` entry is on the hub: ``--write`` marks it ``observed``
``expected-absent`` info     an ``expected`` entry is still not on the hub (not a failure)
``stray``          info      a file that is no artifact (``.gitattributes`` in ``embedding/width_4k``,
                             loose ``attribution_graph_*.json``, a ``README.md`` in a folder, ...)
``np-alias``       info      a Neuronpedia id answers only under a known alternative spelling
=================  ========  ===========================================================================

The exit code of :func:`cli_check_hub` is 1 when any error remains or an ``expected`` entry was
found on the hub without ``--write`` (``confirmed``: the registry is too cautious, and a scheduled
check should stay red until someone records it), else 0. 2 means the command could not run
(unknown repo, bad replay directory).

The hub is reached through a small :class:`HubClient` protocol, so the same check runs on recorded
listings (:class:`ReplayHub`, ``--replay DIR``) in the tests.

GS1 ``params.npz`` files have no remote header; with ``--shapes`` their size from the tree listing
is compared with ``4 * (2 * d_in * d_sae + 2 * d_sae + d_in)`` bytes (five float32 arrays) plus at
most :data:`NPZ_SLACK` bytes of zip and ``.npy`` headers.

Example:
    >>> from pathlib import Path
    >>> fixtures = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "hub"
    >>> reports = check_hub(["google/gemma-scope-27b-pt-res"], ReplayHub(fixtures))
    >>> [str(f) for f in reports[0].findings]
    []
"""

from __future__ import annotations

from .cli import cli_check_hub
from .compare import (
    ERROR_CODES,
    GS1_PATH_RE,
    NEURONPEDIA_API,
    NOTE_CODES,
    NPZ_SLACK,
    Finding,
    RepoReport,
    check_hub,
    check_repo,
    npz_payload_bytes,
    registry_entries,
    resolve_repos,
)
from .listing import (
    HubClient,
    LinkClient,
    LiveHub,
    LiveLinks,
    ReplayHub,
    ReplayLinks,
    fixture_name,
    record,
    write_recording,
)
from .report import format_report

__all__ = [
    "ERROR_CODES",
    "GS1_PATH_RE",
    "NEURONPEDIA_API",
    "NOTE_CODES",
    "NPZ_SLACK",
    "Finding",
    "HubClient",
    "LinkClient",
    "LiveHub",
    "LiveLinks",
    "RepoReport",
    "ReplayHub",
    "ReplayLinks",
    "check_hub",
    "check_repo",
    "cli_check_hub",
    "fixture_name",
    "format_report",
    "npz_payload_bytes",
    "record",
    "registry_entries",
    "resolve_repos",
    "write_recording",
]
