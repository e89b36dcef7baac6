"""Controller figures, each beside its floor:

- no-op pass over N releases against the emulated API server (time and
  requests) vs the raw LIST calls through the same client;
- failed check -> rollback applied at the API server (no git push in the way);
- push-to-applied latency through the webhook and through the watchdog;
- ``status`` over N releases vs parsing the same YAML alone;
- ``plan`` of a one-release change among N vs ``git ls-tree`` of both commits;
- peak resident memory of ``sluice run --once`` at N vs the interpreter with
  the package imported.

    python bench/bench_controller.py [N ...]     (default 10 100 1000)
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import hmac
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import emit, figure, measure  # noqa: E402
from bench.genrepo import release_docs  # noqa: E402
from reconciler.adapters.cluster import Cluster, KubernetesTarget  # noqa: E402
from reconciler.adapters.gitrepo import GitRepo  # noqa: E402
from reconciler.adapters.metrics.prometheus import Prometheus  # noqa: E402
from reconciler.cli.commands.status import rows  # noqa: E402
from reconciler.cli.source import open_source  # noqa: E402
from reconciler.controller import Controller  # noqa: E402
from reconciler.cli.commands.plan import command as plan_command  # noqa: E402
from reconciler.core.diff import stamp  # noqa: E402
from reconciler.core.render import render  # noqa: E402
from reconciler.runtime import Metrics, Runner, Server, WebhookConfig, watch_path  # noqa: E402
from tests.support import prometheus as promsupport  # noqa: E402
from tests.support.gitserver import git_daemon, run  # noqa: E402
from tests.support.kube_emulator import Emulator  # noqa: E402
from tests.support.specs import dump, release  # noqa: E402

ENV = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "b@x"}


def idle_docs(n: int) -> list[dict]:
    """N releases at rest: promoted, target == stable, time-based analysis."""
    docs = release_docs(n)
    for doc in docs:
        doc["status"] = {"phase": "Promoted", "weight": 100, "step": 0, "failedChecks": 0,
                         "stable": dict(doc["spec"]["target"])}
        doc["spec"]["analysis"] = {"metrics": []}
    return docs


def make_repo(root: pathlib.Path, docs: list[dict]) -> tuple[pathlib.Path, pathlib.Path]:
    """(work checkout, bare remote) holding ``docs``."""
    work, bare = root / "work", root / "config.git"
    for doc in docs:
        m = doc["metadata"]
        p = work / "releases" / m["namespace"] / f"{m['name']}.yaml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(dump(doc))
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work, env=ENV)
    run("commit", "-q", "-m", "releases", cwd=work, env=ENV)
    run("init", "-q", "--bare", "-b", "main", str(bare))
    run("push", "-q", str(bare), "main", cwd=work, env=ENV)
    run("remote", "add", "origin", str(bare), cwd=work)
    run("fetch", "-q", "origin", cwd=work)
    return work, bare


def populate(emu: Emulator, docs: list[dict]) -> None:
    """The cluster as Sluice left it: every rendered object, stamped as Sluice applies it, ready."""
    for doc in docs:
        for obj in render(release(doc)):
            emu.apply_as("sluice", stamp(obj, instance="sluice"), force=True)
    emu.all_ready()


def bench_noop(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        docs = idle_docs(n)
        _, bare = make_repo(pathlib.Path(tmp), docs)
        populate(emu, docs)
        cluster = Cluster(emu.api_client())
        target = KubernetesTarget(cluster)
        ctl = Controller(GitRepo(str(bare), pathlib.Path(tmp) / "clone"), target)
        ctl.run_pass()   # warm: clone, parse cache
        emu.reset_counts()
        report = ctl.run_pass()
        requests = sum(emu.counts.values())
        writes = emu.writes()
        assert not report.pushed and report.error is None, report.error
        namespaces = {d["metadata"]["namespace"] for d in docs}
        floor = measure(lambda: cluster.list_managed(namespaces), repeat=5)
        samples = measure(ctl.run_pass, repeat=5, warmup=0)
        emit(figure("no-op reconcile pass", n, samples, floor=floor, floor_name="raw LIST calls, same client",
                    requests=requests, writes=writes, lists=sum(v for k, v in emu.counts.items() if k[0] == "list"),
                    namespaces=len(namespaces), target=1.0 if n == 1000 else None))


def bench_rollback() -> None:
    """A metric that turned bad at Prometheus -> the rollback patched at the API server,
    the real path of one pass (sync, load, query, decide, apply), beside its floor: the
    same query and the same server-side apply of the VirtualService through the same
    clients, with nothing else in between."""
    now = datetime.now(timezone.utc)
    start = int(now.timestamp()) - 600
    h = promsupport.History()
    for i in range(7):   # one namespace per run: each run starts from a fresh release
        hi = promsupport.History(f"bench-{i}")
        hi.traffic("reviews-v1", start, int(now.timestamp()), rps=20, p99_ms=100)
        hi.traffic("reviews-v2", start, int(now.timestamp()), rps=20, error_ratio=0.5, p99_ms=100)
        h.series.update(hi.series)
    samples, floors = [], []
    with promsupport.start(h) as url, tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        from reconciler.core import analysis
        from tests.support.specs import release_doc
        prom = Prometheus(url)
        for i in range(7):
            root = pathlib.Path(tmp) / str(i)
            root.mkdir()
            doc = release_doc(namespace=f"bench-{i}", status={"phase": "Progressing", "stable": {"version": "v1", "image": "r:1"},
                                      "canary": {"version": "v2", "image": "example.com/reviews:v2"},
                                      "weight": 10, "step": 1, "failedChecks": 1,
                                      "startedAt": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      "stepStartedAt": (now - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")})
            _, bare = make_repo(root, [doc])
            populate(emu, [doc])
            cluster = Cluster(emu.api_client())
            ctl = Controller(GitRepo(str(bare), root / "clone"), KubernetesTarget(cluster), prometheus=prom)
            t0 = time.monotonic()
            report = ctl.run_pass()
            assert report.outcomes[f"bench-{i}/reviews"].phase == "RolledBack", report.outcomes
            vs = emu.get("virtualservices", f"bench-{i}", "reviews")
            assert len(vs["spec"]["http"][0]["route"]) == 1
            assert "request-success-rate" in report.outcomes[f"bench-{i}/reviews"].event.reason, report.outcomes[f"bench-{i}/reviews"].event
            samples.append(report.timings["rollback_applied"] - t0)
            rel = release(doc)
            query = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1")[0].query
            # two states of the VirtualService, so that every timed apply really changes it
            states = [stamp(next(o for o in render(r) if o["kind"] == "VirtualService"), instance="sluice")
                      for r in (rel, rel.with_status({**rel.status, "weight": 20}))]

            def floor_once():
                prom.query(query, now)
                cluster.apply(states[0])
                states.reverse()
            floors.append(min(measure(floor_once, repeat=3)))
    emit(figure("failed check -> rollback applied", 1, samples, floor=statistics.median(floors),
                floor_name="one Prometheus query + one SSA of the VirtualService", target=1.0))


def bench_step_e2e() -> None:
    """One rollout step end to end: sync, decide, commit, push over git://, apply."""
    from tests.support.specs import release_doc
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
            for _ in range(15):
                clock[0] += timedelta(minutes=2)
                t0 = time.perf_counter()
                report = ctl.run_pass()
                samples.append(time.perf_counter() - t0)
                assert report.pushed and report.outcomes["bookinfo/reviews"].event.action == "advance"
            floor = measure(repo.sync, repeat=10)
    emit(figure("one rollout step end to end (decide, commit, push, apply)", 1, samples, floor=floor,
                floor_name="no-op git fetch over git://"))


def mid_rollout_docs(n: int) -> list[dict]:
    """N releases mid-rollout at 10% on 1-minute steps, started now, no metrics."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    docs = release_docs(n)
    for doc in docs:
        doc["spec"]["analysis"] = {"metrics": []}
        doc["spec"]["strategy"] = {"canary": {"steps": [10, 20, 50], "interval": "1m"}}
        stable = {**doc["spec"]["target"], "version": "v0", "image": doc["spec"]["target"]["image"] + "-old"}
        doc["status"] = {"phase": "Progressing", "stable": stable, "canary": dict(doc["spec"]["target"]),
                         "weight": 10, "step": 1, "failedChecks": 0, "startedAt": stamp, "stepStartedAt": stamp}
    return docs


def _idle_cpu(docs: list[dict], seconds: float) -> float:
    """% of one core used by ``sluice run`` (git target, 30 s poll) over ``seconds`` after start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        _, bare = make_repo(pathlib.Path(tmp), docs)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "run", "--repo", f"file://{bare}",
                                 "--target", "git", "--listen", "127.0.0.1:0", "--no-watch",
                                 "--workdir", str(pathlib.Path(tmp) / "w")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(8)   # start-up and the first pass (rendering 100 releases once)
            tick = os.sysconf("SC_CLK_TCK")

            def cpu():
                fields = pathlib.Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / tick
            c0, t0 = cpu(), time.monotonic()
            time.sleep(seconds)
            return (cpu() - c0) / (time.monotonic() - t0) * 100
        finally:
            proc.terminate()
            proc.wait(30)


def bench_idle_cpu(seconds: float = 40.0) -> None:
    """CPU of ``sluice run`` with 100 releases mid-rollout on 1-minute steps, beside the
    same process with 100 releases at rest (the floor: nothing is due, nothing is asked)."""
    at_rest = _idle_cpu(idle_docs(100), seconds)
    busy = _idle_cpu(mid_rollout_docs(100), seconds)
    emit(figure("idle CPU of sluice run, 100 releases mid-rollout (1 m steps)", 100, [busy], unit="%",
                floor=max(at_rest, 0.01), floor_name="the same 100 releases at rest"))


def _wait_applied(emu: Emulator, ns: str, name: str, timeout: float = 10) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if emu.get("deployments", ns, name):
            return time.monotonic()
        time.sleep(0.005)
    raise RuntimeError(f"{name} never applied")


def bench_push_to_applied(kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        root = pathlib.Path(tmp)
        docs = idle_docs(10)
        work, bare = make_repo(root, docs)
        populate(emu, docs)
        target_doc = docs[0]
        m = target_doc["metadata"]
        path = work / "releases" / m["namespace"] / f"{m['name']}.yaml"
        secret = b"bench-secret"
        with git_daemon(root) as base:
            url = f"{base}/config.git" if kind == "webhook" else str(bare)
            ctl = Controller(GitRepo(url, root / "clone"), KubernetesTarget(Cluster(emu.api_client())))
            runner = Runner(lambda: (ctl.run_pass(), None)[1], poll_interval=3600)
            server = Server("127.0.0.1", 0, runner, Metrics(), webhook=WebhookConfig(secret, branch="main"))
            server.start()
            runner.start()
            observer = watch_path(str(bare), runner.kick) if kind == "watchdog" else None
            time.sleep(1.0)
            samples = []
            try:
                for i in range(8):
                    ver = f"v{100 + i}"
                    run("pull", "-q", "--rebase", "origin", "main", cwd=work, env=ENV)
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
                    samples.append(_wait_applied(emu, m["namespace"], f"{m['name']}-{ver}") - t0)
                    time.sleep(0.3)
            finally:
                if observer:
                    observer.stop()
                runner.stop(30)
                server.stop()
    emit(figure(f"push-to-applied via {kind}", 1, samples, target=1.0,
                p50=round(statistics.median(samples), 4)))


def bench_status_plan_memory(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        docs = idle_docs(n)
        work, bare = make_repo(root, docs)
        files = {str(p.relative_to(work)): p.read_bytes() for p in (work / "releases").rglob("*.yaml")}
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        parse_floor = measure(lambda: [yaml.load(d, Loader=loader) for d in files.values()], repeat=5)
        source = open_source(str(work))
        emit(figure("status", n, measure(lambda: rows(source), repeat=5), floor=parse_floor,
                    floor_name="parse the same YAML alone", target=0.5 if n == 1000 else None))
        # plan: change one release
        m = docs[n // 2]["metadata"]
        p = work / "releases" / m["namespace"] / f"{m['name']}.yaml"
        p.write_text(p.read_text().replace("replicas: 2", "replicas: 3", 1))
        run("commit", "-q", "-am", "change one", cwd=work, env=ENV)
        git = GitRepo.open_local(work)

        def plan_once():
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                return plan_command.callback(str(work), "HEAD~1", "HEAD", "text", False)

        floor = measure(lambda: (git.blob_ids("HEAD~1"), git.blob_ids("HEAD")), repeat=5)
        assert plan_once() == 2
        emit(figure("plan of a one-release change", n, measure(plan_once, repeat=5), floor=floor,
                    floor_name="git ls-tree of both commits", target=1.0 if n == 1000 else None))
        # peak memory of one controller pass
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "reconciler.cli.main", "run", "--once", "--target", "git", "--repo", str(bare),
               "--workdir", str(root / "w")]
        base_cmd = [sys.executable, "-m", "reconciler.cli.main"]   # imports only: no command run
        emit(figure("controller peak RSS (run --once)", n, [_peak_rss(cmd, env)], unit="MB",
                    floor=_peak_rss(base_cmd, env), floor_name="bare interpreter",
                    target=150 if n == 1000 else None))


PEAK = ("import runpy, sys\n"
        "args = sys.argv[1:]\n"
        "try:\n"
        "    sys.argv = ['sluice'] + args\n"
        "    runpy.run_module('reconciler.cli.main', run_name='__main__') if args else None\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "    sys.stderr.write('PEAK %s\\n' % hwm)\n")


def _peak_rss(cmd, env) -> float:
    """VmHWM of the process just before it exits (ru_maxrss of a forked child
    would count the parent's pages it started with)."""
    args = cmd[cmd.index("reconciler.cli.main") + 1:] if "reconciler.cli.main" in cmd else []
    proc = subprocess.run([sys.executable, "-c", PEAK, *args], env=env, capture_output=True, text=True, timeout=600)
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK ")]
    if proc.returncode != 0 or not peak:
        raise RuntimeError(proc.stderr[-2000:])
    return int(peak[-1].split()[1]) / 1024.0


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [10, 100, 1000]
    for n in sizes:
        bench_noop(n)
        bench_status_plan_memory(n)
    bench_rollback()
    bench_step_e2e()
    bench_idle_cpu()
    bench_push_to_applied("webhook")
    bench_push_to_applied("watchdog")
