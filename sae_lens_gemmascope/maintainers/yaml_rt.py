"""Round-trip YAML editing of the registry with ruamel.yaml: comments, quotes and layout are kept.

``load`` and ``dump`` reproduce every registry file byte for byte (a test checks all of them), so
an edit changes only the lines it must. The helpers below make the edits ``gemmascope check-hub
--write`` needs and keep the comment lines that ruamel attaches to the last value of a block where
they belong (a blank line or a full-line comment before the next block stays before that block).

Example:
    >>> doc = load("a: 1\\nfam:\\n  status: expected   # why\\n  x: [1, 2]\\n\\nb: 2\\n")
    >>> set_value(doc["fam"], "status", "observed")
    >>> doc["fam"]["x"].append(3)
    >>> add_key(doc["fam"], "status_exceptions", block_map({"layer_1": "expected"}))
    >>> print(dump(doc), end="")
    a: 1
    fam:
      status: observed   # why
      x: [1, 2, 3]
      status_exceptions:
        layer_1: expected
    <BLANKLINE>
    b: 2
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken


class YamlEditError(ValueError):
    """An edit would not produce the intended document (nothing is written)."""


def round_trip_yaml() -> YAML:
    """A ruamel.yaml instance set up for the registry's style (2-space maps, ``- `` indented by 2)."""
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a long line
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def load(text: str) -> Any:
    """Parse ``text`` into ruamel's commented containers."""
    return round_trip_yaml().load(text)


def dump(data: Any) -> str:
    """Render ``data`` (as returned by :func:`load`, possibly edited) back to text."""
    buf = io.StringIO()
    round_trip_yaml().dump(data, buf)
    return buf.getvalue()


def block_map(items: dict[str, Any]) -> CommentedMap:
    """A new block-style mapping.

    >>> print(dump({"k": block_map({"a": 1})}), end="")
    k:
      a: 1
    """
    m = CommentedMap(items)
    m.fa.set_block_style()
    return m


def flow_map(items: dict[str, Any]) -> CommentedMap:
    """A new one-line mapping whose list values are one-line too: ``{width_16k: [1, 2]}``.

    >>> print(dump({"layer_1": flow_map({"width_16k": [3, 1]})}), end="")
    layer_1: {width_16k: [3, 1]}
    """
    m = CommentedMap()
    for k, v in items.items():
        m[k] = flow_seq(v) if isinstance(v, list) else v
    m.fa.set_flow_style()
    return m


def flow_seq(items: list[Any]) -> CommentedSeq:
    """A new one-line sequence."""
    s = CommentedSeq(items)
    s.fa.set_flow_style()
    return s


def block_seq(items: list[Any]) -> CommentedSeq:
    """A new block sequence (one ``- item`` per line)."""
    s = CommentedSeq(items)
    s.fa.set_block_style()
    return s


def set_value(m: CommentedMap, key: str, value: Any) -> None:
    """Replace the scalar at ``key`` keeping its quoting style and trailing comment.

    >>> doc = load('e: "old"   # c\\n')
    >>> set_value(doc, "e", "new")
    >>> dump(doc)
    'e: "new"   # c\\n'
    """
    old = m[key]
    if isinstance(value, str) and isinstance(old, str) and type(old) is not str:
        value = type(old)(value)  # a quoted scalar stays quoted the same way
    m[key] = value


# -- trailing comment lines --------------------------------------------------------------------------


def _token_slot(node: Any, key: Any) -> tuple[list[Any], int]:
    items = node.ca.items.setdefault(key, [None, None, None, None])
    return items, (2 if isinstance(node, CommentedMap) else 0)


def _leaf_at(node: Any, key: Any) -> tuple[Any, Any]:
    """(container, key) of the last line written for ``node[key]`` (inside a block value)."""
    child = node[key]
    if isinstance(child, CommentedMap | CommentedSeq) and child and not child.fa.flow_style():
        return _leaf_at(child, list(child.keys())[-1] if isinstance(child, CommentedMap) else len(child) - 1)
    return node, key


def _take_tail(node: Any, key: Any) -> str:
    """Cut the lines after the end-of-line comment of ``node[key]`` and return them."""
    items, slot = _token_slot(node, key)
    tok = items[slot]
    if tok is None or "\n" not in tok.value:
        return ""
    cut = tok.value.index("\n") + 1
    value: str = tok.value
    eol, tail = value[:cut], value[cut:]
    if eol.strip():
        tok.value = eol
    else:
        items[slot] = None
    return tail


def _give_tail(node: Any, key: Any, tail: str) -> None:
    """Append comment lines ``tail`` after the line of ``node[key]``."""
    if not tail:
        return
    items, slot = _token_slot(node, key)
    tok = items[slot]
    if tok is None:
        items[slot] = CommentToken("\n" + tail, CommentMark(0), None)
    else:
        tok.value = tok.value + ("" if tok.value.endswith("\n") else "\n") + tail


def indent_of(m: CommentedMap) -> int | None:
    """The column of the keys of a mapping read from a file (None for a new one)."""
    cols = [v[1] for v in m.lc.data.values()] if m.lc.data else []
    return cols[0] if cols else None


def add_key(
    m: CommentedMap,
    key: str,
    value: Any,
    comment: str | None = None,
    before: str | None = None,
    indent: int | None = None,
) -> None:
    """Add ``key: value`` to ``m``: before the sibling ``before`` when given, else at the end.

    Comment lines that followed the old last item (a blank line, a comment about the next block)
    move after the new one. ``comment`` becomes an end-of-line comment three spaces after the
    value (``indent``: the column of the keys of ``m`` when it is a new mapping).
    """
    if key in m:
        raise YamlEditError(f"key {key!r} exists already")
    keys = list(m.keys())
    col = indent if indent is not None else indent_of(m) or 0
    if before is not None and before in keys:
        m.insert(keys.index(before), key, value)
    else:
        m[key] = value
    if comment:
        width = len(dump({key: value}).splitlines()[0])
        m.yaml_add_eol_comment("# " + comment, key, column=col + width + 3)
    if keys and (before is None or before not in keys):
        _give_tail(*_leaf_at(m, key), _take_tail(*_leaf_at(m, keys[-1])))


def append_item(s: CommentedSeq, value: Any) -> None:
    """Append to a block sequence, keeping comment lines that followed its last item after it."""
    s.append(value)
    if len(s) > 1:
        _give_tail(s, len(s) - 1, _take_tail(s, len(s) - 2))


def delete_key(m: CommentedMap, key: str, tail: str = "") -> str:
    """Delete ``key``, keeping the comment lines that followed its block (plus ``tail``).

    They go after the previous sibling (or after the new last item when ``key`` was the last).
    Returns them when ``m`` is left empty, for the caller to place (see ``tail``).
    """
    keys = list(m.keys())
    i = keys.index(key)
    tail = _take_tail(*_leaf_at(m, key)) + tail
    del m[key]
    m.ca.items.pop(key, None)
    if not tail:
        return ""
    rest = [k for k in keys if k != key]
    if not rest:
        return tail
    _give_tail(*_leaf_at(m, rest[i - 1] if i > 0 else rest[-1]), tail)
    return ""


def check_same(text: str, intended: Any) -> None:
    """Raise :class:`YamlEditError` unless ``text`` parses (safely) to ``intended``."""
    import yaml

    if yaml.safe_load(text) != intended:
        raise YamlEditError(
            "the edited YAML does not parse to the intended document; nothing was written. "
            "Edit the file by hand and report this as a bug of sae_lens_gemmascope.maintainers.yaml_rt."
        )
