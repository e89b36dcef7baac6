"""Each strategy walked from start to promotion and to rollback: at every
step the rendered VirtualService (weights, match routes, mirror) and the
commit message written for it."""

import pytest

from reconciler.core.messages import format_commit, parse_commit
from reconciler.core.render import render
from tests.support.drive import Driver, bad
from tests.support.specs import release, release_doc

V1 = {"version": "v1", "image": "example.com/reviews:v1"}


def vs(rel):
    return next(o for o in render(rel) if o["kind"] == "VirtualService")


def routes(rel):
    http = vs(rel)["spec"]["http"]
    primary = http[-1]
    return {"match": http[0]["name"] == "match" and http[0]["route"][0]["destination"]["subset"],
            "weights": {d["destination"]["subset"]: d["weight"] for d in primary["route"]},
            "mirror": primary.get("mirror", {}).get("subset"),
            "mirror%": primary.get("mirrorPercentage", {}).get("value")}


def walk(strategy, *, fail=False, approve=False, limit=40):
    d = Driver(release(release_doc(strategy=strategy, status={"phase": "Promoted", "stable": dict(V1), "weight": 100})))
    seen = []
    for _ in range(limit):
        dec = d.tick(seconds=61, results=[bad()] if fail and d.status.get("step", 0) >= 1 else None,
                     **({"approve": "v2"} if approve and d.status.get("phase") == "WaitingApproval" else {}))
        if dec.event:
            msg = format_commit(dec.event)
            parsed = parse_commit(msg)
            assert parsed.release == "bookinfo/reviews" and parsed.action == dec.event.action
            assert msg.splitlines()[0] == f"bookinfo/reviews: {dec.event.summary}"
            seen.append((dec.event.action, routes(d.rel)))
        if d.status["phase"] in ("Promoted", "RolledBack") and seen:
            break
    return seen


LIVE_V2 = {"v1": 100}


@pytest.mark.parametrize("strategy,expect", [
    ("canary", [("start", False, {"v1": 100}, None), ("advance", False, {"v1": 90, "v2": 10}, None),
                ("advance", False, {"v1": 80, "v2": 20}, None), ("advance", False, {"v1": 50, "v2": 50}, None),
                ("promote", False, {"v2": 100}, None)]),
    ("blueGreen", [("start", "v2", LIVE_V2, "v2")] + [("advance", "v2", LIVE_V2, "v2")] * 3 + [("promote", False, {"v2": 100}, None)]),
    ("abTesting", [("start", "v2", LIVE_V2, None)] + [("advance", "v2", LIVE_V2, None)] * 3 + [("promote", False, {"v2": 100}, None)]),
    ("mirror", [("start", False, LIVE_V2, "v2")] + [("advance", False, LIVE_V2, "v2")] * 2 +
     [("advance", False, {"v1": 75, "v2": 25}, None), ("advance", False, {"v1": 50, "v2": 50}, None),
      ("promote", False, {"v2": 100}, None)]),
    ("darkLaunch", [("start", "v2", LIVE_V2, None), ("advance", "v2", LIVE_V2, None),
                    ("wait-approval", "v2", LIVE_V2, None), ("promote", False, {"v2": 100}, None)]),
])
def test_walk_to_promotion(strategy, expect):
    seen = walk(strategy, approve=True)
    got = [(a, r["match"], r["weights"], r["mirror"]) for a, r in seen]
    assert got == expect


@pytest.mark.parametrize("strategy", ["canary", "blueGreen", "abTesting", "mirror", "darkLaunch"])
def test_walk_to_rollback(strategy):
    seen = walk(strategy, fail=True)
    action, r = seen[-1]
    assert action == "rollback"
    assert r == {"match": False, "weights": {"v1": 100}, "mirror": None, "mirror%": None}


@pytest.mark.parametrize("strategy", ["rolling", "recreate"])
def test_plain_strategies_walk(strategy):
    d = Driver(release(release_doc(strategy=strategy, status={"phase": "Promoted", "stable": dict(V1), "weight": 100})))
    d.tick()
    image = lambda: next(o for o in render(d.rel) if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image() == "example.com/reviews:v2"             # rolling to the new image
    assert d.tick(ready="failed").event.action == "rollback"
    assert image() == "example.com/reviews:v1"             # back to stable
