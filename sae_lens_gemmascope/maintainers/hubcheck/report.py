"""The human-readable ``gemmascope check-hub`` report.

Example:
    >>> from .compare import RepoReport
    >>> print(format_report([RepoReport("google/x", "x.yaml", n_files=3, n_entries=2)]))
    google/x (x.yaml): 3 hub files, 2 registry entries
      OK
    summary: 0 errors, 0 to confirm, 0 info in 1 repos
"""

from __future__ import annotations

from collections.abc import Sequence

from .compare import Finding, RepoReport


def _collapse(findings: Sequence[Finding], limit: int = 8) -> list[str]:
    """Finding lines; more than ``limit`` ``confirmed`` notes in one family folder become one line."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        if f.code == "confirmed":
            groups.setdefault(f.path.split("/")[0], []).append(f)
    big = {k for k, v in groups.items() if len(v) > limit}
    out, done = [], set()
    for f in findings:
        top = f.path.split("/")[0]
        if f.code != "confirmed" or top not in big:
            out.append(str(f))
        elif top not in done:
            done.add(top)
            out.append(
                f"NOTE  confirmed: {top}/: {len(groups[top])} folders with status expected are on the hub "
                "(--write: observed)"
            )
    return out


def format_report(reports: Sequence[RepoReport], show_info: bool = True) -> str:
    """Human-readable report: one block per repo, then a summary line."""
    out = []
    for rep in reports:
        scope = f", listing covers {', '.join(rep.prefixes)}" if rep.prefixes else ""
        out.append(
            f"{rep.repo_id} ({rep.registry_file}): {rep.n_files} hub files, {rep.n_entries} registry entries{scope}"
        )
        shown = [f for f in rep.findings if show_info or f.severity != "info"]
        out.extend(f"  {line}" for line in _collapse(shown))
        quiet = []
        if rep.n_optional:
            quiet.append(f"{rep.n_optional} optional examples.safetensors")
        if rep.n_root:
            quiet.append(f"{rep.n_root} repo metadata files")
        if quiet:
            out.append(f"  (ignored: {', '.join(quiet)})")
        if not shown:
            out.append("  OK")
    n = {s: sum(1 for r in reports for f in r.findings if f.severity == s) for s in ("error", "note", "info")}
    out.append(
        f"summary: {n['error']} errors, {n['note']} to confirm, {n['info']} info in {len(reports)} repos"
    )
    return "\n".join(out)
