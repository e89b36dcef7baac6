"""A Kubernetes API emulator honest enough for a controller, built on kmock.

kmock 0.8 parses requests (resource, namespace, name, action) and serves them
over HTTP on 127.0.0.1 for the official ``kubernetes`` client; its stock
emulator misses what a controller depends on (../shared/testing.md). This
subclass keeps kmock's server, parsing and discovery and replaces the object
store for resource requests with one that has:

- ``resourceVersion`` (a global counter), ``uid``, ``generation`` (bumped on
  spec change) and ``creationTimestamp``;
- 201 on create, 409 AlreadyExists;
- PUT/replace with 409 Conflict on a stale ``resourceVersion`` (leases work);
- server-side apply (``application/apply-patch+yaml``) that creates a missing
  object; merge patches that merge dicts and replace lists;
- label selectors (``k=v``, ``k!=v``, ``k``), ``limit``/``continue`` on LIST;
- watches that replay current objects and end after ``timeoutSeconds``;
- a bounded request log and counters of (verb, plural, namespace) for tests;
- fault injection: the next N requests matching (verb, plural) answer a
  status code (409, 429, 500, 403), and ``down()`` refuses connections.

Known gaps: no field ownership in SSA, lists replaced rather than merged, no
defaulting or admission, watch events are not streamed after the replay.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import threading
import uuid
from datetime import datetime, timezone
from typing import Any

import aiohttp.web
import attrs
import kmock
import kubernetes
import yaml

LOG_LIMIT = 500


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch: dicts merge, None deletes, everything else replaces."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(base.get(key), value)
    return out


def _selector(text: str):
    tests = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            tests.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in term:
            k, v = term.split("=", 1)
            k, v = k.rstrip("="), v.lstrip("=")
            tests.append(lambda labels, k=k, v=v: labels.get(k) == v)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return lambda labels: all(t(labels) for t in tests)


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": message, "reason": reason, "code": code}, status=code)


@attrs.define(kw_only=True)
class StrictEmulator(kmock.KubernetesEmulator):
    store: dict = attrs.field(factory=dict)
    rv: int = 0
    counts: collections.Counter = attrs.field(factory=collections.Counter)
    log: collections.deque = attrs.field(factory=lambda: collections.deque(maxlen=LOG_LIMIT))
    faults: list = attrs.field(factory=list)

    # --- helpers for tests (called from the test thread through the loop) --
    def _key(self, request) -> tuple:
        res = request.resource
        return (res.group or "", res.version, res.plural)

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def _handle(self, request):
        # kmock keeps every request; a long test would slow down. Keep the last few.
        if len(self._requests) > LOG_LIMIT:
            del self._requests[: len(self._requests) - LOG_LIMIT]
        if request.resource is None or request.resource.plural is None:
            return await super()._handle(request)
        verb = self._verb(request)
        plural = request.resource.plural
        self.counts[(verb, plural, request.namespace or "")] += 1
        self.log.append((verb, plural, request.namespace, request.name))
        for fault in self.faults:
            if fault["n"] > 0 and fault["verb"] in (verb, "*") and fault["plural"] in (plural, "*"):
                fault["n"] -= 1
                headers = {"Retry-After": "0"} if fault["code"] == 429 else {}
                resp = _status(fault["code"], fault["reason"], fault["message"])
                resp.headers.update(headers)
                return resp
        return await getattr(self, f"_do_{verb}")(request)

    def _verb(self, request) -> str:
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method == "GET":
            if request.params.get("watch") in ("true", "1"):
                return "watch"
            return "get" if request.name else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())

    def _objects_of(self, request):
        kind = self._key(request)
        return {k: v for k, v in self.store.items() if k[0] == kind}

    def _kind_of(self, request, body=None) -> str:
        if body and body.get("kind"):
            return body["kind"]
        for (kind, _, _), obj in self.store.items():
            if kind == self._key(request):
                return obj["kind"]
        return request.resource.plural.capitalize()

    def _new_meta(self, obj: dict, request) -> dict:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", request.namespace)
        if meta.get("namespace") is None:
            meta.pop("namespace")
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        return obj

    def _store_key(self, request, name=None):
        return (self._key(request), request.namespace, name or request.name)

    def _touch(self, old: dict, new: dict) -> dict:
        new["metadata"]["uid"] = old["metadata"]["uid"]
        new["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        gen = old["metadata"].get("generation", 1)
        if new.get("spec") != old.get("spec"):
            gen += 1
        new["metadata"]["generation"] = gen
        if "status" in old and "status" not in new:
            new["status"] = old["status"]
        if new != old:
            new["metadata"]["resourceVersion"] = self._next_rv()
        else:
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return new

    # --- verbs -----------------------------------------------------------
    async def _do_list(self, request):
        match = _selector(request.params.get("labelSelector", ""))
        items = [copy.deepcopy(o) for (k, ns, name), o in sorted(self._objects_of(request).items(),
                                                                  key=lambda kv: (kv[0][1] or "", kv[0][2]))
                 if (request.namespace is None or ns == request.namespace)
                 and match((o.get("metadata") or {}).get("labels") or {})]
        start = int(request.params.get("continue") or 0)
        limit = int(request.params.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        items = items[start:start + limit] if limit else items[start:]
        kind = self._kind_of(request)
        return aiohttp.web.json_response({"apiVersion": "/".join(filter(None, self._key(request)[:2])),
                                          "kind": f"{kind}List", "metadata": meta, "items": items})

    async def _do_watch(self, request):
        """Replay the current objects as ADDED events, then end (a client re-watches)."""
        match = _selector(request.params.get("labelSelector", ""))
        lines = [json.dumps({"type": "ADDED", "object": o}) for (k, ns, name), o in sorted(
            self._objects_of(request).items(), key=lambda kv: (kv[0][1] or "", kv[0][2]))
            if (request.namespace is None or ns == request.namespace)
            and match((o.get("metadata") or {}).get("labels") or {})]
        return aiohttp.web.Response(body=("\n".join(lines) + "\n").encode() if lines else b"",
                                    content_type="application/json")

    async def _do_get(self, request):
        obj = self.store.get(self._store_key(request))
        if obj is None:
            return _status(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
        return aiohttp.web.json_response(obj)

    async def _do_create(self, request):
        body = copy.deepcopy(request.data)
        name = (body.get("metadata") or {}).get("name")
        key = self._store_key(request, name)
        if key in self.store:
            return _status(409, "AlreadyExists", f'{request.resource.plural} "{name}" already exists')
        self.store[key] = self._new_meta(body, request)
        return aiohttp.web.json_response(body, status=201)

    async def _do_update(self, request):
        key = self._store_key(request)
        old = self.store.get(key)
        if old is None:
            return _status(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
        body = copy.deepcopy(request.data)
        given = (body.get("metadata") or {}).get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", f'Operation cannot be fulfilled on {request.resource.plural} '
                                            f'"{request.name}": the object has been modified')
        body.setdefault("metadata", {})["namespace"] = old["metadata"].get("namespace")
        self.store[key] = self._touch(old, body)
        return aiohttp.web.json_response(self.store[key])

    async def _do_patch(self, request):
        key = self._store_key(request)
        ctype = request.headers.get("Content-Type", "")
        patch = yaml.safe_load(request.body) if "apply-patch" in ctype else json.loads(request.body or b"{}")
        if isinstance(patch, list):
            return _status(415, "UnsupportedMediaType", "JSON patch is not supported by this emulator")
        old = self.store.get(key)
        if old is None:
            if "apply-patch" not in ctype:
                return _status(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
            self.store[key] = self._new_meta(copy.deepcopy(patch), request)
            return aiohttp.web.json_response(self.store[key], status=201)
        meta_keep = {k: v for k, v in old["metadata"].items()}
        new = _merge(old, patch)
        new["metadata"] = {**meta_keep, **(patch.get("metadata") or {})}
        if request.subresource == "status":
            new = {**old, "status": new.get("status")}
        self.store[key] = self._touch(old, new)
        return aiohttp.web.json_response(self.store[key])

    async def _do_delete(self, request):
        obj = self.store.pop(self._store_key(request), None)
        if obj is None:
            return _status(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
        return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                          "details": {"name": request.name}})


PLURALS = {("apps", "v1", "Deployment"): "deployments", ("", "v1", "Service"): "services",
           ("networking.istio.io", "v1", "VirtualService"): "virtualservices",
           ("networking.istio.io", "v1", "DestinationRule"): "destinationrules",
           ("coordination.k8s.io", "v1", "Lease"): "leases"}


class Emulator:
    """The emulator served on 127.0.0.1 from a background thread with its own loop."""

    def __enter__(self) -> "Emulator":
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.thread.start()
        self._call(self._start())
        return self

    async def _start(self):
        self.emu = StrictEmulator()
        self.server = kmock.Server(self.emu, host="127.0.0.1")
        await self.server.__aenter__()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def __exit__(self, *exc) -> None:
        self._call(self.server.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _sync(self, fn):
        async def run():
            return fn()
        return self._call(run())

    # --- for tests --------------------------------------------------------
    def api_client(self) -> kubernetes.client.ApiClient:
        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.retries = False
        return kubernetes.client.ApiClient(cfg)

    @property
    def counts(self) -> collections.Counter:
        return self._sync(lambda: collections.Counter(self.emu.counts))

    def reset_counts(self) -> None:
        self._sync(self.emu.counts.clear)

    def writes(self) -> int:
        return sum(n for (verb, _, _), n in self.counts.items() if verb in ("create", "update", "patch", "delete"))

    def objects(self, plural: str | None = None) -> dict:
        return self._sync(lambda: {k: copy.deepcopy(v) for k, v in self.emu.store.items()
                                   if plural is None or k[0][2] == plural})

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        for (kind, ns, n), obj in self.objects(plural).items():
            if ns == namespace and n == name:
                return obj
        return None

    def edit(self, plural: str, namespace: str, name: str, fn) -> None:
        """Change an object behind the controller's back (like ``kubectl edit``)."""
        def run():
            for key, obj in self.emu.store.items():
                if key[0][2] == plural and key[1] == namespace and key[2] == name:
                    new = copy.deepcopy(obj)
                    fn(new)
                    self.emu.store[key] = self.emu._touch(obj, new)
                    return
            raise KeyError(name)
        self._sync(run)

    def put(self, obj: dict) -> None:
        """Create an object directly (e.g. one that Sluice does not own)."""
        group, _, version = obj["apiVersion"].rpartition("/")
        plural = PLURALS[(group, version, obj["kind"])]

        def run():
            body = copy.deepcopy(obj)
            meta = body.setdefault("metadata", {})
            meta.update(uid=str(uuid.uuid4()), generation=1, resourceVersion=self.emu._next_rv(),
                        creationTimestamp="2026-01-01T00:00:00Z")
            self.emu.store[((group, version, plural), meta.get("namespace"), meta["name"])] = body
        self._sync(run)

    def set_ready(self, namespace: str, name: str, ready: bool = True, *, failed: bool = False) -> None:
        """Pretend the Deployment's pods came up (or not)."""
        def fn(dep):
            n = dep["spec"].get("replicas", 1)
            ok = n if ready else 0
            dep["status"] = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": n,
                             "updatedReplicas": ok, "readyReplicas": ok, "availableReplicas": ok}
            if failed:
                dep["status"]["conditions"] = [{"type": "Progressing", "status": "False",
                                                "reason": "ProgressDeadlineExceeded"}]
        self.edit("deployments", namespace, name, fn)

    def all_ready(self) -> None:
        for (kind, ns, name), obj in self.objects("deployments").items():
            self.set_ready(ns, name, True)

    def fail_next(self, verb: str, plural: str, code: int, n: int = 1, reason: str = "", message: str = "") -> None:
        reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 403: "Forbidden", 503: "ServiceUnavailable"}
        fault = {"verb": verb, "plural": plural, "code": code, "n": n, "reason": reason or reasons.get(code, "Error"),
                 "message": message or f"injected {code}"}
        self._sync(lambda: self.emu.faults.append(fault))


def kubeconfig(path, url: str):
    """A kubeconfig file pointing at the emulator (for subprocesses and CLIs)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "u"}}]}))
    return path
