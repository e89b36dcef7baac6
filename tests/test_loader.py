"""The loader: broken and hostile specs give the exact file:line:col of each
problem, quickly, and never stop the valid releases beside them."""

import pathlib
import time
import tracemalloc

import pytest

from reconciler.core.loader import LoadCache, blob_id, load_files
from tests.support.specs import dump, release_doc

REPO = pathlib.Path(__file__).resolve().parents[1]

GOOD = dump(release_doc()).encode()
PATH = "releases/bookinfo/reviews.yaml"


def problems(text, path=PATH, extra=None):
    files = {path: text.encode() if isinstance(text, str) else text, **(extra or {})}
    out = load_files(files)
    return [str(p) for p in out.problems]


SPEC = """\
apiVersion: sluice.dev/v1alpha1
kind: Release
metadata:
  name: reviews
  namespace: bookinfo
spec:
  service: {name: reviews, port: 9080}
  template:
    containers:
      - name: reviews
  target:
    version: v2
    image: example.com/reviews:v2
  strategy:
    canary:
      steps: [10, 20, 50]
      interval: 1m
"""


def test_valid_spec_loads():
    out = load_files({PATH: SPEC.encode()})
    assert out.problems == []
    assert [r.key for r in out.releases] == ["bookinfo/reviews"]
    assert out.releases[0].blob == blob_id(SPEC.encode())


@pytest.mark.parametrize("old,new,expected", [
    ("port: 9080", 'port: "web"', f"{PATH}:7:34: spec.service.port: 'web' is not of type 'integer'"),
    ("steps: [10, 20, 50]", "steps: [10, 30, 20]", f"{PATH}:16:23: step weights must strictly increase: 20 after 30"),
    ("steps: [10, 20, 50]", "steps: [10, 20, 150]", f"{PATH}:16:23: spec.strategy.canary.steps.2: 150 is greater than the maximum of 100"),
    ("  namespace: bookinfo", "  namespace: shop", f"{PATH}:5:14: namespace 'shop' must equal the folder 'bookinfo' it lives in"),
    ("  name: reviews\n  namespace", "  name: ratings\n  namespace", f"{PATH}:4:9: name 'ratings' must equal the file name 'reviews'"),
    # any OCI tag is a version now (V2_bad, 1.2.3); a slash is not
    ("    version: v2", "    version: v2/bad", f"{PATH}:12:14: spec.target.version: 'v2/bad' does not match '^[A-Za-z0-9_][A-Za-z0-9_.+-]{{0,127}}$'"),
    ("    image: example.com/reviews:v2\n", "", f"{PATH}:11:3: spec.target: 'image' is a required property"),
    ("      interval: 1m", "      interval: 1m\n      colour: blue", f"{PATH}:18:7: unknown field 'colour' in spec.strategy.canary"),
    ("      - name: reviews", "      - name: app\n      - name: sidecar", f"{PATH}:9:5: cannot tell which container gets the target image: name one container like the service or set target.container"),
    ("    image: example.com/reviews:v2", "    image: example.com/reviews:v2\n    container: app", f"{PATH}:14:16: the pod template has no container named 'app'"),
    ("  strategy:\n    canary:", "  strategy:\n    recreate: {}\n    canary:", f"{PATH}:16:5: exactly one strategy allowed, found recreate, canary"),
    ("kind: Release", "kind: Rollout", f"{PATH}:2:7: kind: 'Release' was expected"),
])
def test_problem_positions(old, new, expected):
    assert old in SPEC
    assert problems(SPEC.replace(old, new)) == [expected]


def test_unknown_metric_and_template():
    text = SPEC + "  analysis:\n    metrics:\n      - {name: request-success-rate, min: 99}\n      - {name: latency, max: 5}\n      - {name: x, template: nope}\n"
    assert problems(text) == [
        f"{PATH}:21:16: unknown metric 'latency': use request-success-rate or request-duration, a sluice.yaml metricTemplates entry, or give it a query",
        f"{PATH}:22:29: metric template 'nope' is not defined in sluice.yaml metricTemplates",
    ]
    settings = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nmetricTemplates:\n  latency: {query: 'up'}\n  nope: {query: 'up'}\n"
    assert problems(text, extra={"sluice.yaml": settings}) == []


def test_every_problem_of_a_file_at_once():
    text = SPEC.replace("port: 9080", "port: -1").replace("version: v2", "version: 7")
    got = problems(text)
    assert len(got) == 2 and ":7:" in got[0] and ":12:" in got[1]


def test_duplicate_host_reports_both_files():
    other = SPEC.replace("name: reviews\n  namespace", "name: reviews2\n  namespace").replace(
        "{name: reviews, port", "{name: reviews, port")
    out = load_files({PATH: SPEC.encode(), "releases/bookinfo/reviews2.yaml": other.encode()})
    msgs = [str(p) for p in out.problems]
    assert msgs == [
        f"{PATH}:7:19: service host reviews.bookinfo.svc.cluster.local is also claimed by releases/bookinfo/reviews2.yaml",
        "releases/bookinfo/reviews2.yaml:7:19: service host reviews.bookinfo.svc.cluster.local is also claimed by releases/bookinfo/reviews.yaml",
    ]
    assert out.releases == []


def test_one_invalid_file_never_stops_the_others():
    other = dump(release_doc(name="ratings")).encode()
    out = load_files({PATH: b"spec: [unclosed", "releases/bookinfo/ratings.yaml": other})
    assert [r.key for r in out.releases] == ["bookinfo/ratings"]
    assert list(out.invalid) == [PATH]
    assert out.problems[0].release == "bookinfo/reviews"


HOSTILE = {
    "syntax error": (b"a: [1, 2\nb: 3\n", f"{PATH}:2:2: YAML syntax:"),
    "duplicate key": (SPEC.replace("kind: Release\n", "kind: Release\nkind: Release\n").encode(),
                      f"{PATH}:3:1: duplicate key 'kind' (first at line 2)"),
    "tab indentation": (SPEC.replace("  service:", "\tservice:").encode(),
                        f"{PATH}:7:1: tab used for indentation: YAML needs spaces"),
    "non-utf8": (SPEC.replace("kind: Release", "kind: R\xe9lease").encode("latin-1"),
                 f"{PATH}:2:8: not UTF-8: byte 0xe9 cannot be decoded"),
    "NUL": (b"apiVersion: x\nkind: \0\n", f"{PATH}:2:7: NUL byte"),
    "empty": (b"", f"{PATH}:1:1: empty file"),
    "only comments": (b"# nothing here\n", f"{PATH}:1:1: empty file"),
    "two documents": (SPEC.encode() + b"---\n" + SPEC.encode(), f"{PATH}:18:1: more than one YAML document"),
    "not a mapping": (b"- a\n- b\n", f"{PATH}:1:1: expected a mapping"),
    "billion laughs": (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n" % ((chr(98 + i).encode(),) * 2 + (chr(97 + i).encode(),) * 10)
        for i in range(8)), "anchor/alias bomb"),
    "deep nesting": (b"a: " + b"[" * 10000 + b"]" * 10000 + b"\n", f"{PATH}:1:"),
    "deep block nesting": ("".join("  " * i + f"k{i}:\n" for i in range(200)).encode(), "nesting deeper than 64 levels"),
    "oversize": (b"a: " + b"x" * (50 * 1024 * 1024) + b"\n", f"{PATH}:1:1: file is larger than the 1024 KiB limit"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_gets_a_clear_error_fast(case):
    data, expected = HOSTILE[case]
    tracemalloc.start()
    t0 = time.perf_counter()
    got = problems(data)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(got) == 1, got
    assert expected in got[0], got
    # bounded: measured, generous so a loaded CI machine does not flake
    assert elapsed < 5, elapsed
    assert peak < 64 * 1024 * 1024 + len(data) * 3, peak


@pytest.mark.parametrize("path,expected", [
    ("releases/../etc/reviews.yaml", "path 'releases/../etc/reviews.yaml' has an empty, '.' or '..' component"),
    ("releases/bookinfo/sub/reviews.yaml", "a release file must be releases/<namespace>/<name>.yaml"),
    ("releases/Book_Info/reviews.yaml", "folder 'Book_Info' is not a valid namespace name"),
    ("releases/bookinfo/re.views.yaml", "file name 're.views' is not a valid release name"),
])
def test_bad_paths(path, expected):
    got = problems(SPEC, path=path)
    assert len(got) == 1 and got[0].startswith(path + ":1:1: " + expected), got


def test_invalid_settings_is_reported_and_holds_every_release():
    out = load_files({PATH: SPEC.encode(), "sluice.yaml": b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nproviders:\n  prometheus: {adress: x}\n"})
    assert [str(p) for p in out.problems] == [
        "sluice.yaml:4:3: providers.prometheus: 'address' is a required property",
        "sluice.yaml:4:16: unknown field 'adress' in providers.prometheus",
        "releases/bookinfo/reviews.yaml:1:1: held: sluice.yaml is invalid: "
        "sluice.yaml:4:3: providers.prometheus: 'address' is a required property",
    ]
    assert out.releases == [] and out.problems[-1].release == "bookinfo/reviews"   # held, never run on defaults


def test_cache_skips_unchanged_files():
    cache = LoadCache()
    files = {PATH: SPEC.encode()}
    first = load_files(files, cache=cache)
    again = load_files(files, cache=cache)
    assert first.releases[0].doc is again.releases[0].doc  # the cached parse, not a new one
    changed = load_files({PATH: SPEC.replace("v2", "v3").encode()}, cache=cache)
    assert changed.releases[0].target["version"] == "v3"


def test_sample_repo_is_valid_and_has_every_strategy():
    from reconciler.adapters.files import read_tree
    out = load_files(read_tree(REPO / "sample-repo"))
    assert out.problems == []
    assert {r.strategy_kind for r in out.releases} == {
        "canary", "blueGreen", "abTesting", "darkLaunch", "mirror", "rolling", "recreate"}


def test_mangled_status_is_reported_clearly():
    got = problems(SPEC + "status:\n  phase: Winning\n  weight: lots\n")
    assert got == [
        f"{PATH}:19:10: status.phase: 'Winning' is not one of ['Idle', 'Progressing', 'Paused', 'WaitingApproval', 'Promoted', 'RolledBack', 'Aborted', 'Failed', 'Invalid'] (status is written by Sluice only: revert the hand edit)",
        f"{PATH}:20:11: status.weight: 'lots' is not of type 'integer' (status is written by Sluice only: revert the hand edit)",
    ]
