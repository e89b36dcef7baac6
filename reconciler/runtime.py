"""The long-running service around the reconcile pass.

- ``Runner``: one worker thread runs passes; triggers only ``kick`` it. Kicks
  during a pass set one "dirty" flag, so a burst coalesces into at most one
  more pass, and two passes never run at once. The next pass also comes by
  itself after the poll interval, or sooner when a release asked for it (the
  earliest ``next_pass_in`` of the pass: a check due, a deadline, the end of a
  scale-down delay). A pass that raises is logged and retried after a
  backoff; the thread never dies of it.
- ``Server``: one HTTP listener for ``/healthz`` (alive), ``/readyz`` (first
  sync done, last good pass not stale), ``/metrics`` (prometheus_client, on
  our own registry) and ``POST /webhook`` (GitHub, GitLab or generic push
  events, HMAC-SHA256 verified in constant time; unsigned or wrong: 401 and
  nothing happens; over the body limit: 413; over the rate limit: 429).
  The stdlib ThreadingHTTPServer is enough for a handful of endpoints and
  keeps the image small.
- ``watch_path``: a watchdog observer for a repo on a local path (a
  developer's checkout, or a volume kept fresh by git-sync).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reconciler.core.model import PHASES

log = logging.getLogger("sluice.runtime")


class Metrics:
    """The controller's own metrics, on a private registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.weight = Gauge("sluice_release_weight", "% of live traffic on the new version", ["release"], registry=r)
        self.step = Gauge("sluice_release_step", "current step or iteration", ["release"], registry=r)
        self.failed = Gauge("sluice_release_failed_checks", "failed checks of the rollout", ["release"], registry=r)
        self.phase = Gauge("sluice_release_phase", "1 for the release's current phase", ["release", "phase"], registry=r)
        self.metric = Gauge("sluice_analysis_value", "last analysis value", ["release", "metric"], registry=r)
        self.metric_ok = Gauge("sluice_analysis_ok", "1 when the metric's last result was ok", ["release", "metric"],
                               registry=r)
        self.dry_run = Gauge("sluice_analysis_dry_run", "1 for a dry-run metric: measured, never decides",
                             ["release", "metric"], registry=r)
        self.passes = Counter("sluice_passes_total", "reconcile passes by result", ["result"], registry=r)
        self.duration = Histogram("sluice_pass_duration_seconds", "reconcile pass duration", registry=r,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.git_errors = Counter("sluice_git_errors_total", "git sync or push failures", registry=r)
        self.api_errors = Counter("sluice_api_errors_total", "Kubernetes API failures", registry=r)
        self.push_retries = Counter("sluice_push_retries_total", "pushes retried after a rejection", registry=r)
        self.drift = Counter("sluice_drift_repaired_total", "objects put back after drift", registry=r)
        self.invalid = Gauge("sluice_invalid_releases", "releases held: invalid spec or untrusted status", registry=r)
        self.release_errors = Counter("sluice_release_errors_total", "a release's step of a pass that failed",
                                      ["release", "phase"], registry=r)
        self.webhooks = Counter("sluice_webhook_requests_total", "webhook requests by result", ["result"], registry=r)
        self.leader = Gauge("sluice_leader", "1 while this replica leads", registry=r)
        self.shards = Gauge("sluice_shards_total", "the number of shards of --shards (0: not sharded)", registry=r)
        self.shard_owned = Gauge("sluice_shard_owned", "1 for each shard this replica holds now (--shards)", ["shard"],
                                 registry=r)
        self.checks = Counter("sluice_analysis_checks_total", "metric checks by outcome (ok, failed, nodata, error)",
                              ["release", "outcome"], registry=r)
        self.events = Counter("sluice_release_events_total", "decisions committed, by action (start, advance, "
                              "check-failed, hold, promote, rollback, ...)", ["release", "action"], registry=r)
        self.overdue_at = Gauge("sluice_release_overdue_timestamp_seconds",
                                "when a Progressing release's step should have moved on by itself: its "
                                "progressDeadline plus (maxFailedChecks + 1) intervals after the step started; "
                                "absent while nothing is expected to move (paused, waiting for approval, at rest)",
                                ["release"], registry=r)
        self.refused = Counter("sluice_signature_refusals_total", "passes refused: tip not signed by a trusted key",
                               registry=r)
        # notifications
        self.notifications = Counter("sluice_notifications_total", "notifications and commit statuses by receiver "
                                     "and result: sent, failed (after its retries), dropped (queue full or shutdown)",
                                     ["receiver", "result"], registry=r)

    def set_shards(self, n: int, owned) -> None:
        """--shards: which of the ``n`` shards this replica holds now (``sluice_leader``: 1 while any)."""
        self.shards.set(n)
        for i in range(n):
            self.shard_owned.labels(str(i)).set(1 if i in owned else 0)
        self.leader.set(1 if owned else 0)

    def observe_pass(self, report, seconds: float) -> None:
        self.duration.observe(seconds)
        self.passes.labels("error" if report.error else "ok").inc()
        if report.error and report.error.startswith("refusing "):
            self.refused.inc()
        elif report.error:
            self.git_errors.inc()
        self.push_retries.inc(report.push_retries)
        self.invalid.set(len({p.release or p.file for p in report.problems}))
        if report.applied:
            self.drift.inc(len(report.applied.drifted))
            if report.applied.errors:
                self.api_errors.inc(len(report.applied.errors))
        for key, message in report.release_errors.items():
            if key not in getattr(report, "carried", ()):   # counted once, by the pass that failed
                self.release_errors.labels(key, message.split(" ", 1)[0]).inc()
        for key, out in report.outcomes.items():
            self.weight.labels(key).set(out.weight)
            self.step.labels(key).set(out.step)
            self.failed.labels(key).set(out.failed_checks)
            self.events.labels(key, "rollback")   # exported at 0 first, so increase() sees the first rollback
            if out.event is not None:
                self.events.labels(key, out.event.action).inc()
            if out.overdue_at is not None:
                self.overdue_at.labels(key).set(out.overdue_at.timestamp())
            else:
                try:
                    self.overdue_at.remove(key)
                except KeyError:   # it had none
                    pass
            for phase in PHASES:
                self.phase.labels(key, phase).set(1 if out.phase == phase else 0)
        for key, results in report.analysis.items():
            for res in results:
                if res.value is not None:
                    self.metric.labels(key, res.name).set(res.value)
                self.metric_ok.labels(key, res.name).set(1 if res.ok else 0)
                self.dry_run.labels(key, res.name).set(1 if res.dry_run else 0)
                if not res.dry_run:
                    self.checks.labels(key, res.outcome).inc()


class Runner:
    """Runs ``pass_fn`` on one thread; ``kick`` asks for a pass soon."""

    def __init__(self, pass_fn: Callable[[], float | None], *, poll_interval: float = 30.0,
                 min_gap: float = 0.0, max_backoff: float | None = None):
        self.pass_fn, self.poll_interval, self.min_gap = pass_fn, poll_interval, min_gap
        self.max_backoff = max_backoff if max_backoff is not None else poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="sluice-runner", daemon=True)
        self.passes = 0
        self.crashes = 0              # passes that raised; the loop goes on after a backoff
        self.last_crash: str | None = None
        self.running = False
        self.last_ok: float | None = None
        self.first_sync_ok = False

    @property
    def pending(self) -> bool:
        """A kick arrived that no pass has started on yet."""
        return self._wake.is_set()

    def kick(self, reason: str = "") -> None:
        log.debug("kick reason=%s", reason or "-")
        self._wake.set()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the pass in flight, then stop."""
        self._stop.set()
        self._wake.set()
        self.thread.join(timeout)

    def wait_passes(self, n: int, timeout: float) -> bool:
        """Block until ``n`` passes (ok or crashed) have ended; False on timeout. For tests and tools."""
        with self._done:
            return self._done.wait_for(lambda: self.passes + self.crashes >= n, timeout)

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            self.running = True
            try:
                hint = self.pass_fn()
                failures = 0
                ended = "passes"
            except Exception as exc:   # noqa: BLE001 - the loop must outlive any bug in a pass
                failures += 1
                self.last_crash = f"{type(exc).__name__}: {exc}"
                log.exception("pass crashed (%d in a row); next try after a backoff", failures)
                hint = min(self.max_backoff, max(1.0, self.min_gap) * 2 ** min(failures, 10))
                ended = "crashes"
            finally:
                self.running = False
            with self._done:
                setattr(self, ended, getattr(self, ended) + 1)
                self._done.notify_all()
            wait = self.poll_interval if hint is None else max(self.min_gap, min(self.poll_interval, hint))
            self._wake.wait(wait)


@dataclass
class WebhookConfig:
    secret: bytes | None = None        # None + allow_unsigned False: every request is refused
    allow_unsigned: bool = False
    branch: str = "main"
    max_body: int = 1 << 20
    rate_per_second: float = 5.0
    burst: int = 20
    _tokens: float = field(default=0.0, repr=False)
    _last: float = field(default=0.0, repr=False)

    def __repr__(self) -> str:
        return f"WebhookConfig(secret={'***' if self.secret else None}, branch={self.branch!r})"

    def take(self) -> bool:
        """Token bucket: False when the caller is over the rate limit."""
        now = time.monotonic()
        if not self._last:
            self._tokens, self._last = float(self.burst), now
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_second)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def verify_signature(cfg: WebhookConfig, body: bytes, headers) -> bool:
    """GitHub ``X-Hub-Signature-256``, generic ``X-Sluice-Signature`` (both
    ``sha256=<hex hmac>``), or GitLab's ``X-Gitlab-Token`` shared secret."""
    if cfg.secret is None:
        return cfg.allow_unsigned
    expected = "sha256=" + hmac.new(cfg.secret, body, hashlib.sha256).hexdigest()
    for header in ("X-Hub-Signature-256", "X-Sluice-Signature"):
        given = headers.get(header)
        if given:
            return hmac.compare_digest(given.strip().encode(), expected.encode())
    token = headers.get("X-Gitlab-Token")
    if token:
        return hmac.compare_digest(token.encode(), cfg.secret)
    return False


def pushed_branch(body: bytes) -> str | None:
    """The branch a push event names (GitHub/GitLab ``ref``, generic ``branch``)."""
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    ref = doc.get("ref") or doc.get("branch")
    if not isinstance(ref, str):
        return None
    return ref.removeprefix("refs/heads/")


class Server:
    """Health, readiness, metrics, the webhook and the read-only dashboard (``/ui``,
    when one is given) on one loopback-or-pod port."""

    def __init__(self, host: str, port: int, runner: Runner, metrics: Metrics, *,
                 webhook: WebhookConfig | None = None, stale_after: float = 120.0, ui=None,
                 conn_timeout: float = 30.0):
        self.runner, self.metrics, self.webhook, self.stale_after = runner, metrics, webhook, stale_after
        self.ui = ui    # the read-only dashboard (reconciler.ui.Dashboard): "/" and "/ui..." go to it
        server = self

        class Handler(BaseHTTPRequestHandler):
            # a connection silent this long (a half-sent request, a client that never reads) is
            # closed, so slow or idle clients cannot pile up threads without bound
            timeout = conn_timeout

            def log_message(self, fmt, *args):  # access logs are noise here
                pass

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _ui(self) -> bool:
                if server.ui is None or not (self.path == "/" or self.path.startswith("/ui")):
                    return False
                server.ui.handle(self)
                return True

            def do_HEAD(self):
                if not self._ui():
                    self._send(404, b"")

            def do_GET(self):
                if self._ui():
                    return
                if self.path == "/healthz":
                    ok, why = server.healthy()
                    self._send(200 if ok else 503, (why + "\n").encode())
                elif self.path == "/readyz":
                    ok, why = server.ready()
                    self._send(200 if ok else 503, (why + "\n").encode())
                elif self.path == "/metrics":
                    self._send(200, generate_latest(server.metrics.registry), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n")

            def do_POST(self):
                if self._ui():   # 405: the dashboard is read-only
                    return
                if self.path != "/webhook" or server.webhook is None:
                    self._send(404, b"not found\n")
                    return
                code, text = server.handle_webhook(self)
                server.metrics.webhooks.labels(str(code)).inc()
                self._send(code, (text + "\n").encode())

            def _other(self):
                if not self._ui():   # the dashboard answers 405 with Allow: GET, HEAD
                    self.send_error(501, f"unsupported method {self.command!r}")

            do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

        class _HTTPServer(ThreadingHTTPServer):
            request_queue_size = 128    # a burst of webhooks must queue, not be refused

        self.httpd = _HTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="sluice-http", daemon=True)

    def healthy(self) -> tuple[bool, str]:
        """Alive: the runner thread runs. A pass that crashes is retried, not a reason
        to restart the pod; /readyz and the metrics say when passes keep failing."""
        if not self.runner.thread.is_alive():
            return False, "runner stopped"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        crash = f" (last crash: {self.runner.last_crash})" if self.runner.last_crash else ""
        if not self.runner.first_sync_ok:
            return False, "first sync not done" + crash
        if self.runner.last_ok is None or time.monotonic() - self.runner.last_ok > self.stale_after:
            return False, "last successful pass is stale" + crash
        return True, "ok"

    def handle_webhook(self, req: BaseHTTPRequestHandler) -> tuple[int, str]:
        cfg = self.webhook
        assert cfg is not None
        if not cfg.take():
            return 429, "rate limited"
        try:
            length = int(req.headers.get("Content-Length") or 0)
        except ValueError:
            return 400, "bad Content-Length"
        if length < 0 or length > cfg.max_body:
            return 413, "body too large"
        body = req.rfile.read(length)
        if not verify_signature(cfg, body, req.headers):
            return 401, "bad or missing signature"
        branch = pushed_branch(body)
        if branch is not None and branch != cfg.branch:
            return 202, f"ignored: push to {branch}"
        self.runner.kick("webhook")
        return 202, "pass scheduled"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.ui is not None:
            self.ui.stop()    # ends the dashboard's followers with the server
        self.httpd.shutdown()
        self.httpd.server_close()


def watch_path(path: str, kick: Callable[[str], None]):
    """Kick a pass when files (or .git refs) under ``path`` change. Returns the observer."""
    from watchdog.events import EVENT_TYPE_CLOSED_NO_WRITE, EVENT_TYPE_OPENED, FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            # a read opens and closes files (every pass reads the repo): only a change is news
            if event.event_type in (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE):
                return
            # git writes a ref as <ref>.lock and renames it into place: the rename's destination is news
            path = str(getattr(event, "dest_path", "") or event.src_path)
            if not event.is_directory and not path.endswith((".lock", "index")):
                kick("watchdog")

    observer = Observer()
    base = Path(path)
    gitdir = base / ".git" if (base / ".git").is_dir() else base if (base / "refs").is_dir() else None
    if gitdir is not None:
        # a git repo: a commit or push moves a ref; objects/ churns and says nothing new
        observer.schedule(Handler(), str(gitdir), recursive=False)          # HEAD, packed-refs
        observer.schedule(Handler(), str(gitdir / "refs"), recursive=True)
        if gitdir != base and (base / "releases").is_dir():   # a checkout: edits before a commit too
            observer.schedule(Handler(), str(base / "releases"), recursive=True)
    else:
        observer.schedule(Handler(), path, recursive=True)
    observer.daemon = True
    observer.start()
    return observer
