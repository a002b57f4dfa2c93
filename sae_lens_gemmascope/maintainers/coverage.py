"""The README's coverage table (registry vs SAELens 6.54.12), generated from the registry.

Run ``python -m sae_lens_gemmascope.maintainers.coverage`` to print it; a test fails when the README drifts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .. import registry

START = "<!-- coverage:start -->"
END = "<!-- coverage:end -->"


def _saelens_counts() -> Counter[str]:
    import sae_lens
    import yaml

    path = Path(sae_lens.__file__).parent / "pretrained_saes.yaml"
    with open(path, encoding="utf-8") as fh:
        d = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    c: Counter[str] = Counter()
    for rel, block in d.items():
        repo = str(block.get("repo_id", ""))
        if repo.startswith("google/gemma-scope-") and not rel.endswith("-canonical"):
            c[repo] += len(block["saes"])
    return c


def coverage_table() -> str:
    """Markdown: per repo, artifacts in this registry (by kind and evidence) vs SAELens."""
    sl = _saelens_counts()
    rows = []
    totals: Counter[str] = Counter()
    by_repo: dict[str, Counter[str]] = {}
    for e in registry.iter_entries():
        c = by_repo.setdefault(e.repo_id, Counter())
        c["all"] += 1
        c[e.kind] += 1
        c["expected"] += e.status == "expected"
    for repo in sorted(by_repo, key=lambda r: (("-2-" in r), r)):
        c = by_repo[repo]
        single = c["sae"] + c["transcoder"] + c["skip_transcoder"]
        multi = c["clt"] + c["crosscoder"]
        rows.append(
            f"| `{repo.split('/')[1]}` | {c['sae']} | {c['transcoder'] + c['skip_transcoder']} | "
            f"{c['clt']} | {c['crosscoder']} | {c['all']} | {c['expected']} | {sl[repo]} | {single + multi - sl[repo]:+d} |"
        )
        for k in ("sae", "transcoder", "skip_transcoder", "clt", "crosscoder", "all", "expected"):
            totals[k] += c[k]
        totals["saelens"] += sl[repo]
    head = (
        "| repo | SAEs | transcoders | CLTs | crosscoders | total | of which `expected` | SAELens 6.54.12 | gained |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    t = totals
    foot = (
        f"| **all** | {t['sae']} | {t['transcoder'] + t['skip_transcoder']} | {t['clt']} | {t['crosscoder']} | "
        f"{t['all']} | {t['expected']} | {t['saelens']} | {t['all'] - t['saelens']:+d} |"
    )
    return "\n".join([head, *rows, foot])


def readme_block() -> str:
    return f"{START}\n{coverage_table()}\n{END}"


if __name__ == "__main__":  # pragma: no cover
    print(readme_block())
