"""A real VictoriaMetrics on 127.0.0.1 fed the same backfilled Istio telemetry
as the Prometheus tests (``tests.support.prometheus.History``).

``start(history)`` runs Debian's ``victoria-metrics`` with its own data
directory, imports the history at ``/api/v1/import/prometheus`` (Prometheus
text format, millisecond timestamps), flushes it and waits until every series
is searchable, then yields the URL; the server is stopped by PID. Query with
an explicit ``time``. ``-search.latencyOffset=0s`` as Sluice needs it
(``latency_offset=None`` keeps VictoriaMetrics' default, 30s, which hides the
newest samples), ``-search.disableCache`` (answers computed before the import
must not be served after it), ``-retentionPeriod=100y`` (history is kept
however old it is). Sluice asks it with ``flavor: victoriametrics``
(``PROVIDER``).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from tests.support.gitserver import free_port
from tests.support.prometheus import History
from tests.support.tools import require

CHUNK = 1 << 20   # bytes per import request
PROVIDER = {"flavor": "victoriametrics"}   # the provider settings a VictoriaMetrics needs besides its address


def _poll(ok, what: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Ask ``ok()`` until it holds; bounded in time, and stops when the server died."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"victoria-metrics: {what} (exit code {proc.poll()})")
        time.sleep(0.05)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read() if resp.status == 200 else None
    except OSError:
        return None


def _import(url: str, history: History) -> None:
    lines = history.exposition().splitlines(keepends=True)
    chunk: list[str] = []
    size = 0
    for line in lines + [None]:
        if line is None or size + len(line) > CHUNK:
            req = urllib.request.Request(f"{url}/api/v1/import/prometheus", data="".join(chunk).encode(),
                                         method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status in (200, 204), resp.status
            chunk, size = [], 0
        if line is not None:
            chunk.append(line)
            size += len(line)


def _searchable(url: str, history: History) -> bool:
    times = [t for points in history.series.values() for t in points]
    params = urllib.parse.urlencode({"match[]": '{__name__=~"istio_.+"}', "start": min(times), "end": max(times)})
    body = _get(f"{url}/api/v1/series?{params}")
    return body is not None and len(json.loads(body).get("data") or []) >= len(history.series)


@contextlib.contextmanager
def start(history: History | None = None, *, latency_offset: str | None = "0s"):
    """A real VictoriaMetrics with ``history`` imported; yields its URL. ``latency_offset``:
    its ``-search.latencyOffset`` (None: the server's default, 30s)."""
    binary = require("victoria-metrics", "victoria-metrics")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="sluice-vm-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "vm.log", "wb")
    offset = [f"-search.latencyOffset={latency_offset}"] if latency_offset is not None else []
    proc = subprocess.Popen(
        [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={tmp / 'data'}",
         "-retentionPeriod=100y", *offset, "-search.disableCache", "-loggerLevel=ERROR"],
        stdout=subprocess.DEVNULL, stderr=log)
    try:
        _poll(lambda: _get(f"{url}/health") is not None, "did not become ready", proc)
        if history is not None and history.series:
            _import(url, history)
            _get(f"{url}/internal/force_flush")   # make the import searchable now, not within a second
            _poll(lambda: _searchable(url, history), "imported series did not become searchable", proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
