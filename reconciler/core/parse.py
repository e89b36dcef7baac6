"""Hostile-input-safe YAML parsing with positions.

Two parsers, each where it is best:

- The fast path (every file, every pass) is libyaml through PyYAML's C
  loader (PyYAML already comes with the kubernetes client): about 15x faster
  than ruamel.yaml's pure-Python round-trip parser, which would cost ~5 s per
  1,000 releases. Before anything is constructed, the event stream is
  scanned without recursion: one document only, nesting depth bounded,
  anchors/aliases counted as if expanded (billion laughs), so nothing
  hostile reaches a recursive composer.
  Documents without anchors (nearly all) are then built by a plain tree
  walk that also finds duplicate keys; anything unusual (tags, merge keys,
  aliases) goes through PyYAML's own constructor.
- Positions (``locate``) use ruamel.yaml round-trip mode, only for files
  that have problems: it knows the line and column of every key and value.

Every failure is a ``YamlProblem`` with a 1-based line and column and a
message a person can act on; nothing here raises anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import re

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError as RuamelError

MAX_BYTES = 1 << 20          # a release spec is a few KB; 1 MiB leaves room, bounds memory
MAX_DEPTH = 64               # real specs nest ~10 deep
MAX_NODES = 100_000          # nodes after alias expansion: stops "billion laughs"

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """libyaml with YAML 1.2 core-schema scalars, as ruamel.yaml (our writer) reads
    them: ``yes``/``no``/``on``/``off`` and dates stay strings, so what Sluice
    writes back means the same when read again."""

    yaml_implicit_resolvers: dict = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        """PyYAML's resolve without its path resolvers (none are registered): the C
        composer calls it for every node, so it is a good part of the parse."""
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in self.yaml_implicit_resolvers.get(value[:1], ()):
                    if regexp.match(value):
                        return tag
            return self.DEFAULT_SCALAR_TAG
        return self.DEFAULT_SEQUENCE_TAG if kind is yaml.SequenceNode else self.DEFAULT_MAPPING_TAG


for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))


def _int_core(loader: Any, node: Any) -> int:
    """YAML 1.2 core ints, as ruamel.yaml reads them: ``0080`` is 80 (PyYAML's 1.1
    constructor takes a leading 0 as octal and fails on it), ``0o17`` and ``0x1f``."""
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _int_core)


@dataclass(frozen=True)
class YamlProblem(Exception):
    """A file that is not acceptable YAML, with where and why."""

    message: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.line}:{self.col}: {self.message}"


def _pos(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def decode(data: bytes, limit: int = MAX_BYTES) -> str:
    """Bytes to text, refusing oversize, NUL, non-UTF-8 and tab indentation."""
    if len(data) > limit:
        raise YamlProblem(f"file is larger than the {limit // 1024} KiB limit for a spec")
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _pos(data[:nul].decode("utf-8", "replace"), nul)
        raise YamlProblem("NUL byte: this is a binary file, not YAML", line, col)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8", "replace")
        line, col = _pos(good, len(good))
        raise YamlProblem(f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded", line, col) from None
    text = text.removeprefix("\ufeff")
    if "\t" not in text:   # the common case: no line to look at
        return text
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.lstrip(" ")
        if stripped.startswith("\t"):
            raise YamlProblem("tab used for indentation: YAML needs spaces", lineno, len(raw) - len(stripped) + 1)
    return text


def _scan(events: Iterable[Any]) -> None:
    """Walk the event stream once: one document, bounded depth and expanded size."""
    depth = 0
    documents = 0
    anchors: dict[str, int] = {}
    # stack of [anchor, nodes-inside] for open collections
    stack: list[list[Any]] = [[None, 0]]
    for ev in events:
        if isinstance(ev, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise YamlProblem("more than one YAML document: put one Release per file",
                                  ev.start_mark.line + 1, ev.start_mark.column + 1)
        elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblem(f"nesting deeper than {MAX_DEPTH} levels",
                                  ev.start_mark.line + 1, ev.start_mark.column + 1)
            stack.append([ev.anchor, 1])
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, size = stack.pop()
            if anchor:
                anchors[anchor] = size
            stack[-1][1] += size
        elif isinstance(ev, yaml.ScalarEvent):
            if ev.anchor:
                anchors[ev.anchor] = 1
            stack[-1][1] += 1
        elif isinstance(ev, yaml.AliasEvent):
            stack[-1][1] += anchors.get(ev.anchor, 1)
        if stack[-1][1] > MAX_NODES or stack[0][1] > MAX_NODES:
            mark = ev.start_mark
            raise YamlProblem(f"document expands to more than {MAX_NODES} nodes (anchor/alias bomb?)",
                              mark.line + 1, mark.column + 1)


def _check_duplicates(node: yaml.Node) -> None:
    """Duplicate mapping keys are an error (PyYAML keeps the last silently)."""
    seen: set[int] = set()
    todo = [node]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, yaml.MappingNode):
            keys: dict[Any, Any] = {}
            for key, value in cur.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        first = keys[key.value]
                        raise YamlProblem(
                            f"duplicate key {key.value!r} (first at line {first.start_mark.line + 1})",
                            key.start_mark.line + 1, key.start_mark.column + 1)
                    keys[key.value] = key
                todo.append(key)
                todo.append(value)
        elif isinstance(cur, yaml.SequenceNode):
            todo.extend(cur.value)


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
# the scalar constructors of the plain data a spec holds; any other tag takes the full constructor
_SCALARS = {tag: _Loader.yaml_constructors[tag] for tag in (
    "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null")}


class _Unusual(Exception):
    """A node the plain builder leaves to PyYAML's constructor (a tag, a merge key, a non-scalar key, a duplicate)."""


def _plain(loader: Any, node: yaml.Node) -> Any:
    """The plain data of ``node`` (a tree: no aliases), as PyYAML's constructor would
    build it, ~4x faster: no per-node bookkeeping. Raises _Unusual for anything but
    maps, sequences and the core scalars, so PyYAML's constructor and its messages
    keep every other case."""
    if node.__class__ is yaml.ScalarNode:
        if node.tag == _STR:
            return node.value
        make = _SCALARS.get(node.tag)
        if make is None:
            raise _Unusual
        return make(loader, node)
    if node.__class__ is yaml.MappingNode and node.tag == _MAP:
        out: dict[Any, Any] = {}
        written: set[str] = set()   # keys as written, as _check_duplicates compares them
        for key_node, value_node in node.value:
            if key_node.__class__ is not yaml.ScalarNode or key_node.value in written:
                raise _Unusual   # a duplicate: _check_duplicates words it
            written.add(key_node.value)
            key = _plain(loader, key_node)
            if key in out:
                raise _Unusual   # 1 and 01: PyYAML keeps the last
            out[key] = _plain(loader, value_node)
        return out
    if node.__class__ is yaml.SequenceNode and node.tag == _SEQ:
        return [_plain(loader, item) for item in node.value]
    raise _Unusual


_DEEP_INDENT = re.compile(rb"\n {100,}\S")


def _needs_scan(data: bytes) -> bool:
    """Could this file be hostile in a way only the event scan catches? A file
    with no anchor, no second document, few brackets and shallow indentation
    cannot nest deeper than the limit or expand aliases: most specs skip it."""
    return (b"&" in data or len(data) > 65536 or b"\n---" in data or b"\n..." in data
            or data.count(b"[") + data.count(b"{") > 48 or _DEEP_INDENT.search(data) is not None)


def parse(data: bytes, *, limit: int = MAX_BYTES) -> Any:
    """Plain data of a single-document YAML file, or raise YamlProblem."""
    text = decode(data, limit)
    try:
        if _needs_scan(data):
            _scan(yaml.parse(text, Loader=_Loader))
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise YamlProblem("empty file: expected a Release document")
            if b"&" not in data:   # no anchor, so no alias: the node graph is a tree
                try:
                    return _plain(loader, node)
                except _Unusual:
                    pass
            _check_duplicates(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlProblem(f"YAML syntax: {what}", line, col) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML syntax: {exc}") from None
    except RecursionError:
        raise YamlProblem("YAML nesting too deep") from None
    except (ValueError, TypeError, AttributeError) as exc:   # an explicit tag it cannot hold: !!int abc
        raise YamlProblem(f"YAML value: {exc}") from None


class Locator:
    """Line and column of any key or value, from a round-trip parse.

    Built only for files with problems. ``locate(path)`` walks the path as
    far as it exists and returns the position of the deepest node reached:
    the offending value when it exists, else the key that holds it, else the
    mapping where it is missing.
    """

    def __init__(self, text: str):
        yml = YAML(typ="rt")
        yml.allow_duplicate_keys = True
        try:
            self.doc = yml.load(text)
        except (RuamelError, RecursionError):
            self.doc = None

    def locate(self, path: tuple[Any, ...], *, key: bool = False) -> tuple[int, int]:
        node = self.doc
        pos = (1, 1)
        if node is not None and hasattr(node, "lc"):
            pos = (node.lc.line + 1, node.lc.col + 1)
        for i, part in enumerate(path):
            lc = getattr(node, "lc", None)
            if lc is None:
                break
            last = i == len(path) - 1
            try:
                if isinstance(node, dict) and part in node:
                    line, col = lc.key(part) if (key and last) else lc.value(part)
                    if not (key and last) and not hasattr(node[part], "lc"):
                        line, col = lc.value(part)
                    elif not (key and last):
                        # a mapping/sequence value: point at its key, which reads better
                        line, col = lc.key(part)
                    pos = (line + 1, col + 1)
                    node = node[part]
                elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                    line, col = lc.item(part)
                    pos = (line + 1, col + 1)
                    node = node[part]
                else:
                    break
            except (KeyError, IndexError, TypeError):
                break
        return pos
