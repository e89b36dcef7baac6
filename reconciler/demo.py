"""``sluice demo``: a full rollout on this machine, no cluster needed.

1. Copy sample-repo into a temporary bare git remote (a "human" commit).
2. A human commit shortens the intervals for the demo, and (when a
   Prometheus binary is installed) points sluice.yaml at a local Prometheus
   scraping a tiny exporter that plays Istio's telemetry: bookinfo/reviews
   v2 is healthy, bookinfo/productpage v2 (retargeted by the same commit)
   answers 20% 5xx.
3. Run the controller with the rendered-manifests target: reviews walks its
   canary to promotion; productpage is rolled back on real analysis.
4. Print ``sluice status``, ``sluice history`` and the step commits, and
   remove everything it made.
"""

from __future__ import annotations

import html
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

from reconciler.adapters.gitrepo import GitRepo, Identity
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
from reconciler.adapters.notify import Notifications

HUMAN = {"GIT_AUTHOR_NAME": "Dana Dev", "GIT_AUTHOR_EMAIL": "dana@example.com",
         "GIT_COMMITTER_NAME": "Dana Dev", "GIT_COMMITTER_EMAIL": "dana@example.com"}


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **HUMAN}, check=True,
                          capture_output=True, text=True).stdout


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_repo() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "sample-repo", here / "sample-repo", Path.cwd() / "sample-repo"):
        if (cand / "releases").is_dir():
            return cand
    raise FileNotFoundError("sample-repo not found (run from the Sluice checkout)")


@contextmanager
def telemetry(workloads: dict[str, float]):
    """A prometheus_client exporter playing Istio's destination metrics.
    ``workloads``: Deployment name -> share of 5xx answers."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
    reg = CollectorRegistry()
    labels = ["reporter", "destination_workload_namespace", "destination_workload", "response_code"]
    total = Counter("istio_requests_total", "requests", labels, registry=reg)
    dur = Histogram("istio_request_duration_milliseconds", "latency", labels[:3], registry=reg,
                    buckets=(5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000))
    stop = threading.Event()
    rng = random.Random(7)

    def play():
        while not stop.wait(0.1):
            for workload, errors in workloads.items():
                ns = "bookinfo"
                for _ in range(5):
                    code = "503" if rng.random() < errors else "200"
                    total.labels("destination", ns, workload, code).inc()
                    dur.labels("destination", ns, workload).observe(rng.uniform(20, 120))

    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    player = threading.Thread(target=play, daemon=True)
    player.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


@contextmanager
def prometheus(target: str, workdir: Path):
    port = _free_port()
    cfg = workdir / "prometheus.yml"
    cfg.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n"
                   f"scrape_configs:\n  - job_name: mesh\n    static_configs: [{{targets: ['{target}']}}]\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def said(path: str, body: dict) -> str:
    """One line of what a Slack, Teams, Discord or generic webhook message says."""
    if "blocks" in body:                                   # Slack: the notification's fallback text
        return html.unescape(body.get("text", ""))      # mrkdwn escapes & < >
    if body.get("type") == "message":                     # Teams: the card's heading and summary
        blocks = body["attachments"][0]["content"]["body"]
        return ": ".join(b["text"] for b in blocks[:2] if b.get("type") == "TextBlock")
    if "embeds" in body:                                   # Discord
        return body.get("content", "").replace("**", "")
    return f"{body.get('event')} {body.get('release')}: {body.get('summary')}"   # the generic JSON webhook


@contextmanager
def receiver(echo: Callable[[str], None], start: float):
    """A loopback stand-in for the teams' Slack, Teams and Discord channels and the audit
    webhook of sample-repo/sluice.yaml: prints each message as it arrives."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            try:
                text = said(self.path, json.loads(body))
            except (ValueError, KeyError, IndexError, TypeError):
                text = f"{len(body)} bytes"
            echo(f"[{time.monotonic() - start:5.1f}s]   -> {self.path.strip('/')}: {text}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _wait_for_data(url: str, workload: str, timeout: float = 30.0) -> bool:
    q = urllib.parse.quote(f'sum(rate(istio_requests_total{{destination_workload="{workload}"}}[5s]))')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query={q}", timeout=2) as resp:
                if b'"value"' in resp.read():
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _edit(path: Path, *pairs: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in pairs:
        if old not in text:
            raise ValueError(f"demo edit: {old!r} not in {path.name}")
        text = text.replace(old, new, 1)
    path.write_text(text)


def human_setup(work: Path, prom_url: str | None, hooks: str) -> None:
    """The demo's human commit: short intervals, notifications to the demo's receiver, and a
    bad productpage when analysis is real."""
    rel = work / "releases" / "bookinfo"
    settings = work / "sluice.yaml"
    settings.write_text(settings.read_text().replace("https://hooks.example.com", hooks))
    # a step's window opens when its weight is live: at 1s scrapes a 3s step gives rate() 3 samples
    _edit(rel / "reviews.yaml", ("      interval: 1m", "      interval: 3s"),
          ("  gates: {promotion: manual}       # a human approves the last jump to 100%\n", ""),
          ("  analysis:\n    metrics:", "  analysis:\n    interval: 5s\n    metrics:"))
    if prom_url:
        _edit(work / "sluice.yaml", ("http://prometheus.istio-system:9090", prom_url))
        _edit(rel / "productpage.yaml",
              ("    version: v1-2\n    image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.1",
               "    version: v2\n    image: docker.io/istio/examples-bookinfo-productpage-v2:1.20.1"),
              ("interval: 2m}", "interval: 3s}"),
              ("  analysis:\n    metrics:", "  analysis:\n    interval: 5s\n    metrics:"))
    else:   # no Prometheus here: the canary is judged on time alone
        text = (rel / "reviews.yaml").read_text()
        start = text.index("  analysis:\n")
        end = text.index("status:\n")
        (rel / "reviews.yaml").write_text(text[:start] + text[end:])
        _edit(work / "sluice.yaml", ("providers:\n  prometheus:\n    address: http://prometheus.istio-system:9090\n"
                                     "    timeout: 5s\n", ""))
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "demo: shorten intervals" + (", retarget productpage to v2" if prom_url else ""), cwd=work)
    _git("push", "-q", "origin", "HEAD:main", cwd=work)


def _dashboard(url: str, cache: Path):
    """The read-only dashboard of the demo's remote, on port 8090 when it is free."""
    from reconciler.ui.server import start_dashboard
    before = os.environ.get("SLUICE_CACHE_DIR")
    os.environ["SLUICE_CACHE_DIR"] = str(cache)   # its own clone of the remote, in the demo's tmp dir
    try:
        try:
            return start_dashboard(url, port=8090, every=0.5)
        except OSError:   # taken: any free port
            return start_dashboard(url, port=0, every=0.5)
    finally:
        if before is None:
            del os.environ["SLUICE_CACHE_DIR"]
        else:
            os.environ["SLUICE_CACHE_DIR"] = before


def _serve_until_interrupted(echo: Callable[[str], None]) -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM: a handler sets an event, so the signal never
    lands as KeyboardInterrupt in the middle of something else; the caller then cleans up."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        echo("serving the dashboard until Ctrl-C")
        while not stop.wait(1.0):   # wakes each second so the main thread stays responsive
            pass
        echo("")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(echo: Callable[[str], None], *, timeout: float = 50.0, keep_serving: bool = False) -> int:
    """``keep_serving``: after the summary, serve the dashboard until Ctrl-C (a person at a terminal)."""
    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-demo-"))
    try:
        with ExitStack() as stack:
            bare = tmp / "config.git"
            _git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp)
            _git("config", "receive.denyNonFastForwards", "true", cwd=bare)
            work = tmp / "work"
            shutil.copytree(sample_repo(), work)
            _git("init", "-q", "-b", "main", cwd=work)
            _git("add", "-A", cwd=work)
            _git("commit", "-q", "-m", "Import the shop's releases", cwd=work)
            _git("remote", "add", "origin", str(bare), cwd=work)
            _git("push", "-q", "origin", "main", cwd=work)
            echo(f"remote: {bare} (a copy of sample-repo)")
            prom_url = None
            if shutil.which("prometheus"):
                exporter = stack.enter_context(telemetry(
                    {"reviews-v1": 0.0, "reviews-v2": 0.001, "productpage-v1-2": 0.0, "productpage-v2": 0.2}))
                prom_url = stack.enter_context(prometheus(exporter, tmp))
                echo(f"prometheus: {prom_url}, scraping simulated Istio telemetry (productpage v2 answers 20% 5xx)")
                if not _wait_for_data(prom_url, "reviews-v2"):
                    echo("prometheus has no data yet; the canary will hold until it does")
            else:
                echo("prometheus is not installed: the canary is judged on time alone")
            hooks = stack.enter_context(receiver(echo, start))
            echo(f"notifications: a receiver on {hooks} stands in for each team's Slack, Teams, Discord and "
                 "the audit webhook")
            human_setup(work, prom_url, hooks)
            board = _dashboard(f"file://{bare}", tmp / "ui-cache")
            stack.callback(board.stop)
            echo(f"dashboard: {board.url} (live: open it now to watch the rollouts)")
            repo = GitRepo(f"file://{bare}", tmp / "sluice-clone", "main", author=Identity("Sluice", "sluice@demo"))
            notes = Notifications()
            stack.callback(notes.close, 5)
            controller = Controller(repo, GitTarget(), notify=notes)
            echo("controller: target git (rendered/<ns>/<name>.yaml), passes every 0.5s\n")
            goals = {"bookinfo/reviews": "Promoted"}
            if prom_url:
                goals["bookinfo/productpage"] = "RolledBack"
            deadline = time.monotonic() + timeout
            reached = False
            told: set[str] = set()
            quiet = logging.getLogger("sluice")   # what a pass logs is shown below, each held release once
            level, quiet.level = quiet.level, logging.CRITICAL
            stack.callback(setattr, quiet, "level", level)
            while time.monotonic() < deadline:
                report = controller.run_pass()
                for problem in report.problems:
                    if str(problem) not in told:
                        told.add(str(problem))
                        echo(f"[{time.monotonic() - start:5.1f}s] held: {problem}")
                for key, out in sorted(report.outcomes.items()):
                    if out.event:
                        echo(f"[{time.monotonic() - start:5.1f}s] {out.event.release}: {out.event.summary}")
                if report.error:
                    echo(f"  error: {report.error}")
                phases = {k: o.phase for k, o in report.outcomes.items()}
                if all(phases.get(k) == v for k, v in goals.items()):
                    reached = True
                    break
                time.sleep(0.5)
            notes.flush(5)   # the last notifications are printed before the summary
            echo("")
            from click.testing import CliRunner   # the real commands, as a user would run them
            from reconciler.cli.main import cli
            env = {"SLUICE_CACHE_DIR": str(tmp / "cache")}
            runner = CliRunner()
            for args in (["status", f"file://{bare}"], ["history", "bookinfo/reviews", "--repo", f"file://{bare}"]):
                echo("$ sluice " + " ".join(args).replace(str(bare), "$REMOTE"))
                echo(runner.invoke(cli, args, env=env).output)
            echo("$ git log --oneline   # every step is a commit")
            echo(_git("log", "--oneline", "-n", "25", "main", cwd=bare))
            echo(f"done in {time.monotonic() - start:.1f}s" + ("" if reached else " (timed out before every goal)"))
            echo(f"dashboard: {board.url}")
            if keep_serving:
                _serve_until_interrupted(echo)
            return 0 if reached else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

