"""Controller figures, each beside a floor of the same work measured in the same run:

- no-op pass over N releases against the emulated API server (time, requests,
  writes) vs a no-op ``git fetch`` plus the raw LIST calls through the same client;
- the pass after a one-file change (a release's replicas) among N vs the
  unavoidable part of it: ``git fetch`` of that one commit, parsing that one
  file, one server-side apply of the changed Deployment;
- peak resident memory of ``sluice run --once`` over N releases (kubernetes
  target, the same emulator) vs the interpreter with exactly the modules that
  run imported, doing nothing;
- ``status`` over N releases vs parsing the same YAML alone;
- ``plan`` of a one-release change among N vs parsing the changed file at
  both commits;
- a failed check -> rollback applied: from the first query that can see the
  bad metric in a real Prometheus to the VirtualService patched at the API
  server, by a controller on its own schedule (a Runner, as ``sluice run``),
  vs one query plus one server-side apply of the VirtualService;
- push-to-applied latency through the webhook and through the watchdog;
- idle CPU of ``sluice run`` with releases mid-rollout and waiting for
  approval vs the same process with the same releases at rest.

    python bench/bench_controller.py [N ...]     (default 1000 10000)

N sizes the no-op, one-file-change and memory figures; status and plan run
at N/10 and N (at most 1,000).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pathlib
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import emit, figure, measure  # noqa: E402
from bench.genrepo import dump, path_of, release_docs  # noqa: E402
from reconciler.adapters.cluster import KINDS, Cluster, KubernetesTarget  # noqa: E402
from reconciler.adapters.gitrepo import GitRepo  # noqa: E402
from reconciler.adapters.metrics.prometheus import Prometheus  # noqa: E402
from reconciler.cli.commands.plan import command as plan_command  # noqa: E402
from reconciler.cli.commands.status import rows  # noqa: E402
from reconciler.cli.source import open_source  # noqa: E402
from reconciler.controller import Controller  # noqa: E402
from reconciler.core.bulk import collector_paused  # noqa: E402
from reconciler.core import analysis, revision  # noqa: E402
from reconciler.core.diff import stamp  # noqa: E402
from reconciler.core.render import render  # noqa: E402
from reconciler.runtime import Metrics, Runner, Server, WebhookConfig, watch_path  # noqa: E402
from tests.support import prometheus as promsupport  # noqa: E402
from tests.support.gitserver import free_port, git_daemon, run  # noqa: E402
from tests.support.kube_emulator import Emulator, kubeconfig  # noqa: E402
from tests.support.specs import release, release_doc  # noqa: E402

ENV = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "b@x"}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def wait_for(what: str, check, timeout: float, every: float = 0.01):
    """Poll ``check`` until it returns something truthy; bounded by ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def now_iso(delta: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def idle_docs(n: int) -> list[dict]:
    """N releases at rest as Sluice leaves them: promoted, target == stable, its revision named,
    hashed and snapshotted (a stable entry from before revisions would make the first pass adopt
    every release: one commit and one Deployment patch each), time-based analysis."""
    docs = release_docs(n)
    for doc in docs:
        doc["spec"]["analysis"] = {"metrics": []}
        doc["status"] = {"phase": "Promoted", "weight": 100, "step": 0, "failedChecks": 0}
        rel = release(doc)
        stable = revision.target(rel)
        doc["status"].update(stable=stable, snapshots={stable["revision"]: revision.snapshot(rel)})
    return docs


def make_repo(root: pathlib.Path, docs: list[dict]) -> tuple[pathlib.Path, pathlib.Path]:
    """(work checkout, bare remote) holding ``docs``."""
    work, bare = root / "work", root / "config.git"
    for doc in docs:
        p = work / path_of(doc)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(dump(doc))
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work, env=ENV)
    run("commit", "-q", "-m", "releases", cwd=work, env=ENV)
    run("init", "-q", "--bare", "-b", "main", str(bare))
    run("push", "-q", str(bare), "main", cwd=work, env=ENV)
    run("remote", "add", "origin", str(bare), cwd=work)
    run("fetch", "-q", "origin", cwd=work)
    run("branch", "-q", "-u", "origin/main", cwd=work)
    return work, bare


def populate(emu: Emulator, docs: list[dict]) -> None:
    """The cluster as Sluice left it: every rendered object, stamped as Sluice applies it, ready.

    The same server-side applies and readiness updates as ``apply_as`` + ``all_ready`` per object,
    each batch in one hop onto the emulator's loop and found through the store's index."""
    emu.apply_all("sluice", [stamp(obj, instance="sluice") for doc in docs for obj in render(release(doc))],
                  force=True)
    emu.all_ready()   # their pods came up, as kube-controller-manager reports it


def git_fetch(clone: pathlib.Path) -> None:
    subprocess.run(["git", "-C", str(clone), "fetch", "-q", "origin"], check=True, capture_output=True)


# --- no-op pass, one-file change, memory: one populated emulator per N --------------------------

def bench_passes(n: int) -> None:
    repeat = 5 if n <= 1000 else 2   # keeps `make bench` under 10 minutes: fewer repeats, never a smaller N
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        root = pathlib.Path(tmp)
        docs = idle_docs(n)
        work, bare = make_repo(root, docs)
        t0 = time.perf_counter()
        populate(emu, docs)
        print(f"  populated the emulator with {n} releases in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr, flush=True)
        cluster = Cluster(emu.api_client())
        ctl = Controller(GitRepo(str(bare), root / "clone"), KubernetesTarget(cluster))
        t0 = time.perf_counter()
        first = ctl.run_pass()   # warm: clone, parse cache, inventory
        if first.error or first.problems:
            raise RuntimeError(f"first pass: {first.error or first.problems[:3]}")
        if first.pushed:   # the releases were not at rest: every figure below would time something else
            raise RuntimeError(f"the first pass over releases at rest pushed {len(first.commits)} commit(s)")
        print(f"  first pass over {n} releases in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        floor_clone = root / "floor"
        run("clone", "-q", str(bare), str(floor_clone))
        namespaces = {d["metadata"]["namespace"] for d in docs}

        # no-op pass
        emu.reset_counts()
        report = ctl.run_pass()
        counts = emu.counts
        if report.pushed or report.error:
            raise RuntimeError(f"a no-op pass pushed or failed: {report.error}")
        lists = sum(v for k, v in counts.items() if k[0] == "list")
        fetch = measure(lambda: git_fetch(floor_clone), repeat=repeat)
        kept: list = [None]

        def list_once():
            # as a pass does them: the collector paused for the pass (core/bulk.py), and the last
            # LIST's objects freed as the new ones replace them (the target keeps what it listed)
            with collector_paused():
                kept[0] = cluster.list_managed(namespaces)
        list_calls = measure(list_once, repeat=repeat)
        samples = measure(ctl.run_pass, repeat=repeat, warmup=0)
        emit(figure("no-op pass", n, samples, floor=statistics.median(fetch) + statistics.median(list_calls),
                    floor_name="no-op git fetch + the raw LIST calls, same client", requests=sum(counts.values()),
                    writes=emu.writes(), lists=lists, namespaces=len(namespaces), kinds=len(KINDS),
                    lists_per_kind_per_namespace=round(lists / (len(namespaces) * len(KINDS)), 2)))

        # the pass after a one-file change: the replicas of one release
        doc = docs[n // 2]
        path = work / path_of(doc)
        floor_ns = "bench-floor"
        samples, floors, writes = [], [], []
        for k in range(repeat):
            replicas = 3 + k
            run("pull", "-q", "--rebase", "origin", "main", cwd=work, env=ENV)   # Sluice's own commits first
            text = path.read_text()
            path.write_text(re.sub(r"(?m)^  replicas: \d+$", f"  replicas: {replicas}", text, count=1))
            run("commit", "-q", "-am", f"replicas {replicas}", cwd=work, env=ENV)
            run("push", "-q", "origin", "HEAD:main", cwd=work, env=ENV)
            # the floor: fetch that one commit, parse that one file, apply its changed Deployment once
            data = path.read_bytes()
            changed = dict(doc, spec={**doc["spec"], "replicas": replicas})
            deployment = next(stamp(o, instance="sluice") for o in render(release(changed)) if o["kind"] == "Deployment")
            deployment["metadata"]["namespace"] = floor_ns   # the same object beside it: it changes each time
            with collector_paused():   # as a pass runs (core/bulk.py): a full collection is no part of the work
                t = time.perf_counter()
                git_fetch(floor_clone)
                yaml.load(data, Loader=LOADER)
                cluster.apply(deployment)
                floors.append(time.perf_counter() - t)
            emu.reset_counts()
            t = time.perf_counter()
            report = ctl.run_pass()
            samples.append(time.perf_counter() - t)
            writes.append(emu.writes())
            live = emu.get("deployments", doc["metadata"]["namespace"], deployment["metadata"]["name"])
            if report.error or not live or live["spec"]["replicas"] != replicas:
                raise RuntimeError(f"the pass did not apply replicas {replicas}: {report.error}")
        emit(figure("pass after a one-file change", n, samples, floor=floors,
                    floor_name="git fetch of that commit + parse of that file + one SSA of its Deployment",
                    writes=max(writes)))

        # peak memory of `sluice run --once` over the same repo and cluster (a no-op pass)
        config = kubeconfig(root / "kubeconfig", emu.url)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        peak, modules = _peak_rss(["run", "--once", "--target", "kubernetes", "--kubeconfig", str(config),
                                   "--repo", str(bare), "--workdir", str(root / "w")], env)
        floor, _ = _peak_rss([], env, imports=modules)
        emit(figure("controller peak RSS (sluice run --once)", n, [peak], unit="MB", floor=floor,
                    floor_name=f"interpreter with the {len(modules)} reconciler modules run imported, idle"))


PEAK = ("import importlib, runpy, sys\n"
        "args, imports = sys.argv[1:], [m for m in sys.argv[1:] if m.startswith('import:')]\n"
        "try:\n"
        "    for m in imports:\n"
        "        importlib.import_module(m[7:])\n"
        "    if args and not imports:\n"
        "        sys.argv = ['sluice'] + args\n"
        "        runpy.run_module('reconciler.cli.main', run_name='__main__')\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "    sys.stderr.write('PEAK %s\\n' % hwm)\n"
        "    sys.stderr.write('MODULES %s\\n' % ' '.join(sorted(m for m in sys.modules if m.startswith('reconciler'))))\n")


def _peak_rss(args: list[str], env: dict, imports: list[str] = ()) -> tuple[float, list[str]]:
    """(VmHWM in MB of the process just before it exits, the reconciler modules it had loaded):
    ru_maxrss of a forked child would count the parent's pages it started with."""
    argv = [*args, *(f"import:{m}" for m in imports)]
    proc = subprocess.run([sys.executable, "-c", PEAK, *argv], env=env, capture_output=True, text=True, timeout=600)
    lines = proc.stderr.splitlines()
    peak = [line for line in lines if line.startswith("PEAK ")]
    mods = [line for line in lines if line.startswith("MODULES ")]
    if not peak or proc.returncode != 0:
        raise RuntimeError(f"sluice {' '.join(args)} (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return int(peak[-1].split()[1]) / 1024.0, mods[-1].split()[1:] if mods else []


# --- status and plan ------------------------------------------------------------------------------

def bench_status_plan(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        docs = idle_docs(n)
        work, _ = make_repo(root, docs)
        os.environ["SLUICE_CACHE_DIR"] = str(root / "cache")   # the CLI's load cache: here, not in ~/.cache
        files = {str(p.relative_to(work)): p.read_bytes() for p in (work / "releases").rglob("*.yaml")}
        parse_floor = measure(lambda: [yaml.load(d, Loader=LOADER) for d in files.values()], repeat=5)
        source = open_source(str(work))

        def cold():
            shutil.rmtree(root / "cache", ignore_errors=True)
            rows(source)
        emit(figure("status, cold (no load cache)", n, measure(cold, repeat=3), floor=parse_floor,
                    floor_name="parse the same YAML alone (CSafeLoader)"))

        def read_all():   # what status cannot skip: reading every file of the checkout to see what changed
            for d, _, names in os.walk(work / "releases"):
                for name in names:
                    with open(os.path.join(d, name), "rb") as fh:
                        fh.read()
        emit(figure("status", n, measure(lambda: rows(source), repeat=5), floor=measure(read_all, repeat=5),
                    floor_name="read every release file of the checkout"))
        # plan: change one release
        p = work / path_of(docs[n // 2])
        p.write_text(p.read_text().replace("replicas: 2", "replicas: 3", 1))
        run("commit", "-q", "-am", "change one", cwd=work, env=ENV)
        changed = run("diff", "--name-only", "HEAD~1", "HEAD", cwd=work).split()
        blobs = [run("show", f"{ref}:{name}", cwd=work).encode() for name in changed for ref in ("HEAD~1", "HEAD")]

        def plan_once():
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                return plan_command.callback(str(work), "HEAD~1", "HEAD", "text", False)

        if plan_once() != 2:
            raise RuntimeError("plan did not see the change")
        floor = measure(lambda: [yaml.load(b, Loader=LOADER) for b in blobs], repeat=5)
        emit(figure("plan of a one-release change", n, measure(plan_once, repeat=5), floor=floor,
                    floor_name=f"parse the {len(changed)} changed file(s) at both commits (CSafeLoader)"))


# --- failed check -> rollback applied -------------------------------------------------------------

ROLLBACKS = 5              # releases, one per namespace, each rolled back once
CHECK_INTERVAL = 2.0       # seconds between checks of a release waiting for approval
GOOD_RPS, BAD_RPS = 20.0, 1000.0


class Telemetry:
    """Istio's request counters of each canary as an exporter Prometheus scrapes
    (values follow the clock: ``bad_at[ns]`` turns that canary's answers to 503s)."""

    def __init__(self, namespaces: list[str]):
        self.start, self.namespaces = time.time(), namespaces
        self.bad_at: dict[str, float] = {}

    def exposition(self) -> bytes:
        t = time.time()
        out = ["# TYPE istio_requests_total counter"]
        for ns in self.namespaces:
            sel = f'reporter="destination",destination_workload_namespace="{ns}",destination_workload="reviews-v2"'
            bad = self.bad_at.get(ns)
            errors = 0.0 if bad is None or t < bad else BAD_RPS * (1 + t - bad)
            out.append(f'istio_requests_total{{{sel},response_code="200"}} {GOOD_RPS * (t - self.start):.1f}')
            out.append(f'istio_requests_total{{{sel},response_code="503"}} {errors:.1f}')
        return ("\n".join(out) + "\n").encode()

    def serve(self) -> ThreadingHTTPServer:
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = telemetry.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd


def waiting_doc(ns: str) -> dict:
    """A canary at its last step (50%) waiting for approval: checked every CHECK_INTERVAL;
    one failed check rolls it back."""
    doc = release_doc(namespace=ns, status={
        "phase": "WaitingApproval", "waitingFor": "promotion", "weight": 50, "step": 3, "failedChecks": 0,
        "stable": {"version": "v1", "image": "example.com/reviews:v1"},
        "canary": {"version": "v2", "image": "example.com/reviews:v2"},
        "startedAt": now_iso(-600), "stepStartedAt": now_iso(-300)})
    doc["spec"]["strategy"] = {"canary": {"steps": [10, 20, 50], "interval": f"{CHECK_INTERVAL:g}s",
                                          "maxFailedChecks": 1}}
    doc["spec"]["gates"] = {"promotion": "manual"}
    doc["spec"]["analysis"] = {"metrics": [{"name": "request-success-rate", "min": 99, "interval": "10s"}]}
    return doc


def _routes(emu: Emulator, ns: str) -> int:
    vs = emu.get("virtualservices", ns, "reviews")
    return len(vs["spec"]["http"][0]["route"]) if vs else 0


def bench_rollback() -> None:
    """From the first query that can see a bad metric to the VirtualService rolled back.

    A real Prometheus scrapes the canaries' request counters every second. One
    controller (a Runner as ``sluice run`` drives it: its own wake-ups, min gap 0.5 s)
    follows ROLLBACKS canaries waiting for approval, each checked every 2 s. At a
    random moment a canary starts answering 503s; t0 is the start of the first of our
    own queries (Sluice's success-rate query, every 10 ms) that sees it below its
    minimum, t1 the moment the emulator's VirtualService routes only to stable (read
    every 5 ms). The figure holds the wait for the next check (scheduling), the pass
    and its apply. Floor: one query plus one server-side apply of the VirtualService."""
    namespaces = [f"rollback-{i}" for i in range(ROLLBACKS)]
    telemetry = Telemetry(namespaces)
    exporter = telemetry.serve()
    config = ("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
              f"scrape_configs: [{{job_name: istio, static_configs: [{{targets: ['127.0.0.1:{exporter.server_address[1]}']}}]}}]\n")
    docs = [waiting_doc(ns) for ns in namespaces]
    rels = [release(d) for d in docs]
    checks = [analysis.plan_checks(r, {}, canary_version="v2", stable_version="v1")[0] for r in rels]
    rng = random.Random(20)
    samples, floors = [], []
    try:
        with promsupport.start(config=config) as url, tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
            prom = Prometheus(url)
            wait_for("Prometheus to have scraped every canary for 12 s",
                     lambda: all(prom.query(c.query) == 100.0 for c in checks) and time.time() - telemetry.start > 12,
                     60, every=0.5)
            root = pathlib.Path(tmp)
            _, bare = make_repo(root, docs)
            populate(emu, docs)
            ctl = Controller(GitRepo(str(bare), root / "clone"), KubernetesTarget(Cluster(emu.api_client())),
                             prometheus=prom)
            runner = Runner(lambda: ctl.run_pass().next_pass_in, poll_interval=30, min_gap=0.5)
            runner.start()
            try:
                def healthy(done):
                    if runner.crashes:
                        raise RuntimeError(f"a pass crashed: {runner.last_crash}")
                    return done()
                wait_for("two passes of the controller", lambda: healthy(lambda: runner.passes >= 2), 60)
                for ns, check in zip(namespaces, checks):
                    if _routes(emu, ns) != 2:
                        raise RuntimeError(f"{ns} rolled back before its metric went bad: {ctl.last.outcomes}")
                    time.sleep(rng.uniform(0, CHECK_INTERVAL))   # a random phase against the check schedule
                    telemetry.bad_at[ns] = time.time()
                    t0 = None

                    def seen():
                        nonlocal t0
                        start = time.monotonic()
                        value = prom.query(check.query)
                        if value is not None and value < 99:
                            t0 = start
                        return t0
                    wait_for(f"Prometheus to see {ns}'s 503s", seen, 15)
                    t1 = wait_for(f"{ns}'s VirtualService rolled back",
                                  lambda: healthy(lambda: _routes(emu, ns) == 1 and time.monotonic()), 30, every=0.005)
                    samples.append(t1 - t0)
                after = runner.passes
                wait_for("a pass after the last rollback", lambda: healthy(lambda: runner.passes > after), 30)
            finally:
                runner.stop(60)
            for ns in namespaces:
                out = ctl.last.outcomes.get(f"{ns}/reviews")
                if out is None or out.phase != "RolledBack":
                    raise RuntimeError(f"{ns}: {out}")
            # the floor: one query and one SSA of the VirtualService, through the same clients
            cluster = Cluster(emu.api_client())
            for rel, check in zip(rels, checks):
                states = [stamp(next(o for o in render(r) if o["kind"] == "VirtualService"), instance="sluice")
                          for r in (rel, rel.with_status({**rel.status, "weight": 20}))]

                def floor_once():
                    prom.query(check.query)
                    cluster.apply(states[0])
                    states.reverse()   # every timed apply really changes the object
                floors.append(min(measure(floor_once, repeat=3)))
    finally:
        exporter.shutdown()
        exporter.server_close()
    emit(figure("failed check -> rollback applied", 1, samples, floor=statistics.median(floors),
                floor_name="one Prometheus query + one SSA of the VirtualService",
                check_interval=CHECK_INTERVAL, releases=ROLLBACKS))


# --- one step end to end --------------------------------------------------------------------------

def bench_step_e2e() -> None:
    """One rollout step end to end: sync, decide, commit, push over git://, apply."""
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        root = pathlib.Path(tmp)
        doc = release_doc(status={"phase": "Promoted", "stable": {"version": "v1", "image": "r:1"}, "weight": 100})
        doc["spec"]["analysis"] = {"metrics": []}
        doc["spec"]["strategy"]["canary"] = {"steps": list(range(1, 100)), "interval": "1m"}
        make_repo(root, [doc])
        with git_daemon(root) as base:
            clock = [datetime.now(timezone.utc)]
            repo = GitRepo(f"{base}/config.git", root / "clone")
            ctl = Controller(repo, KubernetesTarget(Cluster(emu.api_client())), clock=lambda: clock[0])
            ctl.run_pass()          # start
            emu.all_ready()
            samples = []
            for _ in range(10):
                clock[0] += timedelta(minutes=2)
                t0 = time.perf_counter()
                report = ctl.run_pass()
                samples.append(time.perf_counter() - t0)
                if not report.pushed or report.outcomes["bookinfo/reviews"].event.action != "advance":
                    raise RuntimeError(f"no step: {report.error}")
            floor = measure(repo.sync, repeat=10)
    emit(figure("one rollout step end to end (decide, commit, push, apply)", 1, samples, floor=floor,
                floor_name="no-op git fetch over git://"))


# --- idle CPU -------------------------------------------------------------------------------------

def busy_docs(n: int) -> list[dict]:
    """N releases, half mid-rollout (10% on 1-minute steps, started now) and half waiting
    for approval at 50% (checked once a minute, their checks spread over the minute)."""
    docs = release_docs(n)
    for i, doc in enumerate(docs):
        doc["spec"]["analysis"] = {"metrics": []}
        doc["spec"]["strategy"] = {"canary": {"steps": [10, 20, 50], "interval": "1m"}}
        stable = {**doc["spec"]["target"], "version": "v0", "image": doc["spec"]["target"]["image"] + "-old"}
        status = {"phase": "Progressing", "stable": stable, "canary": dict(doc["spec"]["target"]),
                  "weight": 10, "step": 1, "failedChecks": 0, "startedAt": now_iso(), "stepStartedAt": now_iso()}
        if i % 2:
            doc["spec"]["gates"] = {"promotion": "manual"}
            status.update(phase="WaitingApproval", waitingFor="promotion", weight=50, step=3,
                          stepStartedAt=now_iso(-60 * i / n))   # checks come due spread over the minute
        doc["status"] = status
    return docs


IDLE_SECONDS = 20.0


@contextlib.contextmanager
def _sluice_run(docs: list[dict]):
    """``sluice run`` (git target, 30 s poll) over ``docs``, once ready (first pass done): yields a
    function giving the CPU seconds it has used so far."""
    with tempfile.TemporaryDirectory() as tmp:
        _, bare = make_repo(pathlib.Path(tmp), docs)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "run", "--repo", f"file://{bare}",
                                 "--target", "git", "--listen", f"127.0.0.1:{port}", "--no-watch",
                                 "--workdir", str(pathlib.Path(tmp) / "w")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def ready():
                if proc.poll() is not None:
                    raise RuntimeError(f"sluice run exited with {proc.returncode} before it was ready")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                        return resp.status == 200
                except OSError:
                    return False
            wait_for("sluice run to be ready (first pass done)", ready, 60, every=0.2)
            tick = os.sysconf("SC_CLK_TCK")

            def cpu():
                fields = pathlib.Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / tick
            yield cpu
        finally:
            proc.terminate()
            proc.wait(30)


def bench_idle_cpu(n: int = 100) -> None:
    """CPU of ``sluice run`` with N releases mid-rollout and waiting for approval, beside the same
    process with the same N at rest (promoted): nothing due, nothing asked. Both run side by side
    over the same IDLE_SECONDS window (each one's own CPU time, as % of one core: two mostly idle
    processes on a 2-core machine do not take time from each other)."""
    with _sluice_run(busy_docs(n)) as busy, _sluice_run(idle_docs(n)) as at_rest:
        b0, r0, t0 = busy(), at_rest(), time.monotonic()
        time.sleep(IDLE_SECONDS)   # the measuring window itself
        b1, r1, t1 = busy(), at_rest(), time.monotonic()
    emit(figure("idle CPU of sluice run, mid-rollout and waiting for approval", n, [(b1 - b0) / (t1 - t0) * 100],
                unit="%", floor=(r1 - r0) / (t1 - t0) * 100,
                floor_name=f"the same process with the {n} releases at rest"))


# --- push -> applied ------------------------------------------------------------------------------

def bench_push_to_applied(kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        root = pathlib.Path(tmp)
        docs = idle_docs(10)
        work, bare = make_repo(root, docs)
        populate(emu, docs)
        target_doc = docs[0]
        m = target_doc["metadata"]
        path = work / path_of(target_doc)
        secret = b"bench-secret"
        with git_daemon(root) as base:
            url = f"{base}/config.git" if kind == "webhook" else str(bare)
            ctl = Controller(GitRepo(url, root / "clone"), KubernetesTarget(Cluster(emu.api_client())))
            runner = Runner(lambda: (ctl.run_pass(), None)[1], poll_interval=3600)
            server = Server("127.0.0.1", 0, runner, Metrics(), webhook=WebhookConfig(secret, branch="main"))
            server.start()
            runner.start()
            observer = watch_path(str(bare), runner.kick) if kind == "watchdog" else None
            samples = []
            try:
                if not runner.wait_passes(1, 60):
                    raise RuntimeError("no first pass in 60 s")
                for i in range(8):
                    ver = f"v{100 + i}"
                    passes = runner.passes
                    run("pull", "-q", "--rebase", "origin", "main", cwd=work, env=ENV)   # Sluice's commits first
                    text = re.sub(r"  target:\n    version: .*\n    image: .*\n",
                                  f"  target:\n    version: {ver}\n    image: example.com/x:{ver}\n", path.read_text())
                    path.write_text(text)
                    run("commit", "-q", "-am", f"target {ver}", cwd=work, env=ENV)
                    run("push", "-q", "origin", "HEAD:main", cwd=work, env=ENV)
                    t0 = time.monotonic()
                    if kind == "webhook":
                        body = b'{"ref": "refs/heads/main"}'
                        sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
                        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/webhook", data=body,
                                                     headers={"X-Hub-Signature-256": sig}, method="POST")
                        urllib.request.urlopen(req, timeout=5).read()
                    name = f"{m['name']}-{ver}"
                    samples.append(wait_for(f"{name} applied", lambda: emu.get("deployments", m["namespace"], name)
                                            and time.monotonic(), 10, every=0.005) - t0)
                    # quiet before the next push: the pass that applied it (and its commit) is over
                    wait_for("the runner to settle", lambda: runner.passes > passes and not runner.running
                             and not runner.pending, 30)
            finally:
                if observer:
                    observer.stop()
                runner.stop(30)
                server.stop()
    emit(figure(f"push -> applied via {kind}", 1, samples, p50=round(statistics.median(samples), 4)))


def main(sizes: list[int]) -> None:
    for n in sizes:
        bench_passes(n)
    top = min(max(sizes), 1000)
    for n in sorted({max(top // 10, 1), top}):   # status and plan: 100 and 1,000 by default
        bench_status_plan(n)
    bench_rollback()
    bench_step_e2e()
    bench_push_to_applied("webhook")
    bench_push_to_applied("watchdog")
    bench_idle_cpu()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
