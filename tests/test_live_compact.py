"""Listed objects keep only the managedFields Sluice reads (adapters/cluster.py
_compact_managed_fields): who owns spec.replicas, spec.http and the rollback
annotation, and who wrote last - the same answers as the whole object gives."""

from __future__ import annotations

from reconciler.adapters.cluster import OWNED_PATHS, Cluster
from reconciler.core.diff import ObjRef, last_writer, owners, stamp
from reconciler.core.observed import ROLLBACK_ANNOTATION
from reconciler.core.render import render
from tests.support.specs import release


def test_owners_and_last_writer_answer_alike_from_a_listed_object(emu):
    rel = release()
    for obj in render(rel):
        emu.apply_as("sluice", stamp(obj, instance="sluice"), force=True)
    ns = rel.namespace
    dep = next(o for o in render(rel) if o["kind"] == "Deployment")["metadata"]["name"]

    def scale(d):
        d["spec"]["replicas"] = 5
    emu.update_as("kube-controller-manager", "deployments", ns, dep, scale)

    def mark(vs):
        vs["metadata"].setdefault("annotations", {})[ROLLBACK_ANNOTATION] = "x"
    emu.edit("virtualservices", ns, rel.name, mark, manager="kubectl-edit")
    cluster = Cluster(emu.api_client())
    listed = cluster.list_managed({ns})
    assert listed, "nothing listed"
    asked = [*OWNED_PATHS, ()]
    for ref, small in listed.items():
        whole = cluster.get(ref)
        assert len(str(small["metadata"]["managedFields"])) < len(str(whole["metadata"]["managedFields"]))
        for path in asked:
            assert owners(small, *path) == owners(whole, *path), (ref, path)
        assert last_writer(small) == last_writer(whole), ref
        assert {k: v for k, v in small.items() if k != "metadata"} == \
            {k: v for k, v in whole.items() if k != "metadata"}
    d = listed[ObjRef("apps/v1", "Deployment", ns, dep)]
    assert "kube-controller-manager" in owners(d, "spec", "replicas")
    assert "kubectl-edit" in owners(listed[ObjRef("networking.istio.io/v1", "VirtualService", ns, rel.name)],
                                    "metadata", "annotations", ROLLBACK_ANNOTATION)
