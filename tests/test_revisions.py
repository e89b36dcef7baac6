"""Every change of what runs is a revision and goes through the strategy:
an image-only bump, a template edit and a config edit each run two
Deployments side by side with split weights; steps with their own pauses and
gates; the emergency paths (promote --full, rollback --to, skipAnalysis);
releases promoted before revisions existed are adopted without a restart."""

import copy
import re

from reconciler.core import revision
from reconciler.core.loader import load_files
from reconciler.core.model import Release
from reconciler.core.render import render
from tests.support.drive import Driver, bad
from tests.support.specs import dump, release, release_doc

DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def deployed(**spec):
    """A release deployed at its target (first deploy), ready for a change."""
    d = Driver(release(release_doc(**spec)))
    d.tick()
    assert d.status["phase"] == "Promoted" and d.status["stable"].get("hash")
    return d


def change(d, **spec):
    doc = copy.deepcopy(dict(d.rel.doc))
    for key, value in spec.items():
        doc["spec"][key] = value
    d.rel = Release(d.rel.path, doc, files=d.rel.files)


def objects(d, kind):
    return {o["metadata"]["name"]: o for o in render(d.rel) if o["kind"] == kind}


def weights(d):
    vs = next(iter(objects(d, "VirtualService").values()))
    return {r["destination"]["subset"]: r["weight"] for r in vs["spec"]["http"][-1]["route"]}


def walk(d, limit=30):
    """Run passes a minute apart until promoted; each step's Deployments and weights."""
    seen = []
    for _ in range(limit):
        dec = d.tick(seconds=61)
        if dec.event and dec.event.action in ("advance", "promote"):
            seen.append((sorted(objects(d, "Deployment")), weights(d)))
        if d.status["phase"] == "Promoted":
            return seen
    raise AssertionError(f"never promoted: {d.status}")


def env_of(dep):
    return dep["spec"]["template"]["spec"]["containers"][0].get("env")


def test_image_only_change_runs_side_by_side_through_every_step():
    d = deployed()
    old = d.status["stable"]
    change(d, target={"version": "v2", "image": "example.com/reviews:v2.1"})
    start = d.tick()
    new = d.status["canary"]
    assert start.event.action == "start" and new["revision"] == f"v2-{new['hash'][:8]}"
    assert "image changed: example.com/reviews:v2 -> example.com/reviews:v2.1" in start.event.reason
    assert start.event.summary == f"start canary v2 -> {new['revision']} (3 steps)"
    deps = objects(d, "Deployment")
    assert sorted(deps) == ["reviews-v2", f"reviews-{new['revision']}"]
    images = {n: dep["spec"]["template"]["spec"]["containers"][0]["image"] for n, dep in deps.items()}
    assert images == {"reviews-v2": "example.com/reviews:v2", f"reviews-{new['revision']}": "example.com/reviews:v2.1"}
    steps = walk(d)
    both = ["reviews-v2", f"reviews-{new['revision']}"]
    assert steps == [(both, {"v2": 90, new["revision"]: 10}), (both, {"v2": 80, new["revision"]: 20}),
                     (both, {"v2": 50, new["revision"]: 50}), (both, {new["revision"]: 100})]
    assert d.status["stable"]["revision"] == new["revision"] and d.status["retiring"]["revision"] == "v2"
    assert d.status["previous"][0]["revision"] == old["revision"]
    d.tick(seconds=31)   # scaleDownDelay
    assert sorted(objects(d, "Deployment")) == [f"reviews-{new['revision']}"]


def test_template_only_change_keeps_the_old_template_on_the_old_revision():
    d = deployed()
    template = copy.deepcopy(d.rel.spec["template"])
    template["containers"][0]["env"] = [{"name": "FEATURE_X", "value": "on"}]
    change(d, template=template)
    start = d.tick()
    new = d.status["canary"]["revision"]
    assert new.startswith("v2-") and "template changed: containers[reviews].env" in start.event.reason
    deps = objects(d, "Deployment")
    assert env_of(deps["reviews-v2"]) is None and env_of(deps[f"reviews-{new}"]) == [{"name": "FEATURE_X", "value": "on"}]
    steps = walk(d)
    assert [w for _, w in steps] == [{"v2": 90, new: 10}, {"v2": 80, new: 20}, {"v2": 50, new: 50}, {new: 100}]
    assert all(len(names) == 2 for names, _ in steps)
    assert env_of(objects(d, "Deployment")["reviews-v2"]) is None   # retiring: still as it ran


def test_config_only_change_gets_a_new_configmap_and_the_old_keeps_its_own():
    d = deployed(config={"data": {"LOG_LEVEL": "info"}})
    cms = objects(d, "ConfigMap")
    (old_cm,) = cms
    assert cms[old_cm]["data"] == {"LOG_LEVEL": "info"} and old_cm.startswith("reviews-config-")
    change(d, config={"data": {"LOG_LEVEL": "debug"}})
    start = d.tick()
    new = d.status["canary"]["revision"]
    assert "config changed" in start.event.reason
    cms = objects(d, "ConfigMap")
    (new_cm,) = set(cms) - {old_cm}
    deps = objects(d, "Deployment")
    ref = lambda dep: dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]  # noqa: E731
    assert ref(deps["reviews-v2"]) == old_cm and ref(deps[f"reviews-{new}"]) == new_cm
    steps = walk(d)
    assert [w for _, w in steps] == [{"v2": 90, new: 10}, {"v2": 80, new: 20}, {"v2": 50, new: 50}, {new: 100}]
    assert set(objects(d, "ConfigMap")) == {old_cm, new_cm}          # the old revision still retires with it
    d.tick(seconds=31)
    assert set(objects(d, "ConfigMap")) == {new_cm}                  # scaled down: its ConfigMap goes too


def test_config_files_are_read_from_the_release_folder_and_mounted():
    doc = release_doc(config={"files": ["app.properties"], "data": {"mode": "fast"}, "mountPath": "/etc/reviews"})
    files = {"releases/bookinfo/reviews.yaml": dump(doc).encode(),
             "releases/bookinfo/reviews/app.properties": b"threads=4\n"}
    loaded = load_files(files)
    assert loaded.problems == []
    (rel,) = loaded.releases
    (cm,) = [o for o in render(rel) if o["kind"] == "ConfigMap"]
    assert cm["data"] == {"app.properties": "threads=4\n", "mode": "fast"}
    dep = next(o for o in render(rel) if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "sluice-config", "configMap": {"name": cm["metadata"]["name"]}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "sluice-config", "mountPath": "/etc/reviews", "readOnly": True}]
    # a file change is a new revision
    files["releases/bookinfo/reviews/app.properties"] = b"threads=8\n"
    assert revision.content_hash(load_files(files).releases[0]) != revision.content_hash(rel)
    del files["releases/bookinfo/reviews/app.properties"]
    (problem,) = load_files(files).problems
    assert "config file releases/bookinfo/reviews/app.properties does not exist" in str(problem)


def test_semver_and_derived_versions_render_dns_valid_names():
    d = Driver(release(release_doc(target={"version": "1.2.3", "image": "example.com/reviews:1.2.3"})))
    d.tick()
    assert d.status["stable"]["version"] == "1.2.3" and d.status["stable"]["revision"] == "1-2-3"
    (name,) = objects(d, "Deployment")
    assert name == "reviews-1-2-3" and DNS.match(name)
    assert objects(d, "DestinationRule")["reviews"]["spec"]["subsets"][0]["name"] == "1-2-3"
    change(d, target={"image": "example.com/reviews:2.0.0-RC.1"})   # no version: the tag
    d.tick()
    assert d.status["canary"]["version"] == "2.0.0-RC.1" and d.status["canary"]["revision"] == "2-0-0-rc-1"
    assert all(DNS.match(n) for n in objects(d, "Deployment"))
    change(d, target={"image": "example.com/reviews@sha256:" + "ab" * 32})
    assert revision.target(d.rel)["revision"] == "abababababab"


def test_steps_with_pauses_wait_each_pause_measured_with_the_clock():
    steps = [10, {"weight": 20, "pause": "10m"}, {"weight": 50, "pause": "5m"}]
    d = Driver(release(release_doc(status={"phase": "Promoted", "stable": {"version": "v1", "image": "i:1"}},
                                   strategy="canary")))
    d.rel.doc["spec"]["strategy"]["canary"]["steps"] = steps
    d.tick(); d.tick()
    assert d.status["weight"] == 10
    d.tick(seconds=60)
    assert d.status["weight"] == 20                      # plain step: the 1m interval
    d.tick(seconds=599)
    assert d.status["weight"] == 20                      # 10m pause not over
    d.tick(seconds=1)
    assert d.status["weight"] == 50
    d.tick(seconds=299)
    assert d.status["phase"] == "Progressing"
    assert d.tick(seconds=1).event.action == "promote"


def test_a_step_gate_holds_until_approve_step_and_promotion_until_approve_promotion():
    d = Driver(release(release_doc(status={"phase": "Promoted", "stable": {"version": "v1", "image": "i:1"}},
                                   gates={"promotion": "manual"})))
    d.rel.doc["spec"]["strategy"]["canary"]["steps"] = [10, {"weight": 20, "approval": True}, 50]
    d.tick(); d.tick(); d.tick(seconds=61)
    assert d.status["phase"] == "WaitingApproval" and d.status["waitingFor"] == "step-2"
    for _ in range(3):
        assert d.tick(seconds=600).event is None and d.status["weight"] == 10
    assert d.tick(approve="v1@2").event is None                  # another revision's approval: nothing
    assert d.tick(approve="v2@2").event.action == "approve" and d.status["weight"] == 20
    d.tick(seconds=61)
    assert d.status["weight"] == 50
    d.tick(seconds=61)
    assert d.status["waitingFor"] == "promotion"
    assert d.tick(seconds=600).event is None                     # a step approval is not a promotion
    assert d.tick(approve="v2@promotion").event.action == "promote" and d.status["stable"]["version"] == "v2"


def test_promote_full_goes_to_100_in_one_decision():
    d = Driver(release(release_doc(status={"phase": "Promoted", "stable": {"version": "v1", "image": "i:1"}})))
    d.tick(); d.tick()
    assert d.status["weight"] == 10
    dec = d.tick(promote="v2")
    assert dec.event.action == "promote" and (dec.event.previous_weight, dec.event.weight) == (10, 100)
    assert dec.event.summary == "promote v2 10% -> 100% (full: remaining steps skipped)"
    assert "promote --full" in dec.event.reason and d.status["stable"]["version"] == "v2"
    assert weights(d) == {"v2": 100}


def test_promote_full_still_waits_for_readiness():
    d = Driver(release(release_doc(status={"phase": "Promoted", "stable": {"version": "v1", "image": "i:1"}})))
    d.tick(promote="v2")
    assert d.tick(ready=False).event is None and d.status["weight"] == 0
    assert d.tick().event.action == "promote"


def test_rollback_to_a_revision_of_the_window_is_instant_and_sticks():
    d = deployed()
    v2 = d.status["stable"]["revision"]
    for image in ("example.com/reviews:v3", "example.com/reviews:v4"):
        change(d, target={"version": image.rsplit(":", 1)[1], "image": image})
        walk(d)
    assert [p["revision"] for p in d.status["previous"]] == ["v3", v2]
    assert set(d.status["snapshots"]) >= {"v3", "v4", v2}
    dec = d.tick(seconds=61, rollback="v3@1")
    assert dec.event.action == "rollback" and dec.urgent and (dec.event.previous_weight, dec.event.weight) == (0, 100)
    assert dec.event.summary == "rollback v4 -> v3: v3 100% now (spec.rollback)"
    assert d.status["stable"]["revision"] == "v3" and d.status["rolledBack"]["version"] == "v4"
    assert weights(d) == {"v3": 100}
    for _ in range(3):   # the target v4 does not start again; the old stable retires
        dec = d.tick(seconds=61)
        assert dec.event is None or dec.event.action == "finalize"
    assert d.status["stable"]["revision"] == "v3" and sorted(objects(d, "Deployment")) == ["reviews-v3"]
    assert d.tick(seconds=61, retry=1).event.action == "start"     # retry: v4 goes through the strategy


def test_rollback_to_mid_rollout_sends_the_canary_to_zero():
    d = deployed()
    change(d, target={"version": "v3", "image": "example.com/reviews:v3"})
    walk(d)
    change(d, target={"version": "v4", "image": "example.com/reviews:v4"})
    d.tick(); d.tick()
    assert d.status["weight"] == 10
    dec = d.tick(rollback="v2@1")
    assert dec.event.action == "rollback" and d.status["stable"]["revision"] == "v2"
    assert d.status["rolledBack"]["version"] == "v4" and weights(d) == {"v2": 100}


def test_skip_analysis_advances_on_time_alone():
    d = Driver(release(release_doc(status={"phase": "Promoted", "stable": {"version": "v1", "image": "i:1"}},
                                   skipAnalysis=True)))
    d.tick(); d.tick()
    for w in (20, 50):
        dec = d.tick(seconds=61, results=[bad()])   # the metrics are never asked
        assert d.status["weight"] == w and dec.event.evidence == ()
    assert d.tick(seconds=61, results=[bad()]).event.action == "promote"


def test_a_release_promoted_before_revisions_is_adopted_without_a_restart():
    legacy = {"phase": "Promoted", "stable": {"version": "v2", "image": "example.com/reviews:v2"}, "weight": 100}
    d = Driver(release(release_doc(status=legacy, config=None)))
    before = render(d.rel)
    dec = d.tick()
    assert dec.event.action == "adopt" and d.status["stable"]["revision"] == "v2" and d.status["stable"]["hash"]
    after = render(d.rel)
    # same Deployment reviews-v2, same spec and pod template (no restart); its metadata gains the hash
    assert [(o["kind"], o["metadata"]["name"], o.get("spec")) for o in after] == \
        [(o["kind"], o["metadata"]["name"], o.get("spec")) for o in before]
    assert next(o for o in after if o["kind"] == "Deployment")["metadata"]["annotations"] == \
        {"sluice.dev/revision-hash": d.status["stable"]["hash"]}
    assert d.tick(seconds=3600).event is None           # once
    template = copy.deepcopy(d.rel.spec["template"])
    template["containers"][0]["args"] = ["--fast"]
    change(d, template=template)
    assert d.tick().event.action == "start" and d.status["canary"]["revision"].startswith("v2-")


def test_an_old_approval_does_not_approve_new_content_of_the_same_version():
    d = deployed(gates={"promotion": "manual"}, approve="v2")
    change(d, target={"version": "v2", "image": "example.com/reviews:v2.1"})
    for _ in range(6):
        d.tick(seconds=61)
    assert d.status["phase"] == "WaitingApproval" and d.status["waitingFor"] == "promotion"
    name = d.status["canary"]["revision"]
    assert d.tick(approve=f"{name}@promotion").event.action == "promote"


# --- found by review: each of these reproduced before its fix ---------------------
def test_a_version_name_given_back_to_new_content_never_renders_the_old_snapshot():
    d = deployed()
    old = copy.deepcopy(d.rel.spec["template"])
    old["containers"][0]["env"] = [{"name": "A", "value": "old"}]
    change(d, target={"version": "v3", "image": "example.com/reviews:v3"}, template=old)
    walk(d)
    change(d, target={"version": "v4", "image": "example.com/reviews:v4"})
    walk(d)
    d.tick(seconds=100)
    new = copy.deepcopy(old)
    new["containers"][0]["env"] = [{"name": "A", "value": "NEW"}]
    change(d, target={"version": "v3", "image": "example.com/reviews:v3"}, template=new)
    d.tick()
    canary = d.status["canary"]["revision"]
    assert canary != "v3"                                  # the name v3 ran other content
    assert env_of(objects(d, "Deployment")[f"reviews-{canary}"]) == [{"name": "A", "value": "NEW"}]


def test_an_emergency_request_acts_once_whatever_follows():
    from reconciler.cli.commands.rollback import request
    d = deployed()
    for v in ("v3", "v4"):
        change(d, target={"version": v, "image": f"example.com/reviews:{v}"})
        walk(d)
        d.tick(seconds=100)
    first = request(d.rel, None)
    d.tick(seconds=1, rollback=first)
    d.tick(seconds=100)
    assert d.status["stable"]["revision"] == "v3" and "v4" not in [p["revision"] for p in d.status["previous"]]
    second = request(d.rel, None)                    # again: further back, never to what was rolled back from
    assert not second.startswith("v4")
    # a new rollout promotes; the old request left in spec.rollback does not fire again
    change(d, target={"version": "v5", "image": "example.com/reviews:v5"})
    walk(d)
    for _ in range(3):
        dec = d.tick(seconds=61)
        assert dec.event is None or dec.event.action != "rollback", dec.event
    assert d.status["stable"]["revision"] == "v5"


def test_a_used_promote_full_never_skips_the_analysis_of_later_content():
    d = deployed(target={"version": "v1", "image": "example.com/reviews:v1"})
    change(d, target={"version": "v2", "image": "example.com/reviews:v2"})
    d.tick()
    d.tick()
    assert d.tick(promote="v2").event.action == "promote"
    d.tick(seconds=100)
    change(d, target={"version": "v3", "image": "example.com/reviews:v3"})
    walk(d)
    d.tick(seconds=100)
    # a hotfix reuses the version v2 while spec.promote: v2 is still in the spec
    change(d, target={"version": "v2", "image": "example.com/reviews:v2-hotfix-untested"})
    seen = [d.tick(seconds=61).event for _ in range(3)]
    assert [e.action for e in seen if e][:2] == ["start", "advance"] and d.status["weight"] < 100


def test_templates_kept_in_status_are_checked_for_pod_security_too():
    doc = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {
        "version": "v1", "image": "example.com/reviews:v1", "revision": "v1", "hash": "0" * 16},
        "snapshots": {"v1": {"template": {"hostNetwork": True, "containers": [
            {"name": "reviews", "securityContext": {"privileged": True}}]}}}})
    loaded = load_files({"releases/bookinfo/reviews.yaml": dump(doc).encode()})
    assert not loaded.releases
    assert any("status" in p.path and "privileged" in p.message for p in loaded.problems), loaded.problems


def test_config_over_the_limit_is_refused_at_file_line():
    doc = release_doc(config={"files": ["big.txt"]})
    loaded = load_files({"releases/bookinfo/reviews.yaml": dump(doc).encode(),
                         "releases/bookinfo/reviews/big.txt": b"x" * (65 * 1024)})
    assert not loaded.releases and "over 64 KiB" in loaded.problems[0].message and loaded.problems[0].line > 1


def test_a_rolling_release_keeps_the_old_configmap_while_the_new_revision_rolls_in():
    d = deployed(strategy="rolling", config={"data": {"LEVEL": "info"}})
    before = set(objects(d, "ConfigMap"))
    change(d, config={"data": {"LEVEL": "debug"}})
    d.tick(ready=False)
    during = set(objects(d, "ConfigMap"))
    assert before < during and len(during) == 2
