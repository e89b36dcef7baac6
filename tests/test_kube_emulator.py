"""The emulator itself: each test copies one behaviour of a real kube-apiserver
that a controller must survive, and says which (over HTTP, official client)."""

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support import ssa
from tests.support.kube_emulator import ApiError, Emulator, canonical_quantity

pytestmark = pytest.mark.timeout(60)
APPLY = "application/apply-patch+yaml"


def svc(name, labels=None, **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns", "labels": labels or {}},
            "spec": {"ports": [{"port": 80}], **spec}}


def dep(name, labels=None, image="example.com/web:v1", **spec):
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"replicas": 2, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}, **spec}}


def apps(emu):
    return client.AppsV1Api(emu.api_client())


def core(emu):
    return client.CoreV1Api(emu.api_client())


def apply(emu, obj, manager="sluice", force=False, dry=False):
    """Server-side apply through the official client (raw body: the client drops 201 answers)."""
    meta = obj["metadata"]
    kw = dict(field_manager=manager, force=force, _content_type=APPLY, _preload_content=False)
    if dry:
        kw["dry_run"] = "All"
    if obj["kind"] == "Deployment":
        resp = apps(emu).patch_namespaced_deployment(meta["name"], meta["namespace"], obj, **kw)
    elif obj["kind"] == "Service":
        resp = core(emu).patch_namespaced_service(meta["name"], meta["namespace"], obj, **kw)
    else:
        group, version = obj["apiVersion"].split("/")
        resp = client.CustomObjectsApi(emu.api_client()).patch_namespaced_custom_object(
            group, version, meta["namespace"], obj["kind"].lower() + "s", meta["name"], obj, **kw)
    return json.loads(resp.data)


def read(emu, name):
    return json.loads(apps(emu).read_namespaced_deployment(name, "ns", _preload_content=False).data)


def error(exc):
    return json.loads(exc.value.body)


def managers(obj):
    return {(m["manager"], m["operation"]): m["fieldsV1"] for m in obj["metadata"].get("managedFields", [])}


@pytest.fixture(scope="module")
def emu():
    with Emulator() as e:
        yield e


# --- what was there before: identity, versions, selectors, faults -------------------------------
def test_create_is_201_with_server_fields_and_409_on_duplicate(emu):
    """POST answers 201 with uid, resourceVersion, creationTimestamp; a second POST is 409 AlreadyExists."""
    made = core(emu).create_namespaced_service("ns", svc("a"))
    assert made.metadata.uid and made.metadata.resource_version and made.metadata.creation_timestamp
    with pytest.raises(ApiException) as err:
        core(emu).create_namespaced_service("ns", svc("a"))
    assert err.value.status == 409 and error(err)["reason"] == "AlreadyExists"


def test_label_selector_and_limit(emu):
    """LIST honours labelSelector (=, !=, exists, in) and limit/continue."""
    for i in range(5):
        core(emu).create_namespaced_service("ns", svc(f"l{i}", {"team": "x" if i % 2 else "y"}))
    got = core(emu).list_namespaced_service("ns", label_selector="team=x")
    assert sorted(s.metadata.name for s in got.items) == ["l1", "l3"]
    got = core(emu).list_namespaced_service("ns", label_selector="team in (x),team!=y")
    assert sorted(s.metadata.name for s in got.items) == ["l1", "l3"]
    page = core(emu).list_namespaced_service("ns", label_selector="team", limit=2)
    assert len(page.items) == 2 and page.metadata._continue


def test_replace_with_stale_version_conflicts_and_leases_work(emu):
    """PUT with a stale resourceVersion is 409 Conflict (optimistic concurrency); leader leases rely on it."""
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
    """Apply on a missing object creates it (201); a spec change bumps generation and resourceVersion."""
    from reconciler.adapters.cluster import Cluster
    cluster = Cluster(emu.api_client())
    first = cluster.apply(dep("d"))
    assert first["metadata"]["generation"] == 1
    second = cluster.apply({**dep("d"), "spec": {**dep("d")["spec"], "replicas": 3}})
    assert second["metadata"]["generation"] == 2 and second["spec"]["replicas"] == 3
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


def test_faults_and_counters(emu):
    core_api = core(emu)
    emu.reset_counts()
    emu.fail_next("list", "services", 500)
    with pytest.raises(ApiException) as err:
        core_api.list_namespaced_service("ns")
    assert err.value.status == 500
    core_api.list_namespaced_service("ns")
    assert emu.counts[("list", "services", "ns")] == 2


def test_request_log_stays_bounded(emu):
    core_api = core(emu)
    for _ in range(700):
        core_api.list_namespaced_service("other")
    assert emu._sync(lambda: len(emu.emu._requests)) <= 501


# --- validation -------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["replace", "merge-patch", "apply"])
def test_deployment_selector_is_immutable(emu, how):
    """apps/v1 Deployment spec.selector is immutable: any change is 422 Invalid "field is immutable"."""
    name = f"imm-{how}"
    apply(emu, dep(name))
    changed = dep(name, {"app": name, "version": "v2"})
    with pytest.raises(ApiException) as err:
        if how == "replace":
            live = apps(emu).read_namespaced_deployment(name, "ns")
            live.spec.selector.match_labels = changed["spec"]["selector"]["matchLabels"]
            live.spec.template.metadata.labels = changed["spec"]["template"]["metadata"]["labels"]
            apps(emu).replace_namespaced_deployment(name, "ns", live)
        elif how == "merge-patch":
            apps(emu).patch_namespaced_deployment(name, "ns", {"spec": changed["spec"]},
                                                  _content_type="application/merge-patch+json")
        else:
            apply(emu, changed)
    body = error(err)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (f'Deployment.apps "{name}" is invalid: spec.selector: Invalid value: '
                               f'v1.LabelSelector{{MatchLabels:map[string]string{{"app":"{name}", "version":"v2"}}, '
                               f'MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}: field is immutable')
    assert body["details"]["causes"][0]["field"] == "spec.selector"
    assert read(emu, name)["spec"]["selector"] == {"matchLabels": {"app": name}}


def test_deployment_selector_must_match_template_labels(emu):
    """A Deployment whose selector does not select its pod template is 422 (`selector` does not match template `labels`)."""
    bad = dep("nomatch")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as err:
        apps(emu).create_namespaced_deployment("ns", bad)
    assert err.value.status == 422
    assert "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: " \
           "`selector` does not match template `labels`" in error(err)["message"]


def test_invalid_objects_are_422_with_the_servers_field_paths(emu):
    """Validation: container image required, Recreate forbids rollingUpdate, requests <= limits, valid label values."""
    bad = dep("bad")
    bad["spec"]["template"]["spec"]["containers"][0].pop("image")
    bad["spec"]["strategy"] = {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}
    bad["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    bad["metadata"]["labels"] = {"version": "1.0+build"}
    with pytest.raises(ApiException) as err:
        apply(emu, bad)
    fields = [c["field"] for c in error(err)["details"]["causes"]]
    assert fields == ["metadata.labels", "spec.strategy.rollingUpdate", "spec.template.spec.containers[0].image",
                      "spec.template.spec.containers[0].resources.requests"]
    assert "may not be specified when strategy `type` is 'Recreate'" in error(err)["message"]
    assert "must be less than or equal to cpu limit of 1" in error(err)["message"]


def test_service_port_name_required_and_cluster_ip_immutable(emu):
    """Service validation: two ports need names; spec.clusterIP(s) "may not change once set"."""
    two = svc("two")
    two["spec"]["ports"] = [{"port": 80}, {"port": 81}]
    with pytest.raises(ApiException) as err:
        core(emu).create_namespaced_service("ns", two)
    assert error(err)["message"] == ('Service "two" is invalid: [spec.ports[0].name: Required value, '
                                    'spec.ports[1].name: Required value]')
    core(emu).create_namespaced_service("ns", svc("ipfix"))
    with pytest.raises(ApiException) as err:
        core(emu).patch_namespaced_service("ipfix", "ns", {"spec": {"clusterIP": "10.96.200.1",
                                                                    "clusterIPs": ["10.96.200.1"]}},
                                           _content_type="application/merge-patch+json")
    assert err.value.status == 422 and "may not change once set" in error(err)["message"]


# --- defaults -------------------------------------------------------------------------------
def test_deployment_defaults_are_filled_in(emu):
    """The apps/v1 and core/v1 defaulters: strategy, revisionHistoryLimit, progressDeadlineSeconds, replicas,
    pod template and container defaults (imagePullPolicy, terminationMessagePath, protocol, probes)."""
    d = dep("defaults")
    del d["spec"]["replicas"]
    c = d["spec"]["template"]["spec"]["containers"][0]
    c["ports"] = [{"containerPort": 8080}]
    c["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    got = apply(emu, d)
    spec = got["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    pod = spec["template"]["spec"]
    assert {k: pod[k] for k in ("restartPolicy", "dnsPolicy", "schedulerName", "terminationGracePeriodSeconds",
                                "securityContext")} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30, "securityContext": {}}
    c = pod["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent" and c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File" and c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"] == {"httpGet": {"path": "/", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1,
                                   "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    recreate = dep("recreate", strategy={"type": "Recreate"})
    assert apply(emu, recreate)["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("image,policy", [("web", "Always"), ("web:latest", "Always"), ("web:1.2", "IfNotPresent"),
                                          ("reg:5000/web", "Always"), ("web@sha256:abc", "IfNotPresent")])
def test_image_pull_policy_follows_the_tag(emu, image, policy):
    """core/v1 defaulting: imagePullPolicy Always for :latest or no tag, IfNotPresent otherwise."""
    name = "pull-" + str(abs(hash(image)))
    got = apps(emu).create_namespaced_deployment("ns", dep(name, image=image), _preload_content=False)
    assert json.loads(got.data)["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_service_defaults_and_cluster_ip_allocation(emu):
    """core/v1 Service: type ClusterIP, an allocated clusterIP(s), sessionAffinity, ipFamilies, port protocol and
    targetPort = port; a PUT without clusterIP keeps the allocated one."""
    made = json.loads(core(emu).create_namespaced_service("ns", svc("defsvc"), _preload_content=False).data)
    spec = made["spec"]
    assert spec["type"] == "ClusterIP" and spec["clusterIP"].startswith("10.96.")
    assert spec["clusterIPs"] == [spec["clusterIP"]] and spec["sessionAffinity"] == "None"
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    body = svc("defsvc")
    body["metadata"]["resourceVersion"] = made["metadata"]["resourceVersion"]
    again = core(emu).replace_namespaced_service("defsvc", "ns", body)
    assert again.spec.cluster_ip == spec["clusterIP"]


# --- normalisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("given,canonical", [
    ("1000m", "1"), (0.5, "500m"), ("1.5", "1500m"), ("100m", "100m"), (2, "2"), ("2000", "2k"), ("0.1", "100m"),
    ("1024Mi", "1Gi"), ("1Gi", "1Gi"), ("1536Mi", "1536Mi"), ("0.5Gi", "512Mi"), ("1000Mi", "1000Mi"),
    ("1000M", "1G"), ("128974848", "128974848"), ("1e3", "1e3"), ("0.5Ki", "512"), ("0", "0")])
def test_quantities_are_canonical(given, canonical):
    """resource.Quantity marshals to its canonical form (CanonicalizeBytes)."""
    assert canonical_quantity(given) == canonical


def test_resources_come_back_canonical_over_the_wire(emu):
    """Quantities in resources.requests/limits are stored canonical: 1000m reads back as "1", 1024Mi as "1Gi"."""
    d = dep("qty")
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": 0.5, "memory": "1024Mi"}, "limits": {"cpu": "1000m", "memory": 2147483648}}
    got = apply(emu, d)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert got == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2147483648"}}
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    with pytest.raises(ApiException) as err:
        apply(emu, d)
    assert err.value.status == 400 and "quantities must match the regular expression" in error(err)["message"]


def test_int_or_string_keeps_its_type(emu):
    """IntOrString fields keep the JSON type given (targetPort 8080 vs "http", maxSurge 1 vs "25%"); a string
    targetPort must be a port name, so "8080" as a string is 422."""
    s = svc("ios")
    s["spec"]["ports"] = [{"name": "a", "port": 80, "targetPort": "http"}, {"name": "b", "port": 81, "targetPort": 8081}]
    got = apply(emu, s)["spec"]["ports"]
    assert [p["targetPort"] for p in got] == ["http", 8081]
    s["spec"]["ports"][1]["targetPort"] = "8081"
    with pytest.raises(ApiException) as err:
        apply(emu, s)
    assert 'spec.ports[1].targetPort: Invalid value: "8081": must contain at least one letter (a-z)' \
        in error(err)["message"]
    d = dep("ios", strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "10%"}})
    assert apply(emu, d)["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "10%"}


# --- server-side apply ------------------------------------------------------------------------------
def test_apply_records_managed_fields_in_fields_v1(emu):
    """SSA records managedFields per manager: operation Apply, fieldsType FieldsV1, "f:" fields and "k:" list items."""
    d = dep("mf")
    d["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    got = apply(emu, d)
    [entry] = got["metadata"]["managedFields"]
    assert entry["manager"] == "sluice" and entry["operation"] == "Apply" and entry["apiVersion"] == "apps/v1"
    assert entry["fieldsType"] == "FieldsV1" and entry["time"]
    fields = entry["fieldsV1"]
    assert fields["f:spec"]["f:replicas"] == {} and fields["f:spec"]["f:selector"] == {}
    web = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert web == {".": {}, "f:image": {}, "f:name": {},
                   "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}}
    assert "f:revisionHistoryLimit" not in fields["f:spec"]     # a default is nobody's


def test_apply_removes_a_field_the_manager_stopped_applying(emu):
    """SSA: a field the manager applied before and omits now is removed (and defaulted again if it has a default)."""
    d = dep("rm")
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}
    d["spec"]["revisionHistoryLimit"] = 3
    apply(emu, d)
    del d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    del d["spec"]["revisionHistoryLimit"]
    got = apply(emu, d)
    assert got["spec"]["template"]["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "1"}}
    assert got["spec"]["revisionHistoryLimit"] == 10


def test_apply_keeps_a_field_another_manager_also_owns(emu):
    """SSA: an omitted field stays when another manager owns it too (shared ownership of an equal value)."""
    d = dep("shared")
    d["metadata"]["labels"] = {"team": "a", "tier": "web"}
    apply(emu, d)
    apply(emu, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shared", "namespace": "ns",
                                                                           "labels": {"team": "a"}}}, manager="ops")
    del d["metadata"]["labels"]
    got = apply(emu, d)
    assert got["metadata"]["labels"] == {"team": "a"}
    assert managers(got)[("ops", "Apply")]["f:metadata"] == {"f:labels": {"f:team": {}}}


def test_apply_conflicts_with_another_managers_field_unless_forced(emu):
    """SSA: setting a field owned by another manager (an HPA's replicas, via kube-controller-manager) to another
    value is 409 Conflict naming the manager and the field; force=true takes the field over."""
    apply(emu, dep("hpa"))
    emu.update_as("kube-controller-manager", "deployments", "ns", "hpa", lambda d: d["spec"].update(replicas=5))
    with pytest.raises(ApiException) as err:
        apply(emu, dep("hpa"))
    body = error(err)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == ('Apply failed with 1 conflict: conflict with "kube-controller-manager" using apps/v1: '
                               '.spec.replicas')
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                                          "message": 'conflict with "kube-controller-manager" using apps/v1'}]
    assert read(emu, "hpa")["spec"]["replicas"] == 5
    same = dep("hpa", replicas=5)
    assert apply(emu, same)["spec"]["replicas"] == 5            # an equal value is shared, no conflict
    got = apply(emu, dep("hpa"), force=True)
    assert got["spec"]["replicas"] == 2
    assert "f:replicas" not in (managers(got).get(("kube-controller-manager", "Update"), {}).get("f:spec") or {})


def test_apply_without_the_field_leaves_it_to_its_owner(emu):
    """SSA: a manager that does not apply replicas never touches them (how a controller leaves them to an HPA)."""
    apply(emu, dep("lenient"))
    emu.update_as("kube-controller-manager", "deployments", "ns", "lenient", lambda d: d["spec"].update(replicas=7))
    d = dep("lenient")
    del d["spec"]["replicas"]
    got = apply(emu, d)
    assert got["spec"]["replicas"] == 7


def test_keyed_lists_merge_by_key_across_managers(emu):
    """SSA merges containers by name and container ports by containerPort: another manager's sidecar stays."""
    d = dep("merge")
    d["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    apply(emu, d)
    sidecar = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "merge", "namespace": "ns"},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "web", "ports": [{"containerPort": 9090, "name": "metrics"}]},
                   {"name": "proxy", "image": "istio/proxyv2:1.22"}]}}}}
    emu.apply_as("mesh", sidecar)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/web:v2"
    got = apply(emu, d)
    containers = got["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "proxy"]
    assert containers[0]["image"] == "example.com/web:v2"
    assert [p["containerPort"] for p in containers[0]["ports"]] == [80, 9090]


def test_istio_lists_are_atomic(emu):
    """CRDs without list-type markers: every list is atomic (replaced whole, one owner); maps stay granular."""
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "r", "namespace": "ns"},
          "spec": {"hosts": ["r"], "http": [{"name": "primary", "route": [{"destination": {"host": "r"}}],
                                             "mirror": {"host": "r", "subset": "v2"}}]}}
    apply(emu, vs)
    got = apply(emu, {**vs, "spec": {"hosts": ["r"], "http": [{"name": "primary",
                                                               "route": [{"destination": {"host": "r"}}]}]}})
    assert "mirror" not in got["spec"]["http"][0]
    assert managers(got)[("sluice", "Apply")]["f:spec"] == {"f:hosts": {}, "f:http": {}}
    emu.edit("virtualservices", "ns", "r", lambda o: o["spec"]["http"][0].update(timeout="5s"), manager="person")
    with pytest.raises(ApiError) as err:
        emu.apply_as("other", {**vs, "spec": {"http": []}})
    assert err.value.code == 409 and ".spec.http" in err.value.message


def test_updates_record_update_entries_by_field_manager_or_user_agent(emu):
    """Non-apply writes record operation Update under fieldManager, else the User-Agent's product name."""
    made = apps(emu).create_namespaced_deployment("ns", dep("upd"), _preload_content=False)
    assert ("OpenAPI-Generator", "Update") in managers(json.loads(made.data))
    apps(emu).patch_namespaced_deployment("upd", "ns", {"spec": {"replicas": 4}}, field_manager="scaler",
                                          _content_type="application/merge-patch+json")
    got = emu.edit("deployments", "ns", "upd", lambda d: d["metadata"].setdefault("labels", {}).update(x="y"))
    owners = managers(got)
    assert owners[("scaler", "Update")] == {"f:spec": {"f:replicas": {}}}
    assert owners[("kubectl-edit", "Update")] == {"f:metadata": {"f:labels": {"f:x": {}}}}
    assert "f:replicas" not in owners[("OpenAPI-Generator", "Update")]["f:spec"]


def test_strategic_merge_patch_merges_containers_by_name(emu):
    """A strategic merge patch merges keyed lists by key (containers by name); CRDs refuse it (415)."""
    apply(emu, dep("smp"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "log", "image": "busybox:1"}]}}}}
    got = apps(emu).patch_namespaced_deployment("smp", "ns", patch,
                                                _content_type="application/strategic-merge-patch+json")
    assert [c.name for c in got.spec.template.spec.containers] == ["web", "log"]
    apply(emu, {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": "dr", "namespace": "ns"}, "spec": {"host": "r"}})
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(emu.api_client()).patch_namespaced_custom_object(
            "networking.istio.io", "v1", "ns", "destinationrules", "dr", {"spec": {"host": "s"}},
            _content_type="application/strategic-merge-patch+json")
    assert err.value.status == 415


# --- dry run, generation, status ---------------------------------------------------------------------
def test_dry_run_returns_the_object_as_stored_without_storing(emu):
    """dryRun=All on create, update, patch, apply and delete: full validation, defaults and managedFields in the
    answer; nothing stored; resourceVersion unchanged."""
    made = apps(emu).create_namespaced_deployment("ns", dep("dry0"), dry_run="All", _preload_content=False)
    assert json.loads(made.data)["spec"]["revisionHistoryLimit"] == 10 and emu.get("deployments", "ns", "dry0") is None
    created = apply(emu, dep("dry1", image="web:1"), dry=True)
    assert created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert created["metadata"]["managedFields"][0]["manager"] == "sluice"
    assert emu.get("deployments", "ns", "dry1") is None
    live = apply(emu, dep("dry1"))
    emu.reset_counts()
    planned = apply(emu, dep("dry1", replicas=9), dry=True)
    assert planned["spec"]["replicas"] == 9 and planned["metadata"]["generation"] == 2
    assert planned["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    apps(emu).patch_namespaced_deployment("dry1", "ns", {"spec": {"replicas": 8}}, dry_run="All",
                                          _content_type="application/merge-patch+json")
    apps(emu).delete_namespaced_deployment("dry1", "ns", dry_run="All")
    with pytest.raises(ApiException) as err:
        apply(emu, dep("dry1", {"app": "changed"}), dry=True)
    assert err.value.status == 422
    assert read(emu, "dry1") == live
    assert emu.writes() == 0 and emu.counts[("dry-patch", "deployments", "ns")] == 3


def test_generation_moves_with_spec_only_and_apply_never_touches_status(emu):
    """metadata.generation bumps only on a spec change; a no-op apply changes nothing (same resourceVersion);
    status is written only through the status subresource, never by an apply of the spec."""
    first = apply(emu, dep("gen"))
    emu.set_ready("ns", "gen")
    ready = read(emu, "gen")
    again = apply(emu, dep("gen"))
    assert again["metadata"]["resourceVersion"] == ready["metadata"]["resourceVersion"]
    assert again["status"] == ready["status"] and again["metadata"]["managedFields"] == ready["metadata"]["managedFields"]
    labelled = dep("gen")
    labelled["metadata"]["labels"] = {"a": "b"}
    labelled["status"] = {"replicas": 99}
    got = apply(emu, labelled)
    assert got["metadata"]["generation"] == first["metadata"]["generation"] == 1
    assert got["status"] == ready["status"]
    assert apply(emu, dep("gen", replicas=3))["metadata"]["generation"] == 2


def test_fields_v1_round_trip():
    """fieldsV1 encoding: "." marks a list item (or map) that is a member and has children."""
    paths = {("f:spec", "f:replicas"), ("f:spec", "f:containers", 'k:{"name":"a"}'),
             ("f:spec", "f:containers", 'k:{"name":"a"}', "f:image")}
    encoded = ssa.to_fields_v1(paths)
    assert encoded == {"f:spec": {"f:containers": {'k:{"name":"a"}': {".": {}, "f:image": {}}}, "f:replicas": {}}}
    assert ssa.from_fields_v1(encoded) == paths


# --- unknown fields ------------------------------------------------------------------------------------
def test_unknown_fields_are_dropped_with_a_warning_or_refused_when_strict(emu):
    """Field validation: by default (Warn) an unknown field is dropped and a Warning header names it; with
    fieldValidation=Strict the write is 400 "strict decoding error: unknown field ..."."""
    d = dep("unknown")
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    raw = client.CustomObjectsApi(emu.api_client())   # the typed client refuses unknown fields before sending
    resp = raw.create_namespaced_custom_object("apps", "v1", "ns", "deployments", d, _preload_content=False)
    assert resp.headers["Warning"] == '299 - "unknown field \\"spec.template.spec.containers[0].imagePullPolicyy\\""'
    assert "imagePullPolicyy" not in json.dumps(read(emu, "unknown"))
    d["metadata"]["name"] = "unknown2"
    with pytest.raises(ApiException) as err:
        raw.create_namespaced_custom_object("apps", "v1", "ns", "deployments", d, field_validation="Strict")
    assert err.value.status == 400 and error(err)["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].imagePullPolicyy"')


def test_apply_with_an_unknown_field_fails_to_type_the_patch(emu):
    """SSA cannot type an applied configuration with an undeclared field: 500 "failed to create typed patch object
    (...): <path>: field not declared in schema" (built-in kinds and CRDs with a structural schema alike)."""
    d = dep("untyped")
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(ApiException) as err:
        apply(emu, d)
    assert err.value.status == 500 and error(err)["message"] == (
        'failed to create typed patch object (ns/untyped; apps/v1, Kind=Deployment): '
        '.spec.template.spec.containers[name="web"].imagePullPolicyy: field not declared in schema')
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "u", "namespace": "ns"},
          "spec": {"hosts": ["u"], "http": [{"route": [{"destination": {"host": "u"}, "wieght": 100}]}]}}
    with pytest.raises(ApiException) as err:
        apply(emu, vs)
    assert err.value.status == 500 and ".spec.http[0].route[0].wieght: field not declared" in error(err)["message"]
