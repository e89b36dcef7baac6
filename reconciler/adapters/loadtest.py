"""A load generator behind a hook: traffic for a canary that gets too little to judge.

``Receiver`` listens for Sluice's hook POSTs (``sluice.dev/hook/v1``,
docs/hooks.md) and reads from the body's ``metadata`` what to load:

    url: http://reviews-canary.bookinfo:9080/health   # the only URL it calls
    rps: "20"              # requests per second, at most --max-rps
    duration: 2m           # how long, at most --max-duration
    header.x-canary: "1"   # optional request headers (header.<name>: value); GET requests only

It answers 200 at once (the hook passes; the load then runs on its own
thread) or 400 with the reason when the metadata is unusable (the hook
fails: a misconfigured load test never passes a check). A new request for a
URL that is being loaded replaces its rate and end instead of adding a
second load. Bounds: rps <= ``max_rps``, duration <= ``max_duration``,
``concurrency`` requests in flight per load, ``max_loads`` URLs at once,
each request ``request_timeout``; only http(s) URLs, and with
``allow_hosts`` only hosts matching one of those globs. It never runs a
command: a ``cmd`` or ``command`` key is refused.

``GET /`` answers the loads running and what each sent (for people and tests).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping
from urllib.parse import urlsplit

from reconciler.adapters.metrics.httpclient import _NoRedirect, shown_url
from reconciler.core.analysis import url_problem
from reconciler.core.durations import parse_duration

log = logging.getLogger("sluice.loadtest")

MAX_BODY = 1 << 20
MAX_URL = 2048          # characters of a load's URL
KEEP_DONE = 60.0        # seconds a finished load stays listed in GET /
CONN_TIMEOUT = 10.0     # seconds a connection may stay silent (idle sockets never pile up threads)
# headers a hook may not set: the target URL's host is the only authority (a Host header would let a load
# aimed at an allowed host reach any service behind a mesh proxy), and the framing is the client's own
FORBIDDEN_HEADERS = frozenset({"host", ":authority", "connection", "transfer-encoding", "content-length",
                               "proxy-authorization", "te", "upgrade", "forwarded", "x-forwarded-host"})


@dataclass(frozen=True)
class Limits:
    max_rps: float = 100.0          # requests per second per load
    max_duration: float = 600.0     # seconds per load
    concurrency: int = 8            # requests in flight per load
    max_loads: int = 4              # URLs loaded at once
    request_timeout: float = 5.0    # seconds per request
    allow_hosts: tuple[str, ...] = ()   # host globs a load may call; empty: any host


@dataclass
class Load:
    """One URL being loaded until ``end`` (monotonic) at ``rps``."""

    url: str
    rps: float
    end: float
    headers: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0               # every slot busy: the target answers slower than the rate asks
    stop: threading.Event = field(default_factory=threading.Event)

    def shown(self) -> dict[str, Any]:
        return {"url": shown_url(self.url), "rps": self.rps, "secondsLeft": max(0.0, round(self.end - time.monotonic(), 1)),
                "sent": self.sent, "ok": self.ok, "failed": self.failed, "skipped": self.skipped}


class BadRequest(ValueError):
    """The hook's metadata asks for a load this receiver will not generate."""


def parse(doc: Any, limits: Limits) -> tuple[str, float, float, dict[str, str]]:
    """(url, rps, seconds, headers) from a hook body; BadRequest saying why not."""
    if not isinstance(doc, Mapping):
        raise BadRequest("the body is not a JSON object (a Sluice hook body, sluice.dev/hook/v1)")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise BadRequest("the body has no metadata: set the hook's metadata url, rps and duration")
    if "cmd" in meta or "command" in meta:
        raise BadRequest("this receiver never runs commands: give url, rps and duration")
    url = str(meta.get("url") or "")
    why = url_problem(url) if url else "is missing"
    if not why and len(url) > MAX_URL:
        why = f"is over {MAX_URL} characters"
    if why:
        raise BadRequest(f"metadata.url {why}")
    host = urlsplit(url).hostname or ""
    if limits.allow_hosts and not any(fnmatchcase(host, g) for g in limits.allow_hosts):
        raise BadRequest(f"metadata.url: host {host} is not one this receiver may load "
                         f"(--allow-host {', '.join(limits.allow_hosts)})")
    try:
        rps = float(meta.get("rps", ""))
    except ValueError:
        raise BadRequest("metadata.rps must be a number of requests per second") from None
    if not 0 < rps <= limits.max_rps:
        raise BadRequest(f"metadata.rps {meta.get('rps')} is outside (0, {limits.max_rps:g}]")
    try:
        seconds = parse_duration(str(meta.get("duration", "")))
    except ValueError as exc:
        raise BadRequest(f"metadata.duration: {exc}") from None
    if not 0 < seconds <= limits.max_duration:
        raise BadRequest(f"metadata.duration {meta.get('duration')} is outside (0, {limits.max_duration:g}s]")
    if "method" in meta and str(meta["method"]).upper() != "GET":
        raise BadRequest("metadata.method: the load is GET requests only")
    headers = {str(k)[7:]: str(v) for k, v in meta.items() if str(k).startswith("header.")}
    for name, value in headers.items():
        if not name or any(c in name + value for c in "\r\n"):
            raise BadRequest(f"metadata.header.{name}: not a header name and one-line value")
        if name.lower() in FORBIDDEN_HEADERS:
            raise BadRequest(f"metadata.header.{name}: may not be set (the URL's host is the only authority)")
    return url, rps, seconds, headers


class Receiver:
    """The HTTP receiver and its loads. ``start()``, then ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits()):
        self.limits = limits
        self.loads: dict[str, Load] = {}
        self._opener = urllib.request.build_opener(_NoRedirect())   # only the URL the hook named, never elsewhere
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CONN_TIMEOUT

            def do_POST(self):   # noqa: N802 - http.server's name
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    return self._answer(411, {"error": "Content-Length required"})
                if length < 0:
                    return self._answer(400, {"error": "negative Content-Length"})
                if length > MAX_BODY:
                    return self._answer(413, {"error": f"body over {MAX_BODY} bytes"})
                try:
                    doc = json.loads(self.rfile.read(length) or b"null")
                    load = receiver.accept(doc)
                except (ValueError, BadRequest) as exc:
                    return self._answer(400, {"error": str(exc) if isinstance(exc, BadRequest) else "not JSON"})
                self._answer(200, {"accepted": True, **load})

            def do_GET(self):   # noqa: N802
                self._answer(200, receiver.state())

            def _answer(self, status: int, doc: Mapping[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="sluice-loadtest", daemon=True)

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for load in self.loads.values():
                load.stop.set()

    def state(self) -> dict[str, Any]:
        with self._lock:
            self._forget()
            return {"loads": [load.shown() for load in self.loads.values()]}

    def _forget(self) -> None:
        """Drop loads finished more than KEEP_DONE ago (called holding the lock): what is
        remembered stays bounded by max_loads running plus the recently finished."""
        now = time.monotonic()
        for url in [u for u, load in self.loads.items() if load.stop.is_set() and now - load.end > KEEP_DONE]:
            del self.loads[url]
        done = [u for u, load in self.loads.items() if load.stop.is_set()]
        for url in done[:max(0, len(done) - 4 * self.limits.max_loads)]:   # a burst of short loads: oldest first
            del self.loads[url]

    def accept(self, doc: Any) -> dict[str, Any]:
        """Start (or renew) the load a hook body asks for; BadRequest when it cannot."""
        url, rps, seconds, headers = parse(doc, self.limits)
        end = time.monotonic() + seconds
        with self._lock:
            self._forget()
            running = self.loads.get(url)
            if running is not None and not running.stop.is_set():
                running.rps, running.end, running.headers = rps, end, headers   # renewed, not doubled
                return running.shown()
            live = [u for u, load in self.loads.items() if not load.stop.is_set()]
            if len(live) >= self.limits.max_loads:
                raise BadRequest(f"{len(live)} loads run already (at most {self.limits.max_loads})")
            load = self.loads[url] = Load(url, rps, end, headers)
        threading.Thread(target=self._run, args=(load,), name="sluice-load", daemon=True).start()
        log.info("load url=%s rps=%g duration=%gs", shown_url(url), rps, seconds)
        return load.shown()

    def _run(self, load: Load) -> None:
        """Send ``load``'s requests at its rate until its end, at most ``concurrency`` in flight."""
        slots = threading.BoundedSemaphore(self.limits.concurrency)
        with ThreadPoolExecutor(max_workers=self.limits.concurrency, thread_name_prefix="sluice-load") as pool:
            next_at = time.monotonic()
            while not load.stop.is_set():
                now = time.monotonic()
                if now >= load.end:
                    break
                if next_at > now:
                    load.stop.wait(min(next_at - now, load.end - now))   # paced: the rate, not a sync point
                    continue
                next_at = max(next_at + 1.0 / load.rps, now - 1.0)   # a stall never bursts more than 1s worth
                if slots.acquire(blocking=False):
                    pool.submit(self._one, load, slots)
                else:
                    with self._lock:
                        load.skipped += 1
        load.end = min(load.end, time.monotonic())   # finished now, whatever stopped it
        load.stop.set()
        log.info("load done url=%s sent=%d ok=%d failed=%d", shown_url(load.url), load.sent, load.ok, load.failed)

    def _one(self, load: Load, slots: threading.BoundedSemaphore) -> None:
        try:
            req = urllib.request.Request(load.url, headers={"User-Agent": "sluice-loadtest", **load.headers})
            with self._opener.open(req, timeout=self.limits.request_timeout) as resp:
                resp.read(65536)
                good = resp.status < 500
        except urllib.error.HTTPError as exc:
            good = exc.code < 500
        except (OSError, ValueError):
            good = False
        finally:
            slots.release()
        with self._lock:
            load.sent += 1
            if good:
                load.ok += 1
            else:
                load.failed += 1
