"""A small GitOps applier for tests: Argo CD or Flux as Sluice sees them.

It runs in a thread against a git server and the API emulator and does what
the real controllers do, as far as Sluice can tell:

- it keeps its own clone and fetches the branch every ``poll`` seconds (Argo
  CD's ``timeout.reconciliation``, a Flux GitRepository's ``interval``), or on
  its next short ``tick`` when asked: an ``argocd.argoproj.io/refresh``
  annotation on the Application (removed once handled, as Argo CD does), or a
  ``reconcile.fluxcd.io/requestedAt`` on the Kustomization or GitRepository
  that differs from its ``status.lastHandledReconcileAt``;
- ``lag`` seconds after it saw a new revision it applies the path's
  kustomization (``resources`` lists of folders and files) to the emulator by
  server-side apply as ``argocd-controller`` or ``kustomize-controller``,
  prunes what it applied before and no longer finds, marks the Deployments'
  pods ready (``ready``; the emulator runs no pods), then reports through the
  object's status: Argo CD ``status.sync`` (revision, Synced) and
  ``status.health`` on the Application itself (it has no status
  subresource); Flux ``lastAppliedRevision`` (``main@sha1:<sha>``) and the
  Ready condition through the Kustomization's status subresource;
- Argo CD reports a new revision as OutOfSync at once when its rendered tree
  differs from what is applied (Synced at once when it does not); Flux says
  Ready=Unknown "Reconciliation in progress" meanwhile;
- ``stuck`` (or ``stuck(applier, revision)`` true): it still fetches and
  reports the new revision, but never applies it.

``seen`` and ``applied`` hold, per revision, the wall-clock time (time.time())
it was fetched and applied. The loop is bounded (``max_runtime``) and stops
on ``stop()``; ``wait_for`` waits on a condition the loop signals.
"""

from __future__ import annotations

import copy
import pathlib
import subprocess
import threading
import time
from datetime import datetime, timezone

import kubernetes
import yaml

from tests.support.kube_emulator import Emulator, _gvp_of

ARGO = ("argoproj.io", "v1alpha1", "applications")
KUSTOMIZATION = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
GITREPOSITORY = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
REFRESH = "argocd.argoproj.io/refresh"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(*args: str, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout


def argocd_application(namespace: str, name: str, repo_url: str, path: str = "rendered") -> dict:
    """An Application as docs/argocd.md sets it up."""
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"project": "default",
                     "source": {"repoURL": repo_url, "targetRevision": "main", "path": path},
                     "destination": {"server": "https://kubernetes.default.svc"},
                     "syncPolicy": {"automated": {"prune": True, "selfHeal": True},
                                    "syncOptions": ["ServerSideApply=true"]}}}


def flux_objects(namespace: str, name: str, repo_url: str, path: str = "./rendered") -> list[dict]:
    """A GitRepository and a Kustomization as docs/flux.md sets them up."""
    return [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
             "metadata": {"name": f"{name}-config", "namespace": namespace},
             "spec": {"interval": "1m", "url": repo_url, "ref": {"branch": "main"}}},
            {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
             "metadata": {"name": name, "namespace": namespace},
             "spec": {"interval": "10m", "path": path, "prune": True, "wait": True, "timeout": "5m",
                      "sourceRef": {"kind": "GitRepository", "name": f"{name}-config"}}}]


class TestApplier:
    __test__ = False   # not a pytest class

    def __init__(self, emu: Emulator, repo_url: str, kind: str, namespace: str, name: str, workdir: pathlib.Path, *,
                 branch: str = "main", path: str = "rendered", poll: float = 5.0, lag: float = 0.5,
                 tick: float = 0.05, ready: bool = True, max_runtime: float = 600.0, install: bool = True,
                 objects: list[dict] | None = None):
        """``objects``: the Application, or the GitRepository and Kustomization, to install
        (e.g. the examples under deploy/gitops/, their repo URL replaced by ``repo_url``);
        default: the same setup built here. Name, path and source are read from them."""
        assert kind in ("argocd", "flux")
        self.emu, self.url, self.kind, self.namespace, self.name = emu, repo_url, kind, namespace, name
        self.objects = copy.deepcopy(objects) if objects else (
            [argocd_application(namespace, name, repo_url, path)] if kind == "argocd"
            else flux_objects(namespace, name, repo_url, "./" + path.strip("./")))
        main = next(o for o in self.objects if o["kind"] in ("Application", "Kustomization"))
        self.name = main["metadata"]["name"]
        path = main["spec"]["source"]["path"] if kind == "argocd" else main["spec"]["path"]
        self.source = (main["spec"].get("sourceRef") or {}).get("name")
        self.branch, self.path = branch, path.strip("./") or "."
        self.poll, self.lag, self.tick, self.ready, self.max_runtime = poll, lag, tick, ready, max_runtime
        self.manager = "argocd-controller" if kind == "argocd" else "kustomize-controller"
        self.clone = workdir / f"applier-{kind}-{name}.git"
        _git("init", "-q", "--bare", str(self.clone))
        self.stuck = False
        self.seen: dict[str, float] = {}      # revision -> when fetched first (time.time())
        self.applied: dict[str, float] = {}   # revision -> when applied and reported (time.time())
        self.nudged: list[float] = []         # when a nudge was honoured
        self.fetches = 0
        self.errors: list[str] = []
        self.target: str | None = None        # the newest revision fetched
        self.current: str | None = None       # the revision applied
        self._seen_mono: dict[str, float] = {}
        self._inventory: set[tuple] = set()
        self._next_poll = 0.0
        self._reported: tuple | None = None
        self._stuck_seen: dict[tuple, bool] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"applier-{kind}", daemon=True)
        self.api = kubernetes.client.CustomObjectsApi(emu.api_client())
        if install:
            self.install()

    # --- life ------------------------------------------------------------------
    def install(self) -> None:
        for obj in copy.deepcopy(self.objects):
            if obj["kind"] == "Application":
                obj["spec"]["source"]["repoURL"] = self.url
            elif obj["kind"] == "GitRepository":
                obj["spec"]["url"] = self.url
            group, version = obj["apiVersion"].split("/")
            plural = {"Application": "applications", "Kustomization": "kustomizations",
                      "GitRepository": "gitrepositories"}[obj["kind"]]
            self.api.create_namespaced_custom_object(group, version, self.namespace, plural, obj,
                                                     _preload_content=False)

    def __enter__(self) -> "TestApplier":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "TestApplier":
        return self.__enter__()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def wait_for(self, pred, timeout: float = 30.0) -> bool:
        """Wait until ``pred(self)`` holds (checked whenever the loop changes something)."""
        with self._cond:
            return self._cond.wait_for(lambda: pred(self), timeout)

    def _signal(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- the loop ----------------------------------------------------------------
    def _loop(self) -> None:
        end = time.monotonic() + self.max_runtime
        while not self._stop.wait(self.tick) and time.monotonic() < end:
            try:
                self._step()
            except Exception as exc:   # noqa: BLE001 - a test helper reports, the test asserts
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if len(self.errors) > 100:
                    del self.errors[:50]
            self._signal()

    def _step(self) -> None:
        now = time.monotonic()
        asked = self._asked()
        if asked or now >= self._next_poll:
            self._fetch()
            self._next_poll = now + self.poll
            if asked:
                self.nudged.append(time.time())
                self._handled(asked)
        target = self.target
        if target is None or target == self.current:
            return
        stuck = self._stuck(target)
        if stuck or now < self._seen_mono[target] + self.lag:
            self._report_progress(target)
            return
        self._apply(target)

    def _fetch(self) -> None:
        _git("fetch", "-q", "--no-tags", self.url, f"+refs/heads/{self.branch}:refs/heads/{self.branch}",
             cwd=self.clone)
        self.fetches += 1
        tip = _git("rev-parse", self.branch, cwd=self.clone).strip()
        if tip not in self.seen:
            self.seen[tip] = time.time()
            self._seen_mono[tip] = time.monotonic()
        if tip != self.target:
            self.target = tip
            if self.kind == "argocd" and self.current and self._tree(tip) == self._tree(self.current):
                self.current = tip   # Argo CD: nothing to sync, Synced at the new revision at once
                self.applied.setdefault(tip, time.time())
                self._report_done(tip)

    # --- nudges ---------------------------------------------------------------------
    def _obj(self, gvp: tuple, name: str) -> dict:
        return self.emu.get(gvp[2], self.namespace, name) or {}

    def _asked(self) -> list[tuple]:
        """The objects whose nudge annotation asks for a reconcile now."""
        out = []
        if self.kind == "argocd":
            app = self._obj(ARGO, self.name)
            if ((app.get("metadata") or {}).get("annotations") or {}).get(REFRESH):
                out.append((ARGO, self.name, None))
            return out
        for gvp, name in ((KUSTOMIZATION, self.name), (GITREPOSITORY, self.source)):
            obj = self._obj(gvp, name)
            asked = ((obj.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_AT)
            if asked and asked != (obj.get("status") or {}).get("lastHandledReconcileAt"):
                out.append((gvp, name, asked))
        return out

    def _handled(self, asked: list[tuple]) -> None:
        for gvp, name, value in asked:
            if gvp == ARGO:   # Argo CD removes the annotation once it refreshed
                self.api.patch_namespaced_custom_object(*ARGO[:2], self.namespace, ARGO[2], name,
                                                        {"metadata": {"annotations": {REFRESH: None}}},
                                                        _content_type="application/merge-patch+json")
            else:
                self._flux_status(gvp, name, {"lastHandledReconcileAt": value})

    # --- apply --------------------------------------------------------------------------
    def _tree(self, rev: str) -> str:
        try:
            return _git("rev-parse", f"{rev}:{self.path}", cwd=self.clone).strip()
        except subprocess.CalledProcessError:
            return ""

    def _stuck(self, rev: str) -> bool:
        if not callable(self.stuck):
            return bool(self.stuck)
        key = (id(self.stuck), rev)   # a revision's files never change: ask once per predicate
        if key not in self._stuck_seen:
            self._stuck_seen[key] = bool(self.stuck(self, rev))
        return self._stuck_seen[key]

    def has_applied(self, commit: str) -> bool:
        """Has it applied ``commit`` or a later commit?"""
        return any(rev == commit or subprocess.run(["git", "merge-base", "--is-ancestor", commit, rev],
                                                   cwd=self.clone, capture_output=True).returncode == 0
                   for rev in list(self.applied))

    def read(self, rev: str, path: str) -> str | None:
        """A file at ``rev`` of the applier's clone (None: not there)."""
        return self._read(rev, path)

    def _read(self, rev: str, path: str) -> str | None:
        try:
            return _git("show", f"{rev}:{path}", cwd=self.clone)
        except subprocess.CalledProcessError:
            return None

    def _build(self, rev: str, folder: str, depth: int = 0) -> list[dict]:
        """kustomize build, as far as rendered/ needs: ``resources`` of folders and files."""
        if depth > 5:
            return []
        kust = yaml.safe_load(self._read(rev, f"{folder}/kustomization.yaml") or "{}") or {}
        out: list[dict] = []
        for res in kust.get("resources") or []:
            path = f"{folder}/{res.rstrip('/')}"
            if res.endswith("/") or self._read(rev, f"{path}/kustomization.yaml") is not None:
                out += self._build(rev, path, depth + 1)
            else:
                out += [d for d in yaml.safe_load_all(self._read(rev, path) or "") if isinstance(d, dict)]
        return out

    def _apply(self, rev: str) -> None:
        objs = self._build(rev, self.path)
        applied: set[tuple] = set()
        for obj in objs:
            obj = copy.deepcopy(obj)
            self.emu.apply_as(self.manager, obj, force=True)
            meta = obj["metadata"]
            applied.add((_gvp_of(obj), meta.get("namespace"), meta["name"]))
        for gvp, ns, name in sorted(self._inventory - applied):   # prune
            self.emu._sync(lambda gvp=gvp, ns=ns, name=name: self.emu.emu.delete(gvp, ns, name))
        self._inventory = applied
        if self.ready:
            for gvp, ns, name in applied:
                if gvp[2] == "deployments":
                    self.emu.set_ready(ns, name)
        self.current = rev
        self.applied[rev] = time.time()
        self._report_done(rev)

    # --- status ---------------------------------------------------------------------------
    def _argo_status(self, status: dict) -> None:
        # no status subresource: the controller writes status with the object
        self.api.patch_namespaced_custom_object(*ARGO[:2], self.namespace, ARGO[2], self.name, {"status": status},
                                                _content_type="application/merge-patch+json")

    def _flux_status(self, gvp: tuple, name: str, status: dict) -> None:
        self.api.patch_namespaced_custom_object_status(gvp[0], gvp[1], self.namespace, gvp[2], name,
                                                       {"status": status},
                                                       _content_type="application/merge-patch+json")

    def _report_progress(self, rev: str) -> None:
        if self._reported == ("progress", rev):
            return
        self._reported = ("progress", rev)
        if self.kind == "argocd":
            self._argo_status({"sync": {"status": "OutOfSync", "revision": rev},
                               "health": {"status": "Healthy" if self.current else "Missing"},
                               "reconciledAt": _now()})
            return
        gen = self._obj(KUSTOMIZATION, self.name).get("metadata", {}).get("generation", 1)
        self._flux_status(GITREPOSITORY, self.source,
                          {"artifact": {"revision": f"{self.branch}@sha1:{rev}"}})
        self._flux_status(KUSTOMIZATION, self.name, {
            "lastAttemptedRevision": f"{self.branch}@sha1:{rev}", "observedGeneration": gen,
            "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Progressing",
                            "message": "Reconciliation in progress", "observedGeneration": gen,
                            "lastTransitionTime": _now()}]})

    def _report_done(self, rev: str) -> None:
        self._reported = ("done", rev)
        if self.kind == "argocd":
            self._argo_status({"sync": {"status": "Synced", "revision": rev}, "health": {"status": "Healthy"},
                               "reconciledAt": _now(),
                               "operationState": {"phase": "Succeeded", "finishedAt": _now(),
                                                  "syncResult": {"revision": rev}}})
            return
        gen = self._obj(KUSTOMIZATION, self.name).get("metadata", {}).get("generation", 1)
        revision = f"{self.branch}@sha1:{rev}"
        self._flux_status(GITREPOSITORY, self.source, {"artifact": {"revision": revision}})
        self._flux_status(KUSTOMIZATION, self.name, {
            "lastAppliedRevision": revision, "lastAttemptedRevision": revision, "observedGeneration": gen,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                            "message": f"Applied revision: {revision}", "observedGeneration": gen,
                            "lastTransitionTime": _now()}]})


# --- live traffic, as Istio's telemetry would report it, through a real Prometheus ----------------
class LiveTraffic:
    """An exporter on 127.0.0.1 whose ``istio_requests_total`` grows with the weights of
    the VirtualService LIVE in the emulator (what the applier applied, not what git
    says): a version with 0% live gets no requests. ``errors``: the share of a version's
    requests answered 503."""

    def __init__(self, emu: Emulator, namespace: str, name: str, rps: float = 200.0):
        import http.server
        self.emu, self.namespace, self.name, self.rps = emu, namespace, name, rps
        self.errors: dict[str, float] = {}
        self.counts: dict[tuple[str, str], float] = {}
        self._last = time.monotonic()
        self._lock = threading.Lock()
        traffic = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):   # noqa: N802 - http.server's name
                body = traffic.scrape().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "LiveTraffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def weights(self) -> dict[str, int]:
        vs = self.emu.get("virtualservices", self.namespace, self.name)
        if not vs:
            return {}
        routes = ((vs.get("spec") or {}).get("http") or [{}])[-1].get("route") or []
        return {r["destination"]["subset"]: int(r.get("weight", 100 if len(routes) == 1 else 0)) for r in routes}

    def scrape(self) -> str:
        with self._lock:
            now = time.monotonic()
            dt, self._last = now - self._last, now
            for version, weight in self.weights().items():
                bad = self.errors.get(version, 0.0)
                for code, share in (("200", 1 - bad), ("503", bad)):
                    key = (version, code)
                    self.counts[key] = self.counts.get(key, 0.0) + self.rps * dt * weight / 100 * share
            lines = ["# TYPE istio_requests_total counter"]
            for (version, code), n in sorted(self.counts.items()):
                labels = (f'reporter="destination",destination_workload_namespace="{self.namespace}",'
                          f'destination_workload="{self.name}-{version}",response_code="{code}"')
                lines.append(f"istio_requests_total{{{labels}}} {n:.3f}")
            return "\n".join(lines) + "\n"


class ScrapingPrometheus:
    """A real Prometheus on 127.0.0.1 scraping ``target`` every ``every`` (stopped by PID)."""

    def __init__(self, target: str, workdir: pathlib.Path, every: str = "500ms"):
        from tests.support.gitserver import free_port
        self.dir = workdir / "prometheus"
        (self.dir / "data").mkdir(parents=True)
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(f"global: {{scrape_interval: {every}, evaluation_interval: 1m}}\n"
                       f"scrape_configs:\n  - job_name: mesh\n    honor_labels: true\n"
                       f"    static_configs: [{{targets: ['{target}']}}]\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._cmd = ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ScrapingPrometheus":
        import urllib.request
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            self._stopped(0.1)
        self.__exit__()
        raise RuntimeError("prometheus did not become ready")

    def _stopped(self, seconds: float) -> bool:
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            if not self._stopped(10):
                self.proc.kill()
                self.proc.wait(timeout=10)
