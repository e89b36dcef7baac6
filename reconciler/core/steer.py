"""Steering edits a person would make by hand: set one key under ``spec:``.

Pure text in, text out, touching one line (or inserting one): the rest of
the file stays byte for byte. Used by ``sluice pause|resume|abort|approve|retry``.
"""

from __future__ import annotations

import json
import re


class SteerError(ValueError):
    pass


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def set_spec_key(text: str, key: str, value) -> str:
    """``text`` with ``spec.<key>: <value>`` set (block-style ``spec:`` only)."""
    nl = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if re.match(r"spec:\s*(#.*)?$", l.rstrip("\r\n"))), None)
    if start is None:
        raise SteerError("no block-style top-level 'spec:' to edit; edit the file by hand")
    indent = None
    for i in range(start + 1, len(lines)):
        raw = lines[i].rstrip("\r\n")
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        width = len(raw) - len(raw.lstrip(" "))
        if width == 0:
            break
        if indent is None:
            indent = width
        if width == indent and re.match(rf"\s*{re.escape(key)}\s*:", raw):
            comment = re.search(r"\s+#.*$", raw)
            ending = lines[i][len(raw):]   # the line's own end: none on a last line without a newline
            lines[i] = f"{' ' * indent}{key}: {_scalar(value)}{comment.group(0) if comment else ''}{ending}"
            return "".join(lines)
    indent = indent or 2
    if not lines[start].endswith(("\n", "\r")):   # 'spec:' is the last line, without a newline: keep it so
        lines[start] += nl
        nl = ""
    lines.insert(start + 1, f"{' ' * indent}{key}: {_scalar(value)}{nl}")
    return "".join(lines)
