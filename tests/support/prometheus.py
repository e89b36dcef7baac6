"""A real Prometheus on 127.0.0.1 fed deterministic, backfilled Istio telemetry.

``History`` writes istio_requests_total and the request-duration histogram
for workloads over a timeline; ``start(history)`` backfills it with
``promtool tsdb create-blocks-from openmetrics`` BEFORE starting the server
(timestamps in seconds, increasing per series, ``# EOF`` at the end), waits
for ``/-/ready`` and yields the URL; the server is stopped by PID. Query
history with an explicit ``time``: instant queries look back 5 minutes.
``History.exposition`` gives the same samples to VictoriaMetrics
(``tests.support.victoria``).
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections import defaultdict

from tests.support.gitserver import free_port
from tests.support.tools import require

BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
STEP = 5   # seconds between samples


class History:
    """Counters of requests per workload, sampled every STEP seconds."""

    def __init__(self, namespace: str = "bookinfo"):
        self.namespace = namespace
        self.series: dict[str, dict[int, float]] = defaultdict(dict)
        self._totals: dict[str, float] = defaultdict(float)

    def _labels(self, workload: str, **extra: str) -> str:
        labels = {"reporter": "destination", "destination_workload_namespace": self.namespace,
                  "destination_workload": workload, **extra}
        return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))

    def traffic(self, workload: str, start: int, end: int, *, rps: float = 10.0, error_ratio: float = 0.0,
                p99_ms: float = 100.0) -> "History":
        """Requests from ``start`` to ``end`` (unix seconds): 98% fast, the rest under the p99 edge."""
        fast = next(b for b in BUCKETS if b >= p99_ms * 0.5)
        slow = next(b for b in BUCKETS if b >= p99_ms)
        for t in range(start, end + 1, STEP):
            n = rps * STEP
            for code, share in (("200", 1 - error_ratio), ("503", error_ratio)):
                key = f"istio_requests_total{{{self._labels(workload, response_code=code)}}}"
                self._totals[key] += n * share
                self.series[key][t] = self._totals[key]
            for le in BUCKETS + ("+Inf",):
                le_num = float("inf") if le == "+Inf" else le
                share = 0.0
                if le_num >= fast:
                    share = 0.98   # p99 then falls between the fast and slow edges
                if le_num >= slow:
                    share = 1.0
                key = f"istio_request_duration_milliseconds_bucket{{{self._labels(workload, le=str(le))}}}"
                self._totals[key] += n * share
                self.series[key][t] = self._totals[key]
        return self

    def openmetrics(self) -> str:
        """For ``promtool tsdb create-blocks-from openmetrics``: timestamps in seconds."""
        families: dict[str, list[str]] = defaultdict(list)
        for key, points in sorted(self.series.items()):
            family = key.split("{", 1)[0]
            for t in sorted(points):
                families[family].append(f"{key} {points[t]} {t}")
        out = []
        for family, lines in families.items():
            out.append(f"# TYPE {family} gauge")
            out.extend(lines)
        out.append("# EOF")
        return "\n".join(out) + "\n"

    def exposition(self) -> str:
        """The same samples in Prometheus' text exposition format, timestamps in
        milliseconds: what VictoriaMetrics imports at /api/v1/import/prometheus."""
        return "".join(f"{key} {points[t]} {t * 1000}\n"
                       for key, points in sorted(self.series.items()) for t in sorted(points))


@contextlib.contextmanager
def start(history: History | None = None, *, config: str | None = None, files: dict[str, str] | None = None):
    """A real Prometheus with ``history`` backfilled; yields its URL. ``config``
    replaces prometheus.yml (scrape targets, rule_files); ``files`` are written
    beside it (rule files named by the config)."""
    prometheus, promtool = require("prometheus", "prometheus"), require("promtool", "prometheus")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="sluice-prom-"))
    data = tmp / "data"
    data.mkdir()
    if history is not None and history.series:
        src = tmp / "history.om"
        src.write_text(history.openmetrics())
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(src), str(data)],
                       check=True, capture_output=True, timeout=120)
    cfg = tmp / "prometheus.yml"
    cfg.write_text(config or "global: {scrape_interval: 1m}\nscrape_configs: []\n")
    for name, text in (files or {}).items():
        (tmp / name).write_text(text)
    port = free_port()
    proc = subprocess.Popen(
        [prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y",
         "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("prometheus did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
