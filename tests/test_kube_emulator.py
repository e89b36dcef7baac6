"""The emulator itself: the behaviours the controller relies on."""

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.kube_emulator import Emulator

pytestmark = pytest.mark.timeout(60)


def svc(name, labels=None):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns", "labels": labels or {}},
            "spec": {"ports": [{"port": 80}]}}


@pytest.fixture(scope="module")
def emu():
    with Emulator() as e:
        yield e


def test_create_is_201_with_server_fields_and_409_on_duplicate(emu):
    core = client.CoreV1Api(emu.api_client())
    made = core.create_namespaced_service("ns", svc("a"))
    assert made.metadata.uid and made.metadata.resource_version and made.metadata.creation_timestamp
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("ns", svc("a"))
    assert err.value.status == 409


def test_label_selector_and_limit(emu):
    core = client.CoreV1Api(emu.api_client())
    for i in range(5):
        core.create_namespaced_service("ns", svc(f"l{i}", {"team": "x" if i % 2 else "y"}))
    got = core.list_namespaced_service("ns", label_selector="team=x")
    assert sorted(s.metadata.name for s in got.items) == ["l1", "l3"]
    page = core.list_namespaced_service("ns", label_selector="team", limit=2)
    assert len(page.items) == 2 and page.metadata._continue


def test_replace_with_stale_version_conflicts_and_leases_work(emu):
    coord = client.CoordinationV1Api(emu.api_client())
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="lock", namespace="ns"),
                           spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15))
    made = coord.create_namespaced_lease("ns", lease)
    made.spec.holder_identity = "b"
    coord.replace_namespaced_lease("lock", "ns", made)
    made.spec.holder_identity = "c"   # stale resourceVersion now
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("lock", "ns", made)
    assert err.value.status == 409
    assert coord.read_namespaced_lease("lock", "ns").spec.holder_identity == "b"


def test_server_side_apply_creates_then_updates_and_bumps_generation(emu):
    api = emu.api_client()
    from reconciler.adapters.cluster import Cluster
    cluster = Cluster(api)
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    first = cluster.apply(dep)
    assert first["metadata"]["generation"] == 1
    dep["spec"]["replicas"] = 3
    second = cluster.apply(dep)
    assert second["metadata"]["generation"] == 2 and second["spec"]["replicas"] == 3
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


def test_faults_and_counters(emu):
    core = client.CoreV1Api(emu.api_client())
    emu.reset_counts()
    emu.fail_next("list", "services", 500)
    with pytest.raises(ApiException) as err:
        core.list_namespaced_service("ns")
    assert err.value.status == 500
    core.list_namespaced_service("ns")
    assert emu.counts[("list", "services", "ns")] == 2


def test_request_log_stays_bounded(emu):
    core = client.CoreV1Api(emu.api_client())
    for _ in range(700):
        core.list_namespaced_service("other")
    assert emu._sync(lambda: len(emu.emu._requests)) <= 501
