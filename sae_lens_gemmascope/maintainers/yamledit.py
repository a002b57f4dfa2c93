"""Edit the registry YAML in place, line by line, keeping its layout and comments.

The registry files are hand-written: block mappings, short flow collections on one line
(``layer_3: {width_16k: [14, 28, 59, 142, 315]}``), block sequences and trailing comments. A
round-trip YAML library re-flows some of that, so this module edits only the lines it must and
leaves every other byte alone. It supports exactly the edits ``gemmascope check-hub --write`` makes:

* replace a scalar (``status: expected`` -> ``status: observed``), keeping the trailing comment;
* add, replace or delete one item of a block mapping (``status_exceptions``), creating or removing
  the mapping itself when needed;
* append an item to a block sequence (``extra_folders``), creating it when needed;
* rewrite the flow value of one key (a GS1 ``layer_N: {width_W: [...]}`` line).

A path is a tuple of keys; a ``("name", X)`` pair selects the sequence item whose ``name`` is ``X``.
Callers check the result with :func:`check_same` (the edited text must parse to the intended data).

Example:
    >>> ed = YamlEditor("a: 1\\nfam:\\n  status: expected   # why\\n  x: [1, 2]\\n")
    >>> ed.set_scalar(("fam", "status"), "observed")
    >>> ed.set_flow(("fam", "x"), [1, 2, 3])
    >>> ed.set_map_item(("fam", "status_exceptions"), "layer_1", "expected", comment="not seen")
    >>> print(ed.text(), end="")
    a: 1
    fam:
      status: observed   # why
      x: [1, 2, 3]
      status_exceptions:
        layer_1: expected   # not seen
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

PathSeg = str | tuple[str, str]

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "none", "y", "n", "~"}


class YamlEditError(ValueError):
    """An edit could not be located or would not produce the intended document."""


def render_scalar(value: Any) -> str:
    """A scalar as it would be written by hand: plain when unambiguous, else JSON-quoted.

    >>> render_scalar(12), render_scalar("observed"), render_scalar("a: b"), render_scalar(True)
    ('12', 'observed', '"a: b"', 'true')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    s = str(value)
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS:
        return s
    return json.dumps(s, ensure_ascii=False)


def render_flow(value: Any) -> str:
    """A one-line flow rendering: ``{k: [1, 2], j: x}``.

    >>> render_flow({"width_16k": [13, 25], "width_65k": [11]})
    '{width_16k: [13, 25], width_65k: [11]}'
    """
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render_scalar(k)}: {render_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_flow(v) for v in value) + "]"
    return render_scalar(value)


def split_comment(text: str) -> tuple[str, str]:
    """Split ``value   # comment`` into (value, "   # comment"); '#' inside quotes is kept.

    >>> split_comment('"a # b"  # c')
    ('"a # b"', '  # c')
    """
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            j = i
            while j > 0 and text[j - 1] in " \t":
                j -= 1
            return text[:j], text[j:]
    return text.rstrip(), text[len(text.rstrip()) :]


def check_same(text: str, intended: Any) -> None:
    """Raise :class:`YamlEditError` unless ``text`` parses to ``intended``."""
    got = yaml.safe_load(text)
    if got != intended:
        raise YamlEditError(
            "the edited YAML does not parse to the intended document; nothing was written. "
            "Edit the file by hand and report this as a bug of sae_lens_gemmascope.maintainers.yamledit."
        )


class YamlEditor:
    """Line-level editor of one YAML document (see the module docstring)."""

    def __init__(self, text: str) -> None:
        self.lines: list[str] = text.splitlines(keepends=True)
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"

    def text(self) -> str:
        """The current document."""
        return "".join(self.lines)

    # -- locating -------------------------------------------------------------------------------

    def _is_content(self, i: int) -> bool:
        s = self.lines[i].strip()
        return bool(s) and not s.startswith("#")

    def _key_col(self, i: int) -> int:
        line = self.lines[i]
        ind = len(line) - len(line.lstrip(" "))
        return ind + 2 if line.lstrip(" ").startswith("- ") else ind

    def _key_text(self, i: int) -> str:
        s = self.lines[i].lstrip(" ")
        return s[2:] if s.startswith("- ") else s

    def _is_dash(self, i: int) -> bool:
        return self.lines[i].lstrip(" ").startswith("- ")

    def _region_end(self, i: int) -> int:
        """One past the last content line belonging to the node that starts at line ``i``."""
        col = self._key_col(i)
        dash = self._is_dash(i)
        end = i + 1
        for j in range(i + 1, len(self.lines)):
            if not self._is_content(j):
                continue
            cj = self._key_col(j)
            if cj > col or (dash and cj == col and not self._is_dash(j)):
                end = j + 1
                continue
            break
        return end

    def _children(self, start: int, end: int) -> list[int]:
        """Content lines in [start, end) at the smallest key column (the direct children)."""
        idx = [j for j in range(start, end) if self._is_content(j)]
        if not idx:
            return []
        col = min(self._key_col(j) for j in idx)
        return [j for j in idx if self._key_col(j) == col]

    def _find_in(self, start: int, end: int, seg: PathSeg) -> int | None:
        for j in self._children(start, end):
            kt = self._key_text(j)
            if isinstance(seg, tuple):
                k, v = seg
                if self.lines[j].lstrip(" ").startswith("- ") and re.match(
                    rf"{re.escape(k)}:\s*{re.escape(render_scalar(v))}\s*(#.*)?$", kt.strip()
                ):
                    return j
            elif re.match(rf"{re.escape(seg)}:(\s|$)", kt):
                return j
        return None

    def _body(self, i: int) -> tuple[int, int]:
        """The lines holding the value of the node at line ``i`` (the item itself for a dash line)."""
        return (i if self._is_dash(i) else i + 1), self._region_end(i)

    def find(self, path: tuple[PathSeg, ...]) -> int:
        """Line index of the key at ``path``; raises :class:`YamlEditError` when absent."""
        got = self._find(path)
        if got is None:
            raise YamlEditError(f"key {'/'.join(map(str, path))} not found")
        return got

    def _find(self, path: tuple[PathSeg, ...]) -> int | None:
        start, end = 0, len(self.lines)
        line = None
        for seg in path:
            line = self._find_in(start, end, seg)
            if line is None:
                return None
            start, end = self._body(line)
        return line

    def has(self, path: tuple[PathSeg, ...]) -> bool:
        """True when the key exists."""
        return self._find(path) is not None

    # -- editing --------------------------------------------------------------------------------

    def _replace_value(self, i: int, value_text: str) -> None:
        line = self.lines[i].rstrip("\n")
        m = re.match(r"^(\s*(?:- )?[^:#]+:)(\s*)(.*)$", line)
        if m is None:
            raise YamlEditError(f"line {i + 1} is not a 'key: value' line: {line!r}")
        _, comment = split_comment(m.group(3))
        self.lines[i] = f"{m.group(1)} {value_text}{comment}\n"

    def set_scalar(self, path: tuple[PathSeg, ...], value: Any) -> None:
        """Replace the scalar value of an existing key, keeping its trailing comment."""
        self._replace_value(self.find(path), render_scalar(value))

    def set_flow(self, path: tuple[PathSeg, ...], value: Any) -> None:
        """Replace the value of an existing one-line key with a flow rendering of ``value``."""
        i = self.find(path)
        if self._region_end(i) != i + 1:
            raise YamlEditError(f"{'/'.join(map(str, path))} is a block node, not a one-line value")
        self._replace_value(i, render_flow(value))

    def _insert_child(self, parent: int | None, key_line: str, before: str | None = None) -> int:
        """Insert ``key_line`` (no indentation) as a child of the node at ``parent`` (None = root)."""
        if parent is None:
            start, end, col = 0, len(self.lines), 0
        else:
            start, end = self._body(parent)
            col = self._key_col(parent) + (0 if self._is_dash(parent) else 2)
        kids = self._children(start, end)
        if kids:
            col = self._key_col(kids[0])
            end = max(self._region_end(k) for k in kids)
        pos = end
        if before is not None:
            for j in kids:
                if re.match(rf"{re.escape(before)}:(\s|$)", self._key_text(j)):
                    pos = j
                    while pos > start and self.lines[pos - 1].strip().startswith("#"):
                        pos -= 1
                    break
        self.lines.insert(pos, " " * col + key_line + "\n")
        return pos

    def set_map_item(
        self,
        map_path: tuple[PathSeg, ...],
        key: str,
        value: Any,
        comment: str | None = None,
        before: str | None = None,
        flow: bool = False,
    ) -> None:
        """Set ``key: value`` inside the block mapping at ``map_path`` (created if absent).

        A new mapping is appended at the end of its parent; a new item goes before ``before`` when
        that sibling exists, else at the end. ``flow`` renders a list/dict value on one line.
        """
        text = render_flow(value) if flow else render_scalar(value)
        tail = f"   # {comment}" if comment else ""
        m = self._find(map_path)
        if m is None:
            parent = self._find(map_path[:-1]) if len(map_path) > 1 else None
            pos = self._insert_child(parent, f"{map_path[-1]}:")
            indent = self._key_col(pos) + 2
            self.lines.insert(pos + 1, " " * indent + f"{render_scalar(key)}: {text}{tail}\n")
            return
        inline, _ = split_comment(self.lines[m].rstrip("\n").split(":", 1)[1])
        if inline.strip():
            raise YamlEditError(f"{'/'.join(map(str, map_path))} is written inline; edit it by hand")
        i = self._find_in(*self._body(m), key)
        if i is not None:
            self._replace_value(i, text)
            return
        self._insert_child(m, f"{render_scalar(key)}: {text}{tail}", before=before)

    def delete_map_item(self, map_path: tuple[PathSeg, ...], key: str) -> None:
        """Delete ``key`` from the block mapping at ``map_path``; an emptied mapping is removed too."""
        m = self.find(map_path)
        i = self._find_in(*self._body(m), key)
        if i is None:
            raise YamlEditError(f"{'/'.join(map(str, map_path))} has no key {key!r}")
        del self.lines[i : self._region_end(i)]
        start, end = self._body(m)
        if not any(self._is_content(j) for j in range(start, end)):
            del self.lines[m:end]

    def append_seq_item(self, seq_path: tuple[PathSeg, ...], value: Any, comment: str | None = None) -> None:
        """Append ``- value`` to the block sequence at ``seq_path`` (created at the end of its parent)."""
        tail = f"   # {comment}" if comment else ""
        s = self._find(seq_path)
        if s is None:
            parent = self._find(seq_path[:-1]) if len(seq_path) > 1 else None
            pos = self._insert_child(parent, f"{seq_path[-1]}:")
            indent = self._key_col(pos) + 2
            self.lines.insert(pos + 1, " " * indent + f"- {render_scalar(value)}{tail}\n")
            return
        start, end = self._body(s)
        items = [j for j in range(start, end) if self._is_content(j)]
        if not items:
            raise YamlEditError(f"{'/'.join(map(str, seq_path))} is written inline; edit it by hand")
        indent = len(self.lines[items[0]]) - len(self.lines[items[0]].lstrip(" "))
        self.lines.insert(end, " " * indent + f"- {render_scalar(value)}{tail}\n")
