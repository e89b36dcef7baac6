"""Notifications and commit statuses, delivered off the pass thread.

The pass only enqueues: ``Notifications.publish(report, loaded, policy)``
turns a pass's committed events (and each release error when it first
appears or changes) into one job per receiver (``core.notifications``
routes them by folder and filters by event) plus the commit status of the
rollout, and hands them to a ``Notifier``. Nothing there touches the
network, so a dead receiver never slows a pass. ``held(problems)`` tells
the receivers of the last valid settings, once per set of problems, that an
invalid ``sluice.yaml`` holds every release.

``Notifier``: one lane per key (a receiver's name, or ``commit-status``),
each with its own bounded queue and its own thread, created when first
used; at most ``MAX_LANES`` lanes, beyond that keys share lanes by a hash
of their name. Jobs of one lane run one at a time and in order, so a dead
receiver holds only its own lane. ``submit`` never blocks; when a lane is
full its oldest chat message is dropped (the newest says where a rollout is
now), a commit status only when the lane holds nothing else, and counted.
A job is one attempt; on a ``DeliveryError(retry=True)`` (no answer, 5xx,
429) it waits at the head of its lane until a not-before time (0.5 s, 1 s,
2 s, ... later) and is tried again, ``attempts`` times in all; every
request has its receiver's timeout (HttpClient: the whole request, however
slowly a server drips its answer). Before every attempt ``can_write()`` is
asked: a replica that lost its lease drops what it queued while it led
(counted as dropped) instead of delivering it after the new leader.
``close(timeout)`` delivers what it can before the deadline and counts the
rest as dropped.

Receiver URLs of Slack, Teams and Discord are secrets (whoever has one can
post to the channel): logs show scheme and host only (``shown_hook``), and
a receiver's words quoted in a log line lose the URL's path and query
(``redact_hook``).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import weakref
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from reconciler.adapters.metrics.httpclient import HttpClient, origin, shown_url
from reconciler.adapters.notify import formats
from reconciler.core import notifications as rules
from reconciler.core.durations import parse_duration
from reconciler.core.model import Event, Problem, RepoLoad
from reconciler.errors import MetricsError

log = logging.getLogger("sluice.notify")

DEFAULT_QUEUE = 1000       # jobs waiting per lane; ~1-2 KB each, so a lane stays under a few MB
MAX_LANES = 64             # lanes (and threads) at most; more keys share lanes by hash
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = 0.5      # seconds before the 2nd attempt, doubled each time after
STATUS_LANE = "commit-status"
_ANSWERED = re.compile(r" answered (\d{3})")
_ACCEPTED = " answered more than 0 bytes"   # HttpClient's words for a 2xx answer with a body it does not read
_SECRET_PART = 6           # a path segment or query value this long or longer is starred out of log text


class DeliveryError(Exception):
    """One attempt failed; ``retry``: worth another attempt (no answer, 5xx, 429)."""

    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class Superseded(Exception):
    """Raised by a job a newer one replaced while it waited for a retry: counted as dropped."""


def shown_hook(url: str) -> str:
    """A receiver URL as logged: scheme, host and port; a path or query (where Slack, Teams
    and Discord keep the secret) is starred out."""
    bare = origin(url)
    if bare == "(invalid URL)":
        return bare
    scheme, _, rest = bare.partition("://")
    host, slash, path = rest.partition("/")
    return shown_url(f"{scheme}://{host}") + ("/***" if path or "?" in url else "")


def redact_hook(text: str, url: str) -> str:
    """``text`` (an error, a receiver's own words) without ``url``'s path and query, in any
    form a server may echo them: whole, URL-decoded, or one segment or value at a time."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return text.replace(url, "(invalid URL)")
    text = text.replace(url, shown_hook(url)).replace(origin(url), shown_hook(url))
    pieces = {parts.path, urllib.parse.unquote(parts.path), parts.query, urllib.parse.unquote(parts.query)}
    pieces.update(p for p in re.split(r"[/?&=;,]", urllib.parse.unquote(f"{parts.path}?{parts.query}"))
                  if len(p) >= _SECRET_PART)
    for piece in sorted(filter(None, pieces), key=len, reverse=True):
        if piece != "/":
            text = text.replace(piece, "/***" if piece.startswith("/") else "***")
    return text


def post_json(url: str, body: Mapping[str, Any], *, timeout: float, what: str,
              headers: Mapping[str, str] | None = None, token_file: str | None = None) -> None:
    """POST ``body`` as strict JSON with the metrics HttpClient (one deadline for the whole request,
    no redirects, secrets redacted); DeliveryError naming ``what`` and never the URL's path. A 2xx
    answer is delivered whatever it says: its body is not read (nor retried, however long)."""
    try:
        data = json.dumps(body, allow_nan=False).encode()
    except ValueError as exc:   # a non-finite number: a bug upstream, never worth another attempt
        raise DeliveryError(f"{what}: body is not JSON: {exc}", retry=False) from None
    client = HttpClient(what, timeout=timeout, headers=headers, token_file=token_file, max_bytes=0)
    try:
        client.fetch(url, method="POST", body=data, content_type="application/json", detail=_said)
    except MetricsError as exc:
        message = redact_hook(str(exc), url)
        if _ACCEPTED in message:
            return   # 2xx: accepted; what it says after the status line is not ours to read
        code = _ANSWERED.search(message)
        status = int(code.group(1)) if code else None
        raise DeliveryError(message, retry=status is None or status >= 500 or status == 429) from None


def _said(data: bytes) -> str:
    """A receiver's own words in an error answer: JSON ``message`` (GitHub, GitLab, Discord) or text
    (Slack); ``post_json`` redacts the URL from them before they reach a log."""
    text = data.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    said = doc.get("message") if isinstance(doc, dict) else None
    return " ".join(str(said if said is not None else text).split())[:200]


@dataclass
class _Job:
    key: str                      # receiver name: jobs of one key run in order, one at a time
    what: str                     # for logs: "slack-shop promoted bookinfo/reviews"
    attempt: Callable[[], None]   # one attempt; raises DeliveryError
    keep: bool = False            # a commit status: dropped from a full lane only after every chat message
    done: Callable[[], None] | None = None      # called once when the job leaves the queue, however
    waiting: Callable[[], None] | None = None   # called when a failed attempt waits for another
    tries: int = 0
    not_before: float = 0.0       # monotonic time of its next attempt (a retry waits at its lane's head)


class _Lane:
    def __init__(self, name: str, lock: threading.Lock):
        self.name = name
        self.jobs: collections.deque[_Job] = collections.deque()
        self.busy = False
        self.cond = threading.Condition(lock)
        self.thread: threading.Thread | None = None


_OPEN: "weakref.WeakSet[Notifier]" = weakref.WeakSet()   # every Notifier not yet closed: close_all()


def close_all(timeout: float = 0.0) -> None:
    """Close every open Notifier (a process ending; a test's leftovers), ``timeout`` each."""
    for notifier in list(_OPEN):
        notifier.close(timeout)


class Notifier:
    """Lanes of delivery jobs, each with its bounded queue and its thread."""

    def __init__(self, *, max_queue: int = DEFAULT_QUEUE, max_lanes: int = MAX_LANES,
                 attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF,
                 count: Callable[[str, str], None] | None = None, can_write: Callable[[], bool] | None = None):
        self.max_queue, self.max_lanes = max(1, max_queue), max(1, max_lanes)
        self.attempts, self.backoff = max(1, attempts), backoff
        self.count = count or (lambda receiver, result: None)   # e.g. Metrics.notifications
        self.can_write = can_write   # asked before every attempt: False drops the job
        self.sent = self.failed = self.dropped = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: dict[str, _Lane] = {}
        self._lane_of: dict[str, _Lane] = {}
        self._stop = threading.Event()
        self._closing = False
        _OPEN.add(self)

    def submit(self, key: str, what: str, attempt: Callable[[], None], *, keep: bool = False,
               done: Callable[[], None] | None = None, waiting: Callable[[], None] | None = None) -> bool:
        """Queue a job in ``key``'s lane; never blocks. False when closed. A full lane drops its
        oldest chat message (its oldest job when it holds commit statuses only)."""
        job = _Job(key, what, attempt, keep, done, waiting)
        with self._lock:
            if self._closing:
                self._drop(job, "closed")
                return False
            lane = self._lane(key)
            if len(lane.jobs) >= self.max_queue:
                victim = next((j for j in lane.jobs if not j.keep), lane.jobs[0])
                lane.jobs.remove(victim)
                self._drop(victim, "queue full")
            lane.jobs.append(job)
            lane.cond.notify()
        return True

    def _lane(self, key: str) -> _Lane:
        """``key``'s lane, created (with its thread) when first used (called holding the lock)."""
        lane = self._lane_of.get(key)
        if lane is None:
            if len(self._lanes) < self.max_lanes:
                lane = self._lanes[key] = _Lane(key, self._lock)
                lane.thread = threading.Thread(target=self._work, args=(lane,), name=f"sluice-notify-{key}",
                                               daemon=True)
                lane.thread.start()
            else:   # a stable hash: the same key always shares the same lane
                lane = list(self._lanes.values())[zlib.crc32(key.encode()) % self.max_lanes]
            self._lane_of[key] = lane
        return lane

    def _drop(self, job: _Job, why: str) -> None:
        self.dropped += 1
        self.count(job.key, "dropped")
        if job.done:
            job.done()
        if _round(self.dropped) or job.keep:   # a flood logs 1st, 10th, 100th, ... drop, not each one
            log.warning("notification %s dropped: %s (%d dropped so far)", job.what, why, self.dropped)

    def pending(self) -> int:
        with self._lock:
            return sum(len(lane.jobs) + lane.busy for lane in self._lanes.values())

    def _next(self, lane: _Lane) -> _Job | None:
        """The job at ``lane``'s head once its time has come; None when stopping (holding the lock)."""
        while not self._stop.is_set():
            if not lane.jobs:
                lane.cond.wait()
                continue
            wait = lane.jobs[0].not_before - time.monotonic()
            if wait <= 0:
                lane.busy = True
                return lane.jobs.popleft()
            lane.cond.wait(wait)
        return None

    def _work(self, lane: _Lane) -> None:
        while True:
            with self._lock:
                job = self._next(lane)
                if job is None:
                    return
            again = False
            try:
                again = self._run(job)
            finally:
                with self._lock:
                    lane.busy = False
                    if again:
                        lane.jobs.appendleft(job)   # order within a lane holds: it stays first
                        if job.waiting:
                            job.waiting()
                    self._idle.notify_all()

    def _run(self, job: _Job) -> bool:
        """One attempt at ``job``; True when it waits for another."""
        if self.can_write is not None and not self.can_write():
            with self._lock:
                self._drop(job, "this replica is not the leader any more (its lease was lost or handed over)")
            return False
        job.tries += 1
        try:
            job.attempt()
        except Superseded as exc:
            with self._lock:
                self._drop(job, str(exc))
            return False
        except DeliveryError as exc:
            last = job.tries >= self.attempts or not exc.retry or self._stop.is_set()
            log.warning("notification %s failed (attempt %d/%d%s): %s", job.what, job.tries, self.attempts,
                        "" if last else ", retrying", exc)
            if not last:
                job.not_before = time.monotonic() + self.backoff * 2 ** (job.tries - 1)
                return True
            self._finish(job, "failed")
            return False
        except Exception as exc:   # noqa: BLE001 - a bug in one job must not kill its lane
            log.error("notification %s failed: %s", job.what, type(exc).__name__, exc_info=True)
            self._finish(job, "failed")
            return False
        self._finish(job, "sent")
        return False

    def _finish(self, job: _Job, result: str) -> None:
        with self._lock:
            if result == "sent":
                self.sent += 1
            else:
                self.failed += 1
        self.count(job.key, result)
        if job.done:
            job.done()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued job ran (or ``timeout`` seconds passed); True when none is left."""
        end = time.monotonic() + timeout
        with self._lock:
            while any(lane.jobs or lane.busy for lane in self._lanes.values()):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.5))
        return True

    def close(self, timeout: float = 10.0) -> int:
        """Stop taking jobs, deliver what can be within ``timeout``, then stop the lanes.
        Returns how many jobs were left undelivered (counted as dropped)."""
        with self._lock:
            self._closing = True
        _OPEN.discard(self)
        self.flush(timeout)
        self._stop.set()
        with self._lock:
            left = [job for lane in self._lanes.values() for job in lane.jobs]
            for lane in self._lanes.values():
                lane.jobs.clear()
                lane.cond.notify_all()
            for job in left:
                self._drop(job, "shutting down")
        for lane in self._lanes.values():
            if lane.thread is not None:
                lane.thread.join(timeout=0.1)
        return len(left)


def _round(n: int) -> bool:
    """1, 10, 100, ...: when a growing count is worth a log line."""
    return str(n).rstrip("0") == "1"


def _utc_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Notifications:
    """What the controller hands each pass's report to. ``commit_status``
    (reconciler.adapters.commitstatus) marks the commit that started each rollout;
    ``can_write`` (the controller's) is asked before every delivery."""

    def __init__(self, notifier: Notifier | None = None, *, commit_status=None,
                 clock: Callable[[], str] = _utc_iso, can_write: Callable[[], bool] | None = None):
        self.notifier = notifier or Notifier()
        self.commit_status = commit_status
        self.clock = clock
        if can_write is not None:
            self.can_write = can_write
        self._errors: dict[str, str] = {}   # release -> its error last notified (no repeat each pass)
        self._statuses: dict[str, Any] = {}  # release -> its rollout's newest status not yet delivered
        self._statuses_lock = threading.Lock()   # the pass thread adds, the commit-status lane removes
        self._valid: tuple[Mapping[str, Any], Mapping[str, Any] | None] | None = None   # last valid settings
        self._held: tuple[str, ...] | None = None   # the problems last told about

    @property
    def can_write(self) -> Callable[[], bool] | None:
        return self.notifier.can_write

    @can_write.setter
    def can_write(self, fn: Callable[[], bool] | None) -> None:
        self.notifier.can_write = fn

    def publish(self, report, loaded: RepoLoad, policy: Mapping[str, Any] | None = None) -> int:
        """Queue the notifications and commit statuses of one pass; returns how many jobs.
        Never sends: called on the pass thread."""
        self._valid, self._held = (loaded.settings, policy), None
        paths = {r.key: r.path for r in loaded.releases}
        events = [out.event for _, out in sorted(report.outcomes.items()) if out.event is not None]
        events += self._new_errors(report)
        at, n = self.clock(), 0
        for event in events:
            kind = rules.kind_of(event)
            if kind is None:
                continue
            folder = rules.folder_of(paths.get(event.release), event.release)
            n += self._send(rules.recipients(folder, kind, loaded.settings, policy), kind, event, report.tip, at)
            if self.commit_status is not None and event.release in paths:
                n += self._status(self.commit_status.pending(kind, event, paths[event.release], report.tip))
        return n

    def held(self, problems: list[Problem]) -> int:
        """Tell every receiver of the last valid settings (whatever the routes; each receiver's
        ``events`` still applies) that ``problems`` of ``sluice.yaml`` hold every release: once per
        set of problems, again when they change; nothing when no settings were ever valid."""
        lines = tuple(str(p) for p in problems)
        if self._valid is None or not lines or lines == self._held:
            return 0
        self._held = lines
        settings, policy = self._valid
        event = rules.held_event(lines)
        found = [(name, cfg) for name, cfg in rules.receivers(settings, policy).items()
                 if not cfg.get("events") or "error" in cfg["events"]]
        return self._send(found, "error", event, "", self.clock())

    def _send(self, found, kind: str, event: Event, commit: str, at: str) -> int:
        n = 0
        for name, cfg in found:
            n += self.notifier.submit(name, f"{kind} of {event.release} to {name}",
                                      lambda name=name, cfg=cfg: self._deliver(name, cfg, kind, event, commit, at))
        return n

    def _status(self, pending) -> int:
        """Queue a commit status, or give it to its rollout's status still waiting (coalesced)."""
        if pending is None:
            return 0
        with self._statuses_lock:
            waiting = self._statuses.get(pending.release)
            if waiting is not None and waiting.update(pending):
                return 0
            self._statuses[pending.release] = pending
        kind = rules.kind_of(pending.event)
        return self.notifier.submit(STATUS_LANE, f"commit status of {pending.release} ({kind})", pending,
                                    keep=True, done=lambda: self._closed(pending), waiting=pending.reopen)

    def _closed(self, pending) -> None:
        pending.close()
        with self._statuses_lock:
            if self._statuses.get(pending.release) is pending:
                del self._statuses[pending.release]

    def _new_errors(self, report) -> list[Event]:
        """An ``error`` event per release whose error is new or changed since the last pass."""
        out = []
        for key, message in sorted(report.release_errors.items()):
            if self._errors.get(key) != message:
                outcome = report.outcomes.get(key)
                out.append(rules.error_event(key, message, outcome.phase if outcome else None,
                                             outcome.weight if outcome else None))
        self._errors = dict(report.release_errors)   # an error gone and back is news again
        return out

    def _url(self, name: str, cfg: Mapping[str, Any]) -> str:
        if cfg.get("urlFile"):   # read at each delivery: a rotated URL takes effect at once
            try:
                return Path(cfg["urlFile"]).read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise DeliveryError(f"receiver {name}: cannot read urlFile {cfg['urlFile']}: "
                                    f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}", retry=False) from None
        return cfg["url"]

    def _deliver(self, name: str, cfg: Mapping[str, Any], kind: str, event: Event, commit: str, at: str) -> None:
        url = self._url(name, cfg)
        body = formats.payload(cfg.get("type", "webhook"), kind, event, commit or None, at)
        timeout = parse_duration(cfg.get("timeout", rules.DEFAULT_TIMEOUT))
        post_json(url, body, timeout=timeout, what=f"receiver {name}", headers={"User-Agent": "sluice"})

    def flush(self, timeout: float) -> bool:
        return self.notifier.flush(timeout)

    def close(self, timeout: float = 10.0) -> int:
        return self.notifier.close(timeout)
