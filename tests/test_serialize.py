"""dump_yaml builds PyYAML's node tree itself (reconciler/core/serialize.py) for
speed; its bytes must stay exactly those of the PyYAML call it replaced, kept
here as the oracle: rendered manifests in git and every diff depend on them.
Also the sample repo's and the benchmark corpus's rendered objects, and the
golden routing file, byte for byte."""

import datetime
import pathlib
import sys

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from reconciler.adapters.files import read_tree
from reconciler.core.loader import load_files
from reconciler.core.render import render
from reconciler.core.serialize import dump_yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
_TOP = ("apiVersion", "kind", "metadata", "spec")
_OLD_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _old_ordered(value, top=False):
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (_TOP.index(k) if top and k in _TOP else len(_TOP), str(k)))
        return {k: _old_ordered(value[k]) for k in keys}
    if isinstance(value, (list, tuple)):
        return [_old_ordered(v) for v in value]
    return value


def old_dump_yaml(objs):
    """The implementation dump_yaml replaced, verbatim: the oracle."""
    return yaml.dump_all((_old_ordered(o, top=True) for o in objs), Dumper=_OLD_DUMPER, sort_keys=False,
                         default_flow_style=False, width=4096, allow_unicode=True)


def outcome(dump, docs):
    """The text, or the type of the error: both must fail alike on what they cannot represent."""
    try:
        return dump(docs)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return type(exc)


# strings a YAML 1.1 or 1.2 reader could take for something else, or that need quoting or escapes
TRICKY = ["yes", "no", "Yes", "NO", "on", "Off", "y", "n", "Y", "true", "False", "TRUE", "null", "Null",
          "NULL", "~", "", " ", " x", "x ", "2026-11-20", "2026-11-22T10:00:00Z", "2026-11-22 10:00:00",
          "1e3", "1E3", "1.0e+3", "0x1", "0X1F", "0o17", "017", "0b101", "1_000", "+1", "-1", "1.", ".5",
          ".inf", "-.Inf", ".NaN", "nan", "inf", "190:20:30", "10:30", "1:2", "<<", "=", "- x", "-", "--",
          "---", "...", "? x", "?", ":", "a: b", "a:b", "#c", "x #y", "x#y", "&a", "*a", "!tag", "!!str",
          "%x", "@x", "`x", "|", ">", "'q", '"dq', "it's", "[a]", "{a: 1}", ",", "multi\nline",
          "trailing\n", "\n", "a\n\nb", "\ttab", "tab\t", "a\r\nb", "é", "日本語", "🎉 emoji", "\u2028",
          "\x85", "\ufeff", "\x00", "\x7f", "\x1b[0m", "\ud800", "a" * 5000, "word " * 900,
          "apiVersion", "kind", "metadata", "spec", "status"]

texts = st.one_of(st.sampled_from(TRICKY), st.text(max_size=40),
                  st.text(alphabet=st.sampled_from(list("yesnoNul~0x1e.:-#'\" \n\t_+é")), max_size=12))
keys = st.one_of(texts, st.sampled_from(_TOP), st.integers(-3, 3), st.booleans(), st.none(), st.floats(),
                 st.tuples(st.integers(0, 2), texts), st.dates())
scalars = st.one_of(texts, st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
                    st.floats(), st.sampled_from([0.0, -0.0, 1e17, 1e-7, 1e300 * 10, float("nan")]),
                    st.dates(), st.datetimes(), st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
documents = st.one_of(st.dictionaries(keys, values, max_size=6), values)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, max_size=3))
@example([{"spec": {}, "kind": "K", "zzz": [], "apiVersion": "v1", "metadata": {"name": "yes", "n": []}}])
@example([{"a": [[], {}, [[]], [{}], {"b": {}}, ""]}, {}, []])
@example([{"x": float("inf"), "y": float("-inf"), "z": float("nan"), 1: "1", "1": 1, None: True}])
def test_dump_yaml_is_byte_identical_to_pyyaml_representer(docs):
    assert outcome(dump_yaml, docs) == outcome(old_dump_yaml, docs)


def test_an_object_shared_inside_a_document_is_written_the_same():
    """The representer anchors an object it meets twice unless canonical() copied it (dicts,
    lists) or it is a plain scalar; a shared datetime or set gets ``&id001``/``*id001`` in both."""
    when = datetime.datetime(2026, 11, 22, 10, 0)
    tags = {"a", "b"}
    shared = {"x": [1, 2]}
    pair = (1, 2)
    docs = [{"a": when, "b": when, "c": tags, "d": tags, "e": shared, "f": shared, pair: 1, "g": {pair: 2}},
            {"again": when}]
    text = dump_yaml(docs)
    assert "&id001" in text and "*id001" in text and "&id002" in text
    assert text == old_dump_yaml(docs)


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": frozenset([1])}, {"x": 1j}, {(1, object()): "key"}])
def test_what_pyyaml_cannot_represent_fails_the_same_way(bad):
    with pytest.raises(yaml.representer.RepresenterError):
        old_dump_yaml([bad])
    with pytest.raises(yaml.representer.RepresenterError):
        dump_yaml([bad])


def test_sample_repo_renders_byte_identical():
    loaded = load_files(read_tree(ROOT / "sample-repo"))
    assert not loaded.problems and len(loaded.releases) >= 10
    everything = []
    for rel in loaded.releases:
        objs = render(rel, loaded.settings)
        assert objs and dump_yaml(objs) == old_dump_yaml(objs), rel
        everything += objs
    assert dump_yaml(everything) == old_dump_yaml(everything)


def test_benchmark_corpus_renders_byte_identical():
    """Every strategy, mid-rollout and promoted statuses, shared probes (bench/genrepo.py)."""
    sys.path.insert(0, str(ROOT))
    from bench.genrepo import SCAN_EVERY, generate_files
    loaded = load_files(generate_files(60, scan_every=SCAN_EVERY))
    assert not loaded.problems and len(loaded.releases) == 60
    objs = [o for rel in loaded.releases for o in render(rel, loaded.settings)]
    assert dump_yaml(objs) == old_dump_yaml(objs)


@pytest.mark.parametrize("golden", sorted((ROOT / "tests" / "golden").glob("*.yaml")), ids=lambda p: p.name)
def test_golden_yaml_is_reproduced_byte_for_byte(golden):
    """Each ``# <what>`` section of a golden file is a dump_yaml output: read back and dumped
    again it gives the same bytes, with the old and the new dumper alike."""
    sections, current = {}, None
    for line in golden.read_text().splitlines(True):
        if line.startswith("# "):
            current = line[2:].strip()
            sections[current] = ""
        else:
            sections[current] += line
    assert len(sections) >= 25
    for label, text in sections.items():
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert dump_yaml(docs) == old_dump_yaml(docs) == text, label
