"""The dashboard's HTTP side: routes under ``/ui``, the version pages poll, the
data cache, and what tells it the repo changed.

- ``Dashboard`` answers requests handed to it by any ``BaseHTTPRequestHandler``
  (``sluice run``'s Server delegates ``/ui...``; ``sluice ui`` runs its own).
  GET and HEAD only; anything else is 405. Every answer carries a
  Content-Security-Policy that allows scripts, styles and connections from
  the page's own origin only, and no inline script.
- The data (status rows, parsed files, each release's history) is cached
  per generation: ``bump`` starts a new one when the tip moves or a pass
  ends. Pages are rendered per request from the cached rows (ages move with
  the clock); a page of 1,000 releases costs a few tens of milliseconds.
- Each release's history is cached in one LRU bounded by a record budget:
  one entry per release page (the newest ``page_size`` records at the newest
  tip, or an older page), so memory stays bounded whatever the number of
  commits and open pages.
- ``/ui/version`` answers the generation (tiny JSON, ETag, 304 when
  unchanged); the page's script polls it (twice a second while visible,
  every 5 s when hidden) and fetches itself again when it changed. No
  connection is held per tab.
- Followers bump the generation: ``follow_checkout`` (polls a local
  checkout), ``follow_remote`` (``git ls-remote`` a URL every second, fetch
  when the tip moved), ``follow_passes`` (``sluice run``: the Runner's pass
  count).
- ``hosts``: when set (``sluice ui`` on loopback), a request whose Host
  header names another host is answered 421 (DNS rebinding).

``serve(...)`` / ``start_dashboard(...)`` run a standalone server in a thread
(``sluice ui``, ``make demo``); ``stop()`` ends it and every stream.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import git

from reconciler.cli.source import Source, open_source
from reconciler.adapters.gitrepo import redact
from reconciler.core.history import history as history_records
from reconciler.core.loader import LoadCache, key_from_path
from reconciler.errors import SluiceError
from reconciler.readmodel import clone_reader, read_current, release_rows, tip_of
from reconciler.ui import pages
from reconciler.ui.actions import actions

log = logging.getLogger("sluice.ui")

PREFIX = "/ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
PAGE_SIZE = 200          # history records on one release page; older ones behind an "older" link
HISTORY_BUDGET = 4000    # history records kept in memory across all pages (~5 KB each with evidence: ~20 MB)
CONN_TIMEOUT = 30.0      # seconds a connection may sit idle or half-sent before it is closed
LOOPBACK_NAMES = frozenset({"localhost"})
_SHA = re.compile(r"[0-9a-f]{7,40}")


def host_of(header: str | None) -> str | None:
    """The host name of a Host header (``[::1]:8090`` -> ``::1``), lower case; None when unreadable."""
    if not header:
        return None
    try:
        name = urlsplit("//" + header.strip()).hostname
    except ValueError:
        return None
    return name.rstrip(".") if name else None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(listen_host: str, extra: tuple[str, ...] = ()) -> frozenset | None:
    """The Host names a dashboard listening on ``listen_host`` answers: on loopback, loopback
    names and IPs plus ``extra`` (a page served to a rebound DNS name is refused); elsewhere
    any host, unless ``extra`` names some (then those and loopback)."""
    if not extra and not is_loopback(listen_host):
        return None
    return frozenset({"localhost", *(h.lower().strip("[]").rstrip(".") for h in extra)})


def host_allowed(hosts: frozenset | None, header: str | None) -> bool:
    if hosts is None:
        return True
    name = host_of(header)
    return name is not None and (name in hosts or (name not in LOOPBACK_NAMES and is_loopback(name)))


def git_error_text(exc: BaseException, secrets=()) -> str:
    """The whole of a git failure (every stderr line, redacted), not only its last line."""
    cause = exc if isinstance(exc, git.GitCommandError) else exc.__cause__
    if isinstance(cause, git.GitCommandError) and (cause.stderr or "").strip():
        text = str(cause.stderr).strip().removeprefix("stderr:").strip().strip("'").strip()
        return redact(" ".join(line.strip() for line in text.splitlines() if line.strip()), secrets)
    return redact(str(exc), secrets)


@dataclass
class View:
    """What one generation of the repo shows."""

    generation: int
    tip: str | None
    rows: list[dict]
    releases: dict                 # key -> Release (valid ones)
    paths: dict                    # key -> file path (valid and invalid)
    error: str | None = None


def checkout_stamp(source: Source, path: str) -> tuple:
    """What changes when a checkout's content may have: HEAD, and each settings and
    release file's (path, size, mtime)."""
    files = []
    for top in ("sluice.yaml", "releases"):
        full = os.path.join(path, top)
        if os.path.isfile(full):
            st = os.stat(full)
            files.append((top, st.st_size, st.st_mtime_ns))
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames.sort()
            for name in sorted(filenames):
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue    # removed while we looked: the next look sees it gone
                files.append((os.path.join(dirpath, name), st.st_size, st.st_mtime_ns))
    return tip_of(source), tuple(files)


def commit_url_for(url: str | None) -> str | None:
    """A web link for commits of an ``https://host/owner/repo(.git)`` remote (GitHub, GitLab,
    Gitea and Bitbucket all answer ``/commit/<sha>``); None for any other remote."""
    if not url:
        return None
    m = re.match(r"^https://([A-Za-z0-9.-]+(?::\d+)?)/([\w.~/-]+?)(?:\.git)?/?$", url)
    return f"https://{m.group(1)}/{m.group(2)}/commit/{{sha}}" if m else None


class Dashboard:
    """The read-only dashboard over one ``Source``."""

    def __init__(self, source: Source | Callable[[], Source], *, where: str = "your clone of the config repo",
                 commit_url: str | None = None, page_size: int = PAGE_SIZE, history_budget: int = HISTORY_BUDGET,
                 hosts: frozenset | None = None):
        # a callable opens the source on first use (sluice run: the clone exists after the first fetch)
        self.source, self._open = (None, source) if callable(source) else (source, None)
        self.where, self.commit_url = where, commit_url
        self.page_size, self.history_budget, self.hosts = page_size, max(history_budget, page_size + 1), hosts
        self._lock = threading.Lock()
        self._generation = 1
        self._build = threading.Lock()          # one rebuild at a time; readers of a built view never wait
        self._view: View | None = None
        # (release, before) -> (tip, records, older): LRU, at most history_budget records in all
        self._history: OrderedDict[tuple, tuple] = OrderedDict()
        self._history_lock = threading.Lock()
        self._cache = LoadCache()
        self._followers: list[Callable[[], None]] = []
        self.fetch_error: str | None = None

    # --- generations ----------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._generation

    def bump(self, why: str = "") -> None:
        """The repo may have changed: the next request rebuilds, open pages refresh."""
        with self._lock:
            self._generation += 1
        log.debug("dashboard generation=%d why=%s", self._generation, why or "-")

    def view(self) -> View:
        gen = self._generation
        current = self._view
        if current is not None and current.generation == gen:
            return current
        with self._build:
            current = self._view
            if current is not None and current.generation == gen:
                return current
            if self.source is None:
                try:
                    self.source = self._open()
                except SluiceError as exc:
                    self._view = View(gen, None, [], {}, {}, error=f"no data yet: {exc}")
                    return self._view
            tip = tip_of(self.source)
            if current is not None and tip == current.tip and self.source.path is None and not current.error:
                # a clone whose tip did not move (a pass that committed nothing): same data
                current = View(gen, tip, current.rows, current.releases, current.paths)
            else:
                current = self._load(gen, tip, current)
            self._view = current
            return current

    def _load(self, gen: int, tip: str | None, last: View | None) -> View:
        try:
            loaded, changes = read_current(self.source, self._cache)
        except (SluiceError, OSError) as exc:
            # fail closed: say why, never show a guess; the last good view stays visible below the error
            log.warning("dashboard read failed: %s", exc)
            keep = last or View(gen, tip, [], {}, {})
            return View(gen, keep.tip, keep.rows, keep.releases, keep.paths, error=f"cannot read the repo: {exc}")
        releases = {r.key: r for r in loaded.releases}
        paths = {r.key: r.path for r in loaded.releases}
        paths.update({key_from_path(p): p for p in loaded.invalid})
        return View(gen, tip, release_rows(loaded, changes), releases, paths)

    def history(self, view: View, key: str, before: str | None = None) -> tuple[list, str | None]:
        """(records oldest first, the commit to ask for older ones or None): at most
        ``page_size`` records, the newest at ``view.tip``, or those older than ``before``."""
        repo = self.source.repo if self.source is not None else None
        if repo is None or view.tip is None or key not in view.paths:
            return [], None
        with self._history_lock:
            hit = self._history.get((key, before))
            if hit is not None and hit[0] == view.tip:
                self._history.move_to_end((key, before))
                return hit[1], hit[2]
        # a page older than ``before``: from its parents (every parent, for merges)
        raws = repo.log_file([view.paths[key]], view.tip if before is None else f"{before}^@", limit=self.page_size + 1)
        older = raws[self.page_size - 1].sha if len(raws) > self.page_size else None
        records = history_records(raws[:self.page_size], key)
        with self._history_lock:
            self._history[(key, before)] = (view.tip, records, older)
            self._history.move_to_end((key, before))
            while self.cached_records() > self.history_budget and len(self._history) > 1:
                self._history.popitem(last=False)
        return records, older

    def cached_records(self) -> int:
        """How many history records the cache holds (at most ``history_budget``)."""
        return sum(len(entry[1]) for entry in self._history.values())

    # --- followers ------------------------------------------------------------
    def _loop(self, every: float, step: Callable[[], None], name: str) -> None:
        stop = threading.Event()

        def run():
            while not stop.wait(every):
                try:
                    step()
                except Exception:   # noqa: BLE001 - a follower must outlive one bad read; said in the log
                    log.exception("dashboard follower %s failed", name)

        thread = threading.Thread(target=run, name=f"sluice-ui-{name}", daemon=True)
        thread.start()
        self._followers.append(lambda: (stop.set(), thread.join(5)))

    def follow_checkout(self, path: str, every: float = 0.5) -> None:
        """A local checkout: a new HEAD or an edited, added or removed release file bumps
        within ``every`` seconds (one ``git rev-parse`` and a stat of each file per look).
        Polled, not watched: a watchdog observer also reports our own reads (opened/closed
        events), which would bump for ever."""
        state = {"stamp": checkout_stamp(self.source, path)}

        def check():
            stamp = checkout_stamp(self.source, path)
            if stamp != state["stamp"]:
                state["stamp"] = stamp
                self.bump("checkout changed")

        self._loop(every, check, "checkout")

    def follow_remote(self, every: float = 1.0) -> None:
        """A URL: ask the remote for the branch's tip (``git ls-remote``, one small round trip)
        every ``every`` seconds, and fetch only when it moved; a new tip bumps. A failed look
        or fetch is shown (the whole git error, redacted); the last fetched tip stays."""
        repo = self.source.repo
        state = {"tip": None}

        def failed(exc: Exception) -> None:
            secrets = repo.creds.secrets()
            full = git_error_text(exc, secrets)
            summary = redact(str(exc), secrets) if isinstance(exc, SluiceError) else \
                f"looking at {redact(repo.url, secrets)}:"
            text = f"fetch failed, showing the last fetched tip: {summary}" + (
                "" if full in summary else f" (git said: {full})")
            if self.fetch_error != text:
                self.fetch_error = text
                self.bump("fetch failed")

        def fetch():
            try:
                tip = repo.sync()
            except SluiceError as exc:
                return failed(exc)
            changed = tip != state["tip"] or self.fetch_error
            state["tip"], self.fetch_error = tip, None
            if changed:
                self.bump("fetched")

        def look():
            if state["tip"] is None or self.fetch_error:
                return fetch()
            try:
                out = repo.git("ls-remote", "origin", f"refs/heads/{repo.branch}")
            except git.GitCommandError as exc:
                return failed(exc)
            if out.split("\t", 1)[0].strip() != state["tip"]:
                fetch()     # moved (or gone: the fetch says how)

        fetch()
        self._loop(every, look, "fetch")

    def follow_passes(self, count: Callable[[], int], every: float = 0.25) -> None:
        """``sluice run``: each ended pass (``count`` grows) bumps; the tip it fetched or pushed is read then."""
        state = {"n": count()}

        def check():
            n = count()
            if n != state["n"]:
                state["n"] = n
                self.bump("pass ended")

        self._loop(every, check, "passes")

    def stop(self) -> None:
        """End every follower."""
        for stop in self._followers:
            stop()
        self._followers.clear()

    # --- HTTP -------------------------------------------------------------------
    def handle(self, req: BaseHTTPRequestHandler) -> None:
        """Answer ``req`` (any method; only GET and HEAD are served)."""
        if not host_allowed(self.hosts, req.headers.get("Host")):
            return self._send(req, 421, b"misdirected request: this dashboard answers only to "
                              + ", ".join(sorted(self.hosts)).encode() + b" and loopback addresses "
                              b"(sluice ui --allow-host adds a name)\n")
        if req.command not in ("GET", "HEAD"):
            return self._send(req, 405, b"the dashboard is read-only: GET and HEAD only\n", extra={"Allow": "GET, HEAD"})
        parts = urlsplit(req.path)
        path = parts.path
        if path in ("/", PREFIX):
            return self._send(req, 302, b"", extra={"Location": "ui/"})   # relative: right under any prefix
        if not path.startswith(PREFIX + "/"):
            return self._send(req, 404, b"not found\n")
        route = path[len(PREFIX) + 1:]
        try:
            self._route(req, route, {k: v[-1] for k, v in parse_qs(parts.query).items()})
        except (SluiceError, git.GitCommandError) as exc:
            # fail closed: a page that cannot be read says why, never shows a guess
            log.warning("dashboard page %s failed: %s", route, exc)
            self._send(req, 503, f"cannot read the repo: {exc}\n".encode(), extra={"Retry-After": "2"})
        except (BrokenPipeError, ConnectionResetError):
            return      # the page went away
        except Exception as exc:   # noqa: BLE001 - the one error handler of a page: answer, never drop the connection
            log.exception("dashboard page %s failed", route)
            self._send(req, 500, f"the dashboard failed on this page: {type(exc).__name__}: {exc}\n".encode())

    def _route(self, req, route: str, query: dict) -> None:
        if route == "":
            return self._overview(req, query)
        if route == "version":
            return self._version(req)
        if route.startswith("static/") and route[7:] in STATIC:
            body = resources.files("reconciler.ui").joinpath("static", route[7:]).read_bytes()
            return self._send(req, 200, body, STATIC[route[7:]], cache="no-cache")
        segments = route.split("/")
        if len(segments) == 3 and segments[0] == "r":
            return self._release(req, unquote(segments[1]), unquote(segments[2]), query.get("before"))
        return self._send(req, 404, b"not found\n")

    def _notice(self, view: View) -> str | None:
        return " / ".join(filter(None, (self.fetch_error, view.error))) or None

    def _overview(self, req, query: dict) -> None:
        view = self.view()
        form, live = pages.overview(view.rows, root="./", now=datetime.now(timezone.utc),
                                    namespace=query.get("ns", ""), phase=query.get("phase", ""),
                                    text=query.get("q", ""))
        html = pages.page("releases", "./", live, token=str(view.generation), tip=view.tip, form=form,
                          notice=self._notice(view))
        self._send(req, 200, html.encode())

    def _release(self, req, namespace: str, name: str, before: str | None = None) -> None:
        view = self.view()
        key = f"{namespace}/{name}"
        row = next((r for r in view.rows if r["namespace"] == namespace and r["name"] == name), None)
        root = "../../"
        repo = self.source.repo if self.source is not None else None
        if row is not None and before is not None and not (
                _SHA.fullmatch(before) and repo is not None and view.tip and repo.is_ancestor(before, view.tip)):
            row, missing = None, f"no commit {before} in the history of {key} at this tip"
        else:
            missing = f"no release {key} at this tip"
        if row is None:
            html = pages.page("not found", root, f'<main id="live"><p class="empty">{pages.esc(missing)}</p></main>',
                              token=str(view.generation), tip=view.tip, notice=self._notice(view))
            return self._send(req, 404, html.encode())
        rel = view.releases.get(key)
        records, older = self.history(view, key, before)
        live = pages.release_or_error(row, records, actions(rel) if rel else [], path=view.paths.get(key, ""),
                                      where=self.where, now=datetime.now(timezone.utc), commit_url=self.commit_url,
                                      older=older, newer=before is not None)
        html = pages.page(key, root, live, token=str(view.generation), tip=view.tip, notice=self._notice(view))
        self._send(req, 200, html.encode())

    def _version(self, req) -> None:
        """The generation pages poll: a few bytes, 304 when the page's ETag still holds."""
        gen = self._generation
        etag = f'"g{gen}"'
        if req.headers.get("If-None-Match") == etag:
            return self._head(req, 304, "application/json", None, cache="no-cache", extra={"ETag": etag})
        self._send(req, 200, json.dumps({"generation": gen}).encode(), "application/json", cache="no-cache",
                   extra={"ETag": etag})

    def _head(self, req, code: int, ctype: str, length: int | None, *, cache: str = "no-store",
              extra: dict | None = None) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        if length is not None:
            req.send_header("Content-Length", str(length))
        req.send_header("Cache-Control", cache)
        req.send_header("Content-Security-Policy", CSP)
        req.send_header("X-Content-Type-Options", "nosniff")
        req.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            req.send_header(k, v)
        req.end_headers()

    def _send(self, req, code: int, body: bytes, ctype: str = "text/html; charset=utf-8", *,
              cache: str = "no-store", extra: dict | None = None) -> None:
        if code >= 300 and ctype.startswith("text/html") and not body.startswith(b"<!doctype"):
            ctype = "text/plain; charset=utf-8"
        self._head(req, code, ctype, len(body), cache=cache, extra=extra)
        if req.command != "HEAD":
            req.wfile.write(body)


class DashboardServer:
    """A standalone dashboard on ``host:port`` in a thread: ``url``, ``stop()``."""

    def __init__(self, dashboard: Dashboard, host: str = "127.0.0.1", port: int = 0, *,
                 conn_timeout: float = CONN_TIMEOUT):
        self.dashboard = dashboard
        ui = dashboard

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = conn_timeout      # an idle keep-alive or half-sent request ends: threads stay bounded

            def log_message(self, fmt, *args):   # access logs are noise here
                pass

            def _any(self):
                ui.handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _any

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="sluice-ui-http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/ui/"

    def start(self) -> "DashboardServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.dashboard.stop()
        self.httpd.shutdown()
        self.httpd.server_close()


def dashboard_for(where: str, branch: str = "main", *, every: float = 1.0, hosts: frozenset | None = None) -> Dashboard:
    """A following dashboard over a local checkout or directory (watched) or a URL (its tip
    looked at every ``every`` s, fetched when it moved)."""
    source = open_source(where, branch)
    if source.url:
        # credentials in a URL never reach a page: the same redaction as `sluice run`
        dash = Dashboard(source, where=f"a clone of {redact(source.repo.url, source.repo.creds.secrets())}",
                         commit_url=commit_url_for(source.url), hosts=hosts)
        dash.follow_remote(every)
    else:
        dash = Dashboard(source, where=f"your clone (--repo {redact(where, ())})" if where != "." else "this clone",
                         hosts=hosts)
        dash.follow_checkout(where)
    return dash


def controller_dashboard(workdir: str, branch: str, url: str, passes: Callable[[], int]) -> Dashboard:
    """``sluice run``'s dashboard: the controller's clone at ``workdir`` read at the tip its
    passes fetched (a second read-only handle: it never fetches), refreshed as each pass ends."""
    dash = Dashboard(lambda: clone_reader(workdir, branch, url), where=f"a clone of {redact(url, ())}",
                     commit_url=commit_url_for(url))
    dash.follow_passes(passes)
    return dash


def start_dashboard(where: str, *, branch: str = "main", host: str = "127.0.0.1", port: int = 0,
                    every: float = 1.0, allow_hosts: tuple[str, ...] = ()) -> DashboardServer:
    """Serve the dashboard of ``where`` (a checkout, directory or URL) in a thread; ``.url``, ``.stop()``."""
    dash = dashboard_for(where, branch, every=every, hosts=allowed_hosts(host, allow_hosts))
    return DashboardServer(dash, host, port).start()
