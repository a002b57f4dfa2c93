"""``gemmascope check-hub``: run the check, print the report, ``--write`` the fixes, exit code.

Example:
    >>> from types import SimpleNamespace
    >>> cli_check_hub(SimpleNamespace(replay="/nonexistent"))  # doctest: +SKIP
    2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..._paths import registry_dir as default_registry_dir
from .. import compile_index as C
from ..validate import validate
from .compare import check_hub
from .listing import HubClient, LinkClient, LiveHub, LiveLinks, ReplayHub, ReplayLinks
from .report import format_report


def _entry_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Side effects worth a review: existing ids whose fields other than status changed."""
    out = []
    for rel, ents in after["releases"].items():
        old = {e["sae_id"]: e for e in before["releases"].get(rel, [])}
        for e in ents:
            o = old.get(e["sae_id"])
            if o is None:
                continue
            changed = [k for k in e if k not in ("status",) and e.get(k) != o.get(k)]
            if changed:
                out.append(
                    f"review: {rel} {e['sae_id']}: "
                    + ", ".join(f"{k} {o.get(k)!r} -> {e.get(k)!r}" for k in changed)
                )
    return out


def validate_dir(directory: Path) -> list[str]:
    """The problems ``gemmascope validate`` finds in the registry in ``directory``."""
    return [str(v) for v in validate(directory)]


def cli_check_hub(args: Any) -> int:
    """``gemmascope check-hub``: print the report, optionally ``--write`` the fixes. Returns the exit code."""
    directory = Path(getattr(args, "registry_dir", None) or default_registry_dir())
    replay = getattr(args, "replay", None)
    try:
        hub: HubClient = ReplayHub(replay) if replay else LiveHub()
        links: LinkClient | None = None
        if getattr(args, "neuronpedia", False):
            links = ReplayLinks(replay) if replay else LiveLinks()
        reports = check_hub(
            getattr(args, "repo", None),
            hub,
            shapes=bool(getattr(args, "shapes", False)),
            links=links,
            directory=directory,
        )
    except (KeyError, FileNotFoundError) as err:
        print(f"check-hub: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    print(format_report(reports))
    errors = [f for r in reports for f in r.errors]
    pending = [f for r in reports for f in r.findings if f.code == "confirmed"]
    if getattr(args, "write", False):
        pending = []  # write_fixes records every confirmed entry as observed
        before = C.build_index(directory)
        try:
            from .write import write_fixes  # needs ruamel.yaml (the maintainers extra)
        except ImportError as err:
            print(
                f"check-hub --write needs ruamel.yaml ({err}): pip install 'sae-lens-gemmascope[maintainers]'",
                file=sys.stderr,
            )
            return 2
        log = write_fixes(reports, directory)
        if not log:
            print("write: nothing to change")
        else:
            print(f"write: {len(log)} changes")
            for line in log:
                print(f"  {line}")
            after = C.build_index(directory)
            for line in _entry_diff(before, after):
                print(f"  {line}")
            if directory.resolve() == default_registry_dir().resolve():
                C.compile_index(directory=directory)
                print("write: recompiled sae_lens_gemmascope/_index")
            problems = validate_dir(directory)
            for p in problems:
                print(f"  validate: {p}")
            if problems:
                return 1
            print("write: the edited registry compiles and validates")
            fixed = {(r.repo_id, f"{a}/{b}/average_l0_{c}") for r in reports for a, b, c in r.new_gs1}
            fixed |= {(r.repo_id, f"{a}/{b}") for r in reports for a, b in r.new_gs2}
            errors = [f for f in errors if not (f.code == "extra" and (f.repo_id, f.path) in fixed)]
    if any(f.code == "no-listing" for f in errors):
        return 2 if len(errors) == sum(f.code == "no-listing" for f in errors) else 1
    if pending and not errors:
        print(f"check-hub: {len(pending)} expected entries are on the hub; record them with --write")
    return 1 if errors or pending else 0
