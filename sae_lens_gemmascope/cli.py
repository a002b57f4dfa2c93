"""``gemmascope``: list, search, show, validate, download, explain, dashboard, demo and check the registry.

Example:
    >>> from sae_lens_gemmascope.cli import main
    >>> main(["show", "gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_262k_l0_medium"])  # doctest: +ELLIPSIS
    release       gemma-scope-2-1b-pt-transcoders
    ...
    0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import registry
from .errors import GemmaScopeError


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _files_summary(files: tuple[str, ...]) -> str:
    layered = [f for f in files if f.startswith("params_layer_")]
    if len(layered) > 4:
        rest = [f for f in files if f not in layered]
        return ", ".join([*rest, f"params_layer_{{0..{len(layered) - 1}}}.safetensors"])
    return ", ".join(files)


def _snippet(e: registry.Entry) -> str:
    if e.kind == "clt":
        return (
            "import sae_lens_gemmascope as gs\n"
            f"clt = gs.CrossLayerTranscoder.from_pretrained({e.release!r}, {e.sae_id!r}, layers=[0])"
        )
    if e.kind == "crosscoder":
        return (
            "import sae_lens_gemmascope as gs\n"
            f"cc = gs.Crosscoder.from_pretrained({e.release!r}, {e.sae_id!r})"
        )
    return (
        "import sae_lens_gemmascope  # registers the releases with SAELens\n"
        "from sae_lens import SAE\n"
        f'sae = SAE.from_pretrained({e.release!r}, {e.sae_id!r}, device="cpu")'
    )


def cmd_show(args: argparse.Namespace) -> int:
    e = registry.get(args.release, args.sae_id)
    from .hooks import hook_for

    facts: list[tuple[str, Any]] = [
        ("release", e.release),
        ("sae_id", e.sae_id),
        ("repo", e.repo_id),
        ("path", e.path + ("  (canonical alias of " + "/".join(e.alias_of) + ")" if e.alias_of else "")),
        ("files", _files_summary(e.files)),
        ("kind", e.kind),
        ("site", e.site),
        ("model", f"{e.hf_model_id} ({e.model})"),
        ("layer(s)", e.layer if e.layer is not None else (", ".join(map(str, e.layers)) or "embedding")),
        (
            "width",
            f"{e.width} = {e.d_sae} latents"
            + (f" ({e.d_sae_per_layer} per layer)" if e.d_sae_per_layer else ""),
        ),
        ("d_in / d_out", f"{e.d_in} / {e.d_out}"),
        (
            "L0",
            f"{e.l0}"
            + (f" (training target, label {e.l0_label})" if e.l0_is_target else " (measured average)"),
        ),
        ("canonical", "yes" if e.canonical else "no"),
        ("affine skip", "yes" if e.affine else "no"),
        ("evidence", e.status),
        (
            "examples",
            e.examples
            + (f" (about {_fmt_bytes(e.examples_bytes)})" if e.examples_bytes else "")
            + ("" if e.examples == "absent" else "  [gemmascope explain / dashboard]"),
        ),
        ("size (fp32)", _fmt_bytes(e.size_bytes())),
    ]
    if not e.is_multilayer and e.layer is not None or e.site == "embedding":
        hin = hook_for(e.model, e.hook_site_in, e.layer)
        hout = hook_for(e.model, e.hook_site_out, e.layer)
        hf_in = hook_for(e.model, e.hook_site_in, e.layer, backend="hf")
        facts.append(
            (
                "TL hook in",
                f"{hin.hook_name}" + (f" (reshape {hin.reshape})" if hin.reshape != "none" else ""),
            )
        )
        if hout.hook_name != hin.hook_name:
            facts.append(("TL hook out", hout.hook_name))
        if hin.requires:
            facts.append(("TL requires", ", ".join(hin.requires)))
        facts.append(("HF module", f"{hf_in.hf_module} ({hf_in.hf_io})"))
    facts.append(("neuronpedia", e.neuronpedia_url or "none known"))
    facts.append(("hub", e.hub_url))
    w = max(len(k) for k, _ in facts)
    for k, val in facts:
        print(f"{k.ljust(w)}  {val}")
    print()
    print(_snippet(e))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    filters = dict(model=args.model, site=args.site, layer=args.layer, width=args.width, kind=args.kind)
    l0: Any = args.l0
    if l0 is not None:
        try:
            l0 = float(l0)
        except ValueError:
            pass
    any_filter = any(v is not None for v in filters.values()) or l0 is not None or args.status
    if args.repos:
        repo_rows = [[repo, ", ".join(rels)] for repo, rels in sorted(registry.repos().items())]
        print(_table(repo_rows, ["repo", "releases"]))
        return 0
    if args.release is None and not any_filter:
        rows = []
        for rel in registry.releases():
            info = registry.release_info(rel)
            rows.append(
                [rel, info["repo_id"], info["hf_model_id"], "/".join(info["kinds"]), str(info["count"])]
            )
        print(_table(rows, ["release", "repo", "model", "kinds", "ids"]))
        total = sum(int(r[4]) for r in rows)
        print(f"\n{len(rows)} releases, {total} ids")
        return 0
    hits = registry.find(release=args.release, l0=l0, include_aliases=args.release is not None, **filters)
    if args.status:
        hits = [e for e in hits if e.status == args.status]
    if args.counts:
        counts: dict[str, int] = {}
        for e in hits:
            counts[e.release] = counts.get(e.release, 0) + 1
        print(_table([[k, str(v)] for k, v in counts.items()], ["release", "ids"]))
    else:
        rows = [
            [
                e.release,
                e.sae_id,
                e.kind,
                str(e.layer if e.layer is not None else "-"),
                e.width or "-",
                str(e.l0),
                e.status,
            ]
            for e in hits[: args.limit]
        ]
        print(_table(rows, ["release", "sae_id", "kind", "layer", "width", "L0", "evidence"]))
        if len(hits) > args.limit:
            print(f"... {len(hits) - args.limit} more (use --limit)")
    print(f"\n{len(hits)} matching ids")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    hits = registry.search(text, limit=args.limit)
    if not hits:
        print(f"No artifact matches {text!r}. Try fewer words, or `gemmascope list`.")
        return 1
    rows = [[e.release, e.sae_id, e.kind, str(e.l0), e.neuronpedia_id or "-"] for e in hits]
    print(_table(rows, ["release", "sae_id", "kind", "L0", "neuronpedia"]))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .maintainers.validate import validate

    violations = validate(args.registry_dir)
    for v in violations:
        print(v)
    if violations:
        print(f"\n{len(violations)} violation(s)", file=sys.stderr)
        return 1
    n = (
        sum(registry.release_info(r)["count"] for r in registry.releases())
        if args.registry_dir is None
        else None
    )
    print("registry OK" + (f": {len(registry.releases())} releases, {n} ids" if n else ""))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from ._paths import INDEX_DIR
    from .maintainers import compile_index as _compile

    if args.check:
        want = _compile.render_index(_compile.build_index())
        have = {p.name: p.read_text(encoding="utf-8") for p in INDEX_DIR.glob("*.json")}
        stale = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if stale:
            print(f"compiled index is stale ({len(stale)} files, e.g. {stale[0]}); run `gemmascope compile`")
            return 1
        print("compiled index is up to date")
        return 0
    written = _compile.compile_index()
    print(f"wrote {len(written)} files to {INDEX_DIR}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .download import cli_download

    return cli_download(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(prompt=args.prompt, offline=True if args.offline else None, top_k=args.top_k)


def add_evidence_options(s: argparse.ArgumentParser) -> None:
    """Where ``explain`` / ``dashboard`` find their evidence: the official file, or ``--from DIR``."""
    s.add_argument("--cache-dir", help="Hugging Face cache holding the examples file")
    s.add_argument("--revision")
    s.add_argument("--no-check-shapes", action="store_true", help="accept a width other than the registry's")
    s.add_argument(
        "--from",
        dest="extraction",
        metavar="DIR",
        help="read the merged output of `gemmascope extract`/`merge` in DIR instead of the official file "
        "(any SAE, Gemma Scope 1 included)",
    )


def cmd_explain(args: argparse.Namespace) -> int:
    from .evidence.explain import cli_explain

    return cli_explain(args)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .evidence.dashboard import cli_dashboard

    return cli_dashboard(args)


def cmd_check_hub(args: argparse.Namespace) -> int:
    from .maintainers.hubcheck import cli_check_hub

    return cli_check_hub(args)


def cmd_extract(args: argparse.Namespace) -> int:
    from .extract.run import run_extract
    from .extract.spec import spec_from_args

    run_extract(spec_from_args(args))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .extract.merge import merge

    merge(args.dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gemmascope",
        description="Browse, validate and fetch every Gemma Scope 1 and 2 SAE, transcoder, CLT and crosscoder.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list releases, or the ids matching filters")
    s.add_argument("--release")
    s.add_argument("--model", help="model key or HF id, e.g. gemma-2-2b or google/gemma-3-1b-pt")
    s.add_argument("--site", help="resid_post, attn_out, mlp_out, embedding, transcoder")
    s.add_argument("--kind", help="sae, transcoder, skip_transcoder, clt, crosscoder")
    s.add_argument("--layer", type=bounded_int(0, 1023))
    s.add_argument("--width", help="e.g. 16k or 16384")
    s.add_argument("--l0", help="a number, or small/medium/big")
    s.add_argument("--status", choices=["observed", "expected"])
    s.add_argument("--counts", action="store_true", help="count ids per release instead of listing them")
    s.add_argument("--limit", type=bounded_int(1, 1_000_000), default=200)
    s.add_argument("--repos", action="store_true", help="list the Hugging Face repos and their releases")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", help="every fact about one artifact, with a Python snippet")
    s.add_argument("release")
    s.add_argument("sae_id")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("search", help="find artifacts whose names contain every word")
    s.add_argument("text", nargs="+")
    s.add_argument("--limit", type=bounded_int(1, 1_000_000), default=50)
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("validate", help="check the YAML registry against its schema and rules")
    s.add_argument("--registry-dir", default=None)
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("compile", help="regenerate the compiled index from registry/*.yaml")
    s.add_argument("--check", action="store_true", help="only report whether the index is stale")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("download", help="pre-fetch artifacts into the Hugging Face cache")
    s.add_argument("release")
    s.add_argument("sae_ids", nargs="*")
    s.add_argument("--release-all", action="store_true", help="every id of the release")
    s.add_argument("--yes", action="store_true", help="do not ask before large downloads")
    s.add_argument("--revision")
    s.add_argument("--force-download", action="store_true")
    s.add_argument("--cache-dir")
    s.add_argument("--dry-run", action="store_true", help="print what would be fetched and its size")
    s.add_argument(
        "--examples", action="store_true", help="also fetch examples.safetensors (for explain / dashboard)"
    )
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("demo", help="top features of a prompt (offline: real Gemma 3 270M + synthetic SAE)")
    s.add_argument("--prompt")
    s.add_argument("--offline", action="store_true", help="never try the hub")
    s.add_argument("--top-k", type=bounded_int(1, 10_000), default=5)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "explain", help="top contexts, logit tokens and frequency of features (examples file or --from DIR)"
    )
    s.add_argument("release")
    s.add_argument("sae_id")
    s.add_argument("features", nargs="+", type=int, metavar="FEATURE")
    s.add_argument("-n", "--top", type=int, default=10, help="contexts per feature (default 10)")
    s.add_argument("--before", type=int, default=16, help="tokens shown before the active one")
    s.add_argument("--after", type=int, default=4, help="tokens shown after the active one")
    s.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    add_evidence_options(s)
    s.set_defaults(func=cmd_explain)

    s = sub.add_parser(
        "dashboard", help="write a static, offline feature dashboard (examples file or --from DIR)"
    )
    s.add_argument("release")
    s.add_argument("sae_id")
    s.add_argument("--out", required=True, help="output directory (index.html, index.html#<feature>)")
    s.add_argument("--features", help="only these features: e.g. 0-99,123,4000-4010 (default: all)")
    s.add_argument("-n", "--top", type=int, default=20, help="examples per feature (default 20)")
    add_evidence_options(s)
    s.set_defaults(func=cmd_dashboard)

    s = sub.add_parser("check-hub", help="compare the registry with the hub listings")
    s.add_argument("--repo", action="append", help="limit to this repo id (repeatable)")
    s.add_argument("--shapes", action="store_true", help="also compare safetensors header shapes")
    s.add_argument("--write", action="store_true", help="update registry YAML in place")
    s.add_argument("--neuronpedia", action="store_true", help="also probe Neuronpedia ids")
    s.add_argument("--replay", default=None, help="directory of recorded hub listings (offline)")
    s.add_argument("--registry-dir", default=None)
    s.set_defaults(func=cmd_check_hub)

    from .extract.spec import add_arguments as add_extract_arguments

    s = sub.add_parser("extract", help="Gemma Scope features over a corpus, as Parquet shards (resumable)")
    add_extract_arguments(s)
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("merge", help="merge extract shards; write examples.safetensors per SAE")
    s.add_argument("dir", metavar="DIR")
    s.set_defaults(func=cmd_merge)
    return p


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi], else a usage error that says the range.

    >>> bounded_int(1, 10)("3")
    3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside {lo}..{hi}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gemmascope`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GemmaScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gemmascope list | head`: the reader left; not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
