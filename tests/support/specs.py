"""Release documents for tests, built the way people write them.

``release_doc(strategy=..., **overrides)`` gives a valid Release document
(plain data) for any strategy; tests change what they need. ``write_repo``
lays documents out as a config repo on disk.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

from ruamel.yaml import YAML

from reconciler.core.model import Release

STRATEGIES: dict[str, dict[str, Any]] = {
    "canary": {"canary": {"steps": [10, 20, 50], "interval": "1m", "maxFailedChecks": 2}},
    "blueGreen": {"blueGreen": {"preview": {"match": [{"headers": {"x-preview": {"exact": "1"}}}]},
                                "mirror": True, "mirrorPercentage": 50, "iterations": 3, "interval": "1m"}},
    "abTesting": {"abTesting": {"match": [{"headers": {"x-user-type": {"exact": "premium"}}},
                                          {"cookie": {"name": "beta", "value": "yes"}}],
                                "iterations": 3, "interval": "1m"}},
    "darkLaunch": {"darkLaunch": {"match": [{"sourceLabels": {"app": "qa"}}], "interval": "1m"}},
    "mirror": {"mirror": {"percentage": 40, "iterations": 2, "interval": "1m",
                          "canary": {"steps": [25, 50], "interval": "1m"}}},
    "rolling": {"rolling": {"maxSurge": 1, "maxUnavailable": 0}},
    "recreate": {"recreate": {}},
}


def release_doc(name: str = "reviews", namespace: str = "bookinfo", strategy: str = "canary",
                version: str = "v2", status: dict | None = None, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "service": {"name": name, "port": 9080},
            "replicas": 2,
            "template": {"containers": [{"name": name, "ports": [{"containerPort": 9080}],
                                         "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}}}]},
            "target": {"version": version, "image": f"example.com/{name}:{version}"},
            "strategy": copy.deepcopy(STRATEGIES[strategy]),
            "analysis": {"metrics": [{"name": "request-success-rate", "min": 99}]},
        },
    }
    doc["spec"].update(spec)
    if status is not None:
        doc["status"] = status
    return doc


def at_rest(name: str, namespace: str = "bookinfo") -> dict[str, Any]:
    """A release promoted to its target, as Sluice leaves one at rest (no metrics to check)."""
    doc = release_doc(name=name, namespace=namespace, status={
        "phase": "Promoted", "weight": 100, "step": 0, "failedChecks": 0,
        "stable": {"version": "v1", "image": f"example.com/{name}:v1"}})
    doc["spec"]["target"] = {"version": "v1", "image": f"example.com/{name}:v1"}
    doc["spec"]["analysis"] = {"metrics": []}
    return doc


def release(doc: dict[str, Any] | None = None, **kw: Any) -> Release:
    doc = doc or release_doc(**kw)
    meta = doc["metadata"]
    return Release(path=f"releases/{meta['namespace']}/{meta['name']}.yaml", doc=doc)


def dump(doc: dict[str, Any]) -> str:
    import io
    y = YAML()
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def write_repo(root: pathlib.Path, docs: list[dict[str, Any]], settings: str | None = None) -> pathlib.Path:
    for doc in docs:
        meta = doc["metadata"]
        path = root / "releases" / meta["namespace"] / f"{meta['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(doc))
    if settings is not None:
        (root / "sluice.yaml").write_text(settings)
    return root
