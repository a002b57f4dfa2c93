"""Read one registry YAML file strictly: every problem is a :class:`RegistryValidationError`.

The registry is hand-written, small (the largest file is under 10 KB) and plain: mappings, lists,
strings and numbers. Anything else is a mistake or an attack, and is refused *before* it can cost
time or silently change data:

=========================  =======================================================================
refused                    why
=========================  =======================================================================
a file over ``MAX_BYTES``  parsing time is bounded by design (checked before reading it whole);
or ``MAX_NODES`` values    so is the number of values, counted while parsing
bytes that are not UTF-8   the line of the first bad byte is named
control characters         a tab, a NUL or a trailing newline inside a folder name would pass
                           ``^...$`` patterns; written escapes (``"a\\n"``) are refused as well
anchors and aliases        ``&a`` / ``*a`` can blow a few lines up into billions of nodes
                           ("billion laughs"); refused while parsing, before any node is built
duplicate keys             YAML keeps the last one and silently drops the first
NaN and infinities         they pass every ``minimum``/``maximum`` of the schema
a top level that is not a  every registry file is one mapping
mapping
=========================  =======================================================================

Each message names the file, the line and the fix.

Example:
    >>> load_text("a: 1\\nb: [x, y]\\n", "demo.yaml")
    {'a': 1, 'b': ['x', 'y']}
    >>> load_text("a: 1\\na: 2\\n", "demo.yaml")
    Traceback (most recent call last):
    ...
    sae_lens_gemmascope.maintainers.strict_yaml.RegistryFileError: demo.yaml:2: duplicate key 'a' (first at line 1). Keep one of them: YAML would silently drop the first.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from ..errors import RegistryValidationError

MAX_BYTES = 256 * 1024  # per file; the shipped files are under 10 KB
MAX_TOTAL_BYTES = 2 * 1024 * 1024  # the whole registry directory (today about 90 KB)
MAX_NODES = 10_000  # scalars, mappings and lists in one file (the largest has about 1,150)
MAX_TOTAL_NODES = 30_000  # in the whole registry (today about 8,800)

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # all C0/C1 but \t and \n
_TAB_OR_CR = re.compile(r"[\t\r]")
_ANY_BREAK = re.compile(r"[\t\r\n]")


class RegistryFileError(RegistryValidationError):
    """A registry file that cannot be read as plain YAML; ``file`` and ``line`` (0 = whole file)."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")
        self.file, self.line, self.problem = file, line, message


class _Problem(Exception):
    """Raised inside the loader; turned into a RegistryValidationError that names the file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _line(node_or_event: Any) -> int:
    mark = getattr(node_or_event, "start_mark", None)
    return int(mark.line) + 1 if mark is not None else 0


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys, control characters in strings and non-finite floats."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _Problem(_line(key_node), "merge keys ('<<') are not allowed. Write the keys out")
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise _Problem(_line(key_node), "a key must be a plain scalar") from None
                if key in first:
                    raise _Problem(
                        _line(key_node),
                        f"duplicate key {key!r} (first at line {first[key]}). "
                        "Keep one of them: YAML would silently drop the first",
                    )
                first[key] = _line(key_node)
        return dict(super().construct_mapping(node, deep=deep))

    def construct_yaml_str(self, node: ScalarNode) -> str:
        value = str(self.construct_scalar(node))
        bad = _CONTROL.search(value) or _ANY_BREAK.search(value)
        if bad:
            raise _Problem(
                _line(node),
                f"string {value[:60]!r} holds the control character {bad.group(0)!r}. "
                "Remove it (names, paths and evidence are printable text on one line)",
            )
        return value

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value = float(super().construct_yaml_float(node))
        if not math.isfinite(value):
            raise _Problem(_line(node), f"{node.value!r} is not a finite number. Write a plain number")
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


class NodeBudget:
    """How many more YAML values (scalars, mappings, lists) the files being read may hold."""

    def __init__(self, total: int = MAX_TOTAL_NODES) -> None:
        self.remaining = total


def _scan_events(text: str, budget: NodeBudget | None) -> None:
    """One pass over the parser's events (linear, stops early): no anchor, no alias, bounded size."""
    n = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent):
            raise _Problem(_line(event), f"alias '*{event.anchor}' is not allowed. Write the value out")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Problem(_line(event), f"anchor '&{anchor}' is not allowed. Write the value out")
        if isinstance(event, yaml.ScalarEvent | yaml.MappingStartEvent | yaml.SequenceStartEvent):
            n += 1
            if n > MAX_NODES:
                raise _Problem(
                    _line(event),
                    f"more than {MAX_NODES} values in one file. Registry files are small; "
                    "check what was written into it",
                )
            if budget is not None:
                budget.remaining -= 1
                if budget.remaining < 0:
                    raise _Problem(
                        _line(event),
                        f"the registry holds more than {MAX_TOTAL_NODES} values in all. "
                        "Remove the files that do not belong there",
                    )


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise _Problem(line, f"byte 0x{data[err.start]:02x} is not UTF-8. Save the file as UTF-8") from None


def _check_text(text: str) -> None:
    for i, row in enumerate(text.split("\n"), start=1):
        bad = _CONTROL.search(row) or _TAB_OR_CR.search(row)
        if bad:
            raise _Problem(
                i,
                f"control character {bad.group(0)!r} in the text. "
                "Remove it (indent with spaces; no tabs, carriage returns or invisible characters)",
            )


def load_text(text: str | bytes, name: str, budget: NodeBudget | None = None) -> dict[str, Any]:
    """Parse one registry document strictly; ``name`` is the file named in errors."""
    try:
        if isinstance(text, bytes):
            if len(text) > MAX_BYTES:
                raise _Problem(0, _too_big(len(text)))
            text = _decode(text)
        _check_text(text)
        _scan_events(text, budget)
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _Problem as p:
        raise RegistryFileError(name, p.line, f"{p}.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        line = mark.line + 1 if mark is not None else 0
        raise RegistryFileError(
            name, line, f"not valid YAML ({problem}). Fix the syntax at that line."
        ) from None
    if not isinstance(doc, dict):
        raise RegistryFileError(
            name, 1, f"the file must be one mapping (key: value lines), not {type(doc).__name__}."
        )
    return doc


def _too_big(n: int) -> str:
    return (
        f"{n} bytes is over the limit of {MAX_BYTES} bytes for one registry file. "
        "Registry files are small hand-written YAML; split it or check what was written into it"
    )


def load_file(path: str | os.PathLike[str], budget: NodeBudget | None = None) -> dict[str, Any]:
    """Read and parse one registry file strictly (its size is checked before it is read).

    >>> from sae_lens_gemmascope._paths import registry_dir
    >>> load_file(registry_dir() / "gemma-scope-27b-pt-res.yaml")["repo_id"]
    'google/gemma-scope-27b-pt-res'
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise RegistryFileError(str(p), 0, f"{_too_big(size)}.")
        with open(p, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise RegistryFileError(
            str(p), 0, f"cannot be read ({err.strerror or err}). Check that it is a readable file."
        ) from None
    return load_text(data, str(p), budget)


def check_total_size(paths: list[Path]) -> None:
    """Refuse a file over ``MAX_BYTES``, then YAML files that add up to more than ``MAX_TOTAL_BYTES``."""
    total = 0
    for p in paths:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise RegistryFileError(str(p), 0, f"{_too_big(size)}.")
        total += size
    if total > MAX_TOTAL_BYTES:
        where = str(paths[0].parent) if paths else "registry"
        raise RegistryFileError(
            where,
            0,
            f"the registry's YAML files add up to {total} bytes, over the limit of "
            f"{MAX_TOTAL_BYTES}. Remove the files that do not belong there.",
        )
