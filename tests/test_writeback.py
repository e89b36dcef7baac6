"""A status write changes only lines inside ``status:``, whatever the style of
the rest of the file; writes are idempotent; a mangled status is replaced."""

import difflib

import pytest

from reconciler.core.parse import parse
from reconciler.core.writeback import StatusEditError, set_status, status_span

STATUS = {"phase": "Progressing", "stable": {"version": "v1", "image": "r:1"},
          "canary": {"version": "v2", "image": "r:2"}, "weight": 30, "step": 3, "failedChecks": 0,
          "stepStartedAt": "2026-11-22T10:00:00Z",
          "lastAnalysis": {"at": "2026-11-22T10:01:00Z",
                           "results": [{"name": "request-success-rate", "value": 99.92, "min": 99, "ok": True}]}}

STYLES = {
    "comments everywhere": """\
# Reviews service   (header comment)
apiVersion: sluice.dev/v1alpha1  # trailing
kind: Release
metadata:
  # the name
  name: reviews
  namespace: bookinfo
spec:
  paused: false   # keep going
status:
  phase: Idle     # old
  # a comment a human left inside status
  weight: 0
""",
    "block scalars and flow maps": """\
kind: Release
spec:
  note: |
    line one
      indented line two

  folded: >-
    folded text
    continues
  service: {name: reviews, port: 9080, hosts: [a, "b"]}
  list: [1, 2, 3]
status: {phase: Idle}
""",
    "odd indentation": """\
kind:    Release
spec:
    service:
          name: reviews
          port: 9080
    template:
     containers:
     -   name: reviews
status:
      phase: Idle
""",
    "CRLF line endings": "kind: Release\r\nspec:\r\n  a: 1  # c\r\nstatus:\r\n  phase: Idle\r\n",
    "trailing document end": "---\nkind: Release\nspec:\n  a: 'single'\n  b: \"double\"\nstatus:\n  phase: Idle\n...\n",
    "anchors and aliases": """\
kind: Release
defaults: &defaults
  port: 9080
spec:
  service:
    <<: *defaults
    name: reviews
status:
  phase: Idle
""",
    "no status yet": "kind: Release\nspec:\n  a: 1\n\n# closing comment\n",
    "no status, no final newline": "kind: Release\nspec:\n  a: 1",
    "status in the middle": """\
kind: Release
status:
  phase: Idle
  weight: 5

# owner: team-a
spec:
  a: 1
metadata: {name: x}
""",
}


def changed_lines(before: str, after: str) -> set[int]:
    """1-based line numbers of ``before`` that the edit touched."""
    out = set()
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            out.update(range(i1 + 1, max(i2, i1 + 1) + 1))
    return out


@pytest.mark.parametrize("style", sorted(STYLES))
def test_status_write_touches_only_status_lines(style):
    before = STYLES[style]
    span = status_span(before)
    after = set_status(before, STATUS)
    touched = changed_lines(before, after)
    if span:
        allowed = set(range(span[0], span[1] + 1))
    else:
        n = len(before.splitlines())
        allowed = {n, n + 1}   # appended after the last line
    assert touched <= allowed, (touched, allowed, after)
    # everything outside the block is byte-identical
    outside = [l for i, l in enumerate(before.splitlines(keepends=True), 1) if i not in allowed]
    for line in outside:
        assert line in after
    # the result parses and carries the new status
    assert parse(after.encode())["status"] == STATUS
    # idempotent
    assert set_status(after, STATUS) == after
    if "\r\n" in before:
        assert "\n" not in after.replace("\r\n", "")


def test_mangled_status_is_replaced_and_nothing_else_moves():
    before = "kind: Release\nspec: {a: 1}\nstatus: [this, is, not, a, status]\n# tail\nextra: 1\n"
    after = set_status(before, {"phase": "Idle"})
    assert after == "kind: Release\nspec: {a: 1}\nstatus:\n  phase: Idle\n# tail\nextra: 1\n"


def test_unparseable_file_is_refused():
    with pytest.raises(StatusEditError):
        set_status("a: [1,\n", {"phase": "Idle"})
    with pytest.raises(StatusEditError):
        set_status("- a\n- b\n", {"phase": "Idle"})


def test_every_common_yaml_parser_reads_the_status_sluice_writes():
    """ruamel reads ``{query: x?token=***}`` in a flow map; PyYAML (and tools built on it) does
    not. Strings with flow indicators are written double-quoted, so both read the same status."""
    import yaml as pyyaml
    from ruamel.yaml import YAML
    from reconciler.core.writeback import render_status
    odd = ["POST http://h:1/x?token=***&a=b", "a, b", "[x]", "{y}", "#not a comment", "x: y", " padded ",
           "!tag", "&anchor", "*alias", "|pipe", ">fold", "%percent", "@at", "`tick", "it's", 'say "hi"', "r:1"]
    status = {"phase": "Progressing", "stable": {"version": "v1", "image": "r:1"},
              "lastAnalysis": {"at": "2026-11-25T10:00:00Z",
                               "results": [{"name": f"m{i}", "query": q, "ok": True} for i, q in enumerate(odd)]}}
    text = render_status(status)
    assert pyyaml.safe_load(text)["status"] == status
    assert YAML(typ="safe").load(text)["status"] == status
    assert "stable: {version: v1, image: r:1}" in text   # plain short maps stay inline
