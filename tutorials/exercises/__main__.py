"""``python -m tutorials.exercises check 3`` / ``check 1 2`` / ``check all`` (``--solutions``, ``--module PATH``).

Exit status 0 only when every selected check passes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of the exercise checker."""
    parser = argparse.ArgumentParser(
        prog="python -m tutorials.exercises",
        description="Check the Gemma Scope 2 exercises against the reference solutions on real Gemma 3 270M inputs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check exercises: `check 3`, `check 1 2`, `check all`")
    check.add_argument("which", nargs="*", default=["all"], help="exercise numbers, or 'all' (the default)")
    group = check.add_mutually_exclusive_group()
    group.add_argument("--solutions", action="store_true", help="check solutions.py instead of exercises.py")
    group.add_argument("--module", metavar="PATH", help="check the functions of another Python file")
    sub.add_parser("list", help="list the exercises")
    args = parser.parse_args(argv)

    from .checks import EXERCISES, parse_selection, run_checks

    if args.command == "list":
        for ex in EXERCISES.values():
            print(f"{ex.number}. {ex.title}  ({', '.join(ex.functions)})")
        return 0
    try:
        parse_selection(args.which)
    except ValueError as e:
        parser.error(str(e))
    return run_checks(args.which, args.module, solutions=args.solutions)


if __name__ == "__main__":
    sys.exit(main())
