"""Generated hostile input for the loader and the webhook parser: thousands
of inputs, each ending in a clear answer (never a traceback or a hang),
within bounded time and memory measured here."""

import time
import tracemalloc

from hypothesis import HealthCheck, example, given, settings, strategies as st

from reconciler.core.loader import load_files
from reconciler.runtime import WebhookConfig, pushed_branch, verify_signature
from tests.support.specs import dump, release_doc

SPEC = dump(release_doc())
yamlish = st.text(alphabet=st.sampled_from(list("ab:- \n\t[]{}&*!|>'\"#%@`,?.0123\x00é")), max_size=400)


def mutate(data: bytes, cuts) -> bytes:
    out = bytearray(data)
    for pos, byte in cuts:
        out[pos % len(out)] = byte
    return bytes(out)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(yamlish.map(str.encode), st.binary(max_size=300),
                 st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8).map(
                     lambda cuts: mutate(SPEC.encode(), cuts))))
def test_loader_never_raises(data):
    t0 = time.perf_counter()
    out = load_files({"releases/bookinfo/reviews.yaml": data})
    assert time.perf_counter() - t0 < 2.0
    assert out.releases or out.problems
    for p in out.problems:
        assert p.file and p.line >= 1 and p.col >= 1 and p.message


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=2000), st.dictionaries(st.sampled_from(
    ["X-Hub-Signature-256", "X-Sluice-Signature", "X-Gitlab-Token"]), st.text(max_size=80), max_size=3))
def test_webhook_parser_never_raises(body, headers):
    cfg = WebhookConfig(b"secret")
    assert verify_signature(cfg, body, headers) in (True, False)
    branch = pushed_branch(body)
    assert branch is None or isinstance(branch, str)


def test_hostile_webhook_bodies_are_bounded():
    tracemalloc.start()
    for body in (b"[" * 200_000, b'{"ref": ' * 50_000, b"\xff" * 100_000, b'{"ref": "' + b"a" * 1_000_000 + b'"}'):
        t0 = time.perf_counter()
        pushed_branch(body)
        assert time.perf_counter() - t0 < 2.0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


SETTINGS_DOC = b"""apiVersion: sluice.dev/v1alpha1
kind: Settings
providers:
  prometheus: {address: "http://p:9090", timeout: 5s, tokenFile: /t, headers: {X-Scope-OrgID: a}}
metricTemplates:
  p99: {query: "sum(x)", max: 5}
analysis: {onNoData: fail}
tenancy:
  folders:
    bookinfo: {namespaces: [bookinfo], hosts: ["*.bookinfo.svc.cluster.local"]}
"""
POLICY_DOC = b"""apiVersion: sluice.dev/v1alpha1
kind: Policy
tenancy:
  folders:
    bookinfo:
      namespaces: [bookinfo]
      hosts: ["*.bookinfo.svc.cluster.local"]
      podSecurity: {allow: [hostPort], capabilities: [NET_ADMIN], serviceAccounts: [a]}
podSecurity: {systemNamespaces: [sluice-system]}
trust: {sshAllowedSigners: /etc/s, since: abcdef1}
"""


def _hostile(base: bytes):
    return st.one_of(yamlish.map(str.encode), st.binary(max_size=300),
                     st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8).map(
                         lambda cuts: mutate(base, cuts)))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile(SETTINGS_DOC))
def test_loader_never_raises_on_hostile_settings(data):
    """Any sluice.yaml: a located problem that holds every release, or valid settings; never an exception."""
    t0 = time.perf_counter()
    out = load_files({"sluice.yaml": data, "releases/bookinfo/reviews.yaml": SPEC.encode()})
    assert time.perf_counter() - t0 < 2.0
    for p in out.problems:
        assert p.file and p.line >= 1 and p.col >= 1 and p.message
    if any(p.file == "sluice.yaml" for p in out.problems):
        assert out.releases == []        # fail closed: never a release on default settings


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile(POLICY_DOC))
@example(b"0:\n::")   # keys of mixed types: an unknown-field message once sorted them and raised
def test_policy_never_raises(data):
    """Any policy file: a policy or located problems; a valid one loads releases without an exception."""
    from reconciler.core import policy as policies
    doc, problems = policies.load(data, "policy.yaml")
    assert isinstance(doc, dict) and (not problems or doc == {})
    for p in problems:
        assert p.file == "policy.yaml" and p.line >= 1 and p.col >= 1 and p.message
    if not problems:
        out = load_files({"sluice.yaml": SETTINGS_DOC, "releases/bookinfo/reviews.yaml": SPEC.encode()}, policy=doc)
        for p in out.problems:
            assert p.file and p.line >= 1 and p.message
