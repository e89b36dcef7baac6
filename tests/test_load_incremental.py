"""Incremental loading and rendering: with a LoadCache kept across calls, a call
after an edit gives exactly what a cold load of the same files gives, while
the files that did not change keep their checked results; ``render`` of an
unchanged release is a copy of the last one. And the plain-tree fast path of
``parse`` builds what PyYAML's own constructor builds."""

import pytest

from reconciler.core import parse as yamlparse
from reconciler.core.loader import LoadCache, blob_id, load_files
from reconciler.core.render import render
from tests.support.specs import dump, release_doc


def _file(name, namespace="bookinfo", **spec):
    return f"releases/{namespace}/{name}.yaml", dump(release_doc(name=name, namespace=namespace, **spec)).encode()


def _repo():
    files = dict(_file(f"svc-{i}") for i in range(6))
    files.update([_file("ratings", namespace="shop", service={"name": "ratings", "port": 9080})])
    files["sluice.yaml"] = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"
    return files


def _seen(out):
    """Everything a load says, in order."""
    return ([(r.path, r.doc, r.blob, dict(r.files)) for r in out.releases], [str(p) for p in out.problems],
            [(k, [str(p) for p in v]) for k, v in out.invalid.items()], out.settings)


def _edits():
    """A series of repos, each one edit from the last, as a controller sees them."""
    files = _repo()
    yield "start", dict(files)
    files["releases/bookinfo/svc-9.yaml"] = dump(release_doc(name="svc-9", service={"name": "svc-1", "port": 9080})).encode()
    yield "host clash added", dict(files)
    files["releases/bookinfo/svc-9.yaml"] = b"kind: [broken\n"
    yield "clash gone, file broken", dict(files)
    files.update([_file("svc-9", service={"name": "svc-2", "port": 9080})])
    yield "clash with another", dict(files)
    del files["releases/bookinfo/svc-2.yaml"]
    yield "claimant deleted", dict(files)
    files.update([_file("svc-3", replicas=-1)])
    yield "schema problem", dict(files)
    files.update([_file("svc-4", config={"files": ["app.properties"]})])
    yield "config file missing", dict(files)
    files["releases/bookinfo/svc-4/app.properties"] = b"mode=fast\n"
    yield "config file added", dict(files)
    files["releases/bookinfo/svc-4/app.properties"] = b"mode=slow\n"
    yield "config file changed", dict(files)
    files["sluice.yaml"] = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\ntenancy:\n  folders:\n    bookinfo: {}\n"
    yield "settings changed: shop has no allowance", dict(files)
    files["sluice.yaml"] = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nbogus: 1\n"
    yield "settings invalid: everything held", dict(files)
    files["sluice.yaml"] = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"
    yield "settings back", dict(files)


def test_a_warm_load_after_each_edit_is_what_a_cold_load_says():
    cache = LoadCache()
    kinds = set()
    for what, files in _edits():
        warm, cold = load_files(files, cache=cache), load_files(files)
        assert _seen(warm) == _seen(cold), what
        kinds.update(p.message.split(" ")[0] for p in cold.problems)
    # the series went through fatal, schema, clash, config and settings problems
    assert {"YAML", "service", "config", "held:"} <= kinds, kinds


def test_a_warm_load_under_a_changed_policy_is_what_a_cold_load_says():
    files, cache = _repo(), LoadCache()
    for policy in (None, {"tenancy": {"folders": {"bookinfo": {}}}}, {"tenancy": {"folders": {"shop": {}}}}, None):
        assert _seen(load_files(files, cache=cache, policy=policy)) == _seen(load_files(files, policy=policy))
    assert load_files(files, cache=cache, policy={"tenancy": {"folders": {"shop": {}}}}).problems


def test_one_changed_file_is_the_only_one_checked_again():
    files, cache = _repo(), LoadCache()
    first = load_files(files, cache=cache)
    before = dict(cache.entries)
    files.update([_file("svc-1", replicas=5)])
    second = load_files(files, cache=cache)
    again = [p for p in before if cache.entries[p] is not before[p]]
    assert again == ["releases/bookinfo/svc-1.yaml"]
    kept = {r.path: r for r in first.releases}
    assert [r.path for r in second.releases if kept.get(r.path) is not r] == ["releases/bookinfo/svc-1.yaml"]


def test_blob_ids_given_by_the_caller_are_used():
    files, cache = _repo(), LoadCache()
    ids = {p: blob_id(d) for p, d in files.items()}
    out = load_files(files, cache=cache, blobs=ids)
    assert {r.blob for r in out.releases} == {ids[r.path] for r in out.releases}
    assert _seen(load_files(files, cache=cache, blobs=ids)) == _seen(out)


def test_held_problems_never_leak_into_the_cache():
    """Invalid settings append a 'held' problem to every file's list: the next load
    with valid settings must not still carry it."""
    files, cache = _repo(), LoadCache()
    files["releases/bookinfo/svc-0.yaml"] = b"kind: [broken\n"
    load_files({**files, "sluice.yaml": b"bogus: 1\n"}, cache=cache)
    out = load_files(files, cache=cache)
    assert not [p for p in out.problems if "held" in p.message]
    assert _seen(out) == _seen(load_files(files))


def test_render_of_an_unchanged_release_is_a_fresh_copy_of_the_same_objects():
    rel = load_files(_repo()).by_key()["bookinfo/svc-0"]
    first = render(rel)
    first[0]["metadata"]["labels"]["changed-by-a-caller"] = "yes"
    second = render(rel)
    assert "changed-by-a-caller" not in second[0]["metadata"]["labels"]
    assert second == render(rel) and second is not render(rel)


def test_render_follows_the_status_it_is_given():
    rel = load_files(_repo()).by_key()["bookinfo/svc-0"]
    live = {"phase": "Progressing", "weight": 30, "step": 2, "stable": {"version": "v1", "image": "example.com/svc-0:v1"},
            "canary": {"version": "v2", "image": "example.com/svc-0:v2"}}
    plain = render(rel)
    rolling = render(rel.with_status(live))
    weights = [d["weight"] for d in rolling[-1]["spec"]["http"][-1]["route"]]
    assert weights == [70, 30]
    assert render(rel) == plain and render(rel.with_status(live)) == rolling


# --- parse: the plain-tree fast path against PyYAML's constructor ---------------

def _reference(text):
    loader = yamlparse._Loader(text)
    try:
        node = loader.get_single_node()
        yamlparse._check_duplicates(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


DOCS = [
    "a: 1\nb: 0080\nc: 0o17\nd: 0x1f\ne: -3\nf: +4\n",
    "a: 1.5\nb: .inf\nc: -.Inf\nd: 1e3\ne: .5\nf: 3.\n",
    "a: true\nb: False\nc: yes\nd: off\ne: ~\nf: null\ng:\nh: ''\n",
    "a: 2026-11-20\nb: '12'\nc: \"true\"\nd: 1_000\ne: 0b11\nf: 12:30\n",
    "a: !!str 12\nb: !!int '7'\nc: !!float '2'\nd: !!bool yes\n",
    "a: !!binary aGVsbG8=\nb: !!timestamp 2026-11-20\n",
    "s: !!set {x, y}\n",
    "o: !!omap [{a: 1}, {b: 2}]\n",
    "1: a\n01: b\n",
    "true: a\nTrue: b\n",
    "? [a, b]\n: c\n",
    "a: {b: [1, {c: [d, {e: f}]}], g: []}\nh: [[], {}]\n",
    "- a\n- - b\n  - c\n",
    "plain\n",
]


@pytest.mark.parametrize("text", DOCS)
def test_the_fast_path_builds_what_pyyaml_builds(text):
    try:
        want = _reference(text)
    except Exception as exc:   # the same refusal, in parse's words
        with pytest.raises(yamlparse.YamlProblem):
            yamlparse.parse(text.encode())
        assert type(exc).__name__ in ("ConstructorError", "TypeError", "ValueError"), exc
        return
    got = yamlparse.parse(text.encode())
    assert got == want and type(got) is type(want)
    if isinstance(want, dict):
        assert [type(k) for k in got] == [type(k) for k in want]
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@pytest.mark.parametrize("text, where", [
    ("a: 1\nb: 2\na: 3\n", "3:1"),
    ("a: 1\n'a': 2\n", "2:1"),
    ("1: x\n'1': y\n", "2:1"),            # the same as written: a duplicate, as before
    ("a:\n  b: 1\n  c: {d: 1, d: 2}\n", "3:13"),
])
def test_duplicate_keys_are_found_on_the_fast_path_with_the_same_message(text, where):
    with pytest.raises(yamlparse.YamlProblem) as got:
        yamlparse.parse(text.encode())
    assert f"{got.value.line}:{got.value.col}" == where
    assert got.value.message.startswith("duplicate key")
    with pytest.raises(yamlparse.YamlProblem) as old:
        yamlparse._check_duplicates(yamlparse._Loader(text).get_single_node())
    assert (got.value.message, got.value.line, got.value.col) == (old.value.message, old.value.line, old.value.col)


def test_a_tab_after_the_bom_check_is_still_refused_with_its_line():
    with pytest.raises(yamlparse.YamlProblem) as got:
        yamlparse.parse(b"a: 1\nb:\n\tc: 2\n")
    assert (got.value.line, got.value.col, got.value.message) == (3, 1, "tab used for indentation: YAML needs spaces")


def test_the_same_bytes_at_another_path_are_checked_where_they_are():
    """A file's own checks depend on its path (namespace = folder, name = file name): a
    copy of a valid release into another folder is refused there, and the original stays
    valid, cold or warm (the parse cache is keyed by path and blob, not blob alone)."""
    from reconciler.core.loader import LoadCache, load_files
    from tests.support.specs import dump, release_doc
    data = dump(release_doc(name="web", namespace="a")).encode()
    both = {"releases/a/web.yaml": data, "releases/b/web.yaml": data}
    for cache in (None, LoadCache()):
        loaded = load_files(both, cache=cache)
        assert [r.path for r in loaded.releases] == ["releases/a/web.yaml"]
        assert "folder 'b'" in str(loaded.invalid["releases/b/web.yaml"][0])
    cache = LoadCache()
    load_files({"releases/a/web.yaml": data}, cache=cache)
    moved = load_files({"releases/b/web.yaml": data}, cache=cache)   # renamed into another folder
    assert moved.releases == [] and "folder 'b'" in str(moved.invalid["releases/b/web.yaml"][0])
