"""Format-preserving write-back of a release's ``status:`` block.

Text in, text out, and pure. ruamel.yaml's round-trip parser only *locates*
the top-level ``status`` key and the key after it; the new block is spliced
into the original text by line, so every byte a human wrote outside
``status:`` stays as it was: comments, key order, quoting, block scalars,
flow style, blank lines, anchors, odd indentation, CRLF line endings, a
trailing ``...``. Comment and blank lines just before the next top-level key
belong to that key, not to the status block, and are kept too.
"""

from __future__ import annotations

import io
import re
from typing import Any, Mapping

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

STATUS_ORDER = (
    "phase", "message", "stable", "canary", "weight", "step", "failedChecks",
    "startedAt", "stepStartedAt", "waitingFor", "pausedPhase", "lastAnalysis",
    "retiring", "rolledBack", "drift", "observedCommit",
)
_DOC_END = re.compile(r"^(\.\.\.|---)\s*$")


class StatusEditError(ValueError):
    """The file cannot be edited safely (not a YAML mapping, unparseable)."""


def _ordered(status: Mapping[str, Any]) -> dict[str, Any]:
    keys = sorted(status, key=lambda k: (STATUS_ORDER.index(k) if k in STATUS_ORDER else len(STATUS_ORDER), k))
    return {k: status[k] for k in keys}


# Characters that make a plain scalar ambiguous to some YAML 1.1 readers inside a flow collection
# (PyYAML refuses ``{query: x?token=***}``, which ruamel reads): such strings are written
# double-quoted, so every common parser (PyYAML, Go's yaml, ruamel) reads the status Sluice writes.
_AMBIGUOUS = frozenset("?*&!#,[]{}|>%@`\"'")


def _quoted(value: Any) -> Any:
    if isinstance(value, str):
        risky = _AMBIGUOUS.intersection(value) or ": " in value or value != value.strip()
        return DoubleQuotedScalarString(value) if risky else value
    if isinstance(value, Mapping):
        return {k: _quoted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_quoted(v) for v in value]
    return value


def render_status(status: Mapping[str, Any], newline: str = "\n") -> str:
    """The ``status:`` block as YAML text (block style, stable key order)."""
    y = YAML(typ="rt")
    y.default_flow_style = None   # short leaf maps ({version, image}) inline, the rest as blocks
    y.width = 4096
    block = CommentedMap(_ordered(_quoted(status)))
    block.fa.set_block_style()     # the status itself always as a block, even when small
    buf = io.StringIO()
    y.dump({"status": block}, buf)
    text = buf.getvalue()
    return text.replace("\n", newline) if newline != "\n" else text


def _span(text: str) -> tuple[int, int, bool]:
    """(first line, end line exclusive, found) of the status block, 0-based lines."""
    y = YAML(typ="rt")
    try:
        doc = y.load(text)
    except YAMLError as exc:
        raise StatusEditError(f"cannot parse the file to edit its status: {exc}") from None
    if not isinstance(doc, dict):
        raise StatusEditError("the file is not a YAML mapping")
    lines = text.splitlines(keepends=True)
    keys = list(doc)
    if "status" not in doc:
        end = len(lines)
        while end > 0 and (_DOC_END.match(lines[end - 1]) or not lines[end - 1].strip()):
            end -= 1
        return end, end, False
    start = doc.lc.key("status")[0]
    idx = keys.index("status")
    if idx + 1 < len(keys):
        end = doc.lc.key(keys[idx + 1])[0]
    else:
        end = len(lines)
        while end > start + 1 and _DOC_END.match(lines[end - 1]):
            end -= 1
    # keep the comments/blank lines that lead into the next key (or close the file)
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")
                               and not lines[end - 1].startswith((" ", "\t"))):
        end -= 1
    return start, end, True


def set_status(text: str, status: Mapping[str, Any] | None) -> str:
    """``text`` with its status block replaced by ``status`` (or removed when None)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    start, end, found = _span(text)
    lines = text.splitlines(keepends=True)
    block = render_status(status, newline) if status is not None else ""
    before, after = lines[:start], lines[end:]
    if not found and before and not before[-1].endswith(("\n", "\r")):
        before[-1] += newline
    return "".join(before) + block + "".join(after)


def status_span(text: str) -> tuple[int, int] | None:
    """1-based inclusive line range of the status block, None when absent."""
    start, end, found = _span(text)
    return (start + 1, end) if found else None
