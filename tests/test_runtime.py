"""The service around the pass: coalescing runner, webhook (HMAC, limits),
health/readiness/metrics, and the watchdog trigger, over real HTTP on
127.0.0.1."""

import hashlib
import hmac
import socket
import json
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest

from reconciler.runtime import Metrics, Runner, Server, WebhookConfig, watch_path

pytestmark = pytest.mark.timeout(60)
SECRET = b"hook-secret"


class Passes:
    """A pass function that records when passes start and whether two overlap."""

    def __init__(self, seconds=0.0):
        self.seconds, self.starts, self.active, self.overlap = seconds, [], 0, False
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.active += 1
            self.overlap |= self.active > 1
            self.starts.append(time.monotonic())
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        return None


@pytest.fixture
def service():
    passes = Passes(0.05)
    runner = Runner(passes, poll_interval=3600)
    metrics = Metrics()
    server = Server("127.0.0.1", 0, runner, metrics,
                    webhook=WebhookConfig(SECRET, branch="main", rate_per_second=1000, burst=1000))
    server.start()
    runner.start()
    assert runner.wait_passes(1, 5)   # the first pass
    yield passes, runner, server
    runner.stop(5)
    server.stop()


def post(server, body: bytes, headers: dict) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/webhook", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def test_signed_webhook_triggers_a_pass_within_a_second(service):
    passes, _, server = service
    latencies = []
    for _ in range(10):
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        n = len(passes.starts)
        t0 = time.monotonic()
        assert post(server, body, {"X-Hub-Signature-256": sign(body)}) == 202
        while len(passes.starts) == n and time.monotonic() - t0 < 2:
            time.sleep(0.005)
        assert len(passes.starts) > n
        latencies.append(passes.starts[n] - t0)
        time.sleep(0.1)
    assert statistics.median(latencies) < 1.0
    print(f"webhook->pass p50 {statistics.median(latencies) * 1000:.1f} ms")


@pytest.mark.parametrize("headers", [{}, {"X-Hub-Signature-256": "sha256=" + "0" * 64},
                                     {"X-Sluice-Signature": "sha256=nothex"}, {"X-Gitlab-Token": "wrong"}])
def test_unsigned_or_wrong_signature_is_refused_and_triggers_nothing(service, headers):
    passes, runner, server = service
    n = len(passes.starts)
    assert post(server, b'{"ref": "refs/heads/main"}', headers) == 401
    # a kick is set before the answer is sent: none pending means none was asked for
    assert not runner.pending and len(passes.starts) == n


def test_gitlab_token_generic_branch_filter_and_size_limit(service):
    passes, runner, server = service
    done = runner.passes
    assert post(server, b'{"ref": "refs/heads/main"}', {"X-Gitlab-Token": SECRET.decode()}) == 202
    assert runner.wait_passes(done + 1, 5)
    body = b'{"branch": "feature"}'
    n = len(passes.starts)
    assert post(server, body, {"X-Sluice-Signature": sign(body)}) == 202   # ignored: another branch
    assert not runner.pending and len(passes.starts) == n
    # announced as 2 MiB: refused from the headers, before the body is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n" + b"x" * 1000)
        assert sock.recv(64).startswith(b"HTTP/1.0 413")
    hostile = b"[" * 100000
    assert post(server, hostile, {"X-Sluice-Signature": sign(hostile)}) == 202   # no traceback, a pass at most


def test_flood_coalesces_and_never_overlaps(service):
    passes, _, server = service
    n = len(passes.starts)
    body = b'{"ref": "refs/heads/main"}'
    threads = [threading.Thread(target=post, args=(server, body, {"X-Hub-Signature-256": sign(body)}))
               for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)
    assert not passes.overlap
    assert 1 <= len(passes.starts) - n < 60   # bursts coalesce


def test_rate_limit():
    cfg = WebhookConfig(SECRET, rate_per_second=1, burst=3)
    assert [cfg.take() for _ in range(5)] == [True, True, True, False, False]


def test_a_pass_that_raises_never_kills_the_runner(tmp_path):
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise RuntimeError("a bug in one pass")
        return None
    runner = Runner(flaky, poll_interval=3600, min_gap=0.01, max_backoff=0.05)
    server = Server("127.0.0.1", 0, runner, Metrics())
    server.start()
    runner.start()
    try:
        assert runner.wait_passes(3, 10)
        assert runner.crashes == 2 and runner.passes == 1 and runner.thread.is_alive()
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
        assert b"a bug in one pass" in err.value.read()
    finally:
        runner.stop(5)
        server.stop()


def test_health_readiness_metrics(service):
    passes, runner, server = service
    base = f"http://127.0.0.1:{server.port}"
    assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/readyz", timeout=5)
    assert err.value.code == 503   # no successful sync yet
    runner.first_sync_ok, runner.last_ok = True, time.monotonic()
    assert urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert "sluice_pass_duration_seconds_bucket" in text and "sluice_webhook_requests_total" in text


def test_watchdog_kicks_a_pass_on_a_local_change(tmp_path):
    passes = Passes()
    runner = Runner(passes, poll_interval=3600)
    runner.start()
    assert runner.wait_passes(1, 5)
    observer = watch_path(str(tmp_path), runner.kick)
    try:
        n = len(passes.starts)
        t0 = time.monotonic()
        (tmp_path / "release.yaml").write_text("x: 1\n")
        while len(passes.starts) == n and time.monotonic() - t0 < 3:
            time.sleep(0.01)
        assert len(passes.starts) > n and passes.starts[n] - t0 < 1.0
    finally:
        observer.stop()
        runner.stop(5)


def test_watchdog_does_not_kick_when_files_are_only_read(tmp_path):
    """Reading the repo (as every pass does) opens and closes files: that is no change. Reads
    come first, then one write; the write's kick is the only one."""
    (tmp_path / "releases").mkdir()
    files = [tmp_path / "releases" / f"r{i}.yaml" for i in range(20)]
    for f in files:
        f.write_text("x: 1\n")
    kicks: list[str] = []
    seen = threading.Event()

    def kick(why):
        kicks.append(why)
        seen.set()

    observer = watch_path(str(tmp_path), kick)
    try:
        for _ in range(5):
            for f in files:
                f.read_text()
        (tmp_path / "sentinel.yaml").write_text("y: 1\n")
        assert seen.wait(5), "the write was not seen"
        deadline = time.monotonic() + 1.0   # the write's own events (created, modified, closed) settle
        while time.monotonic() < deadline and len(kicks) < 4:
            time.sleep(0.02)
        assert 1 <= len(kicks) <= 3, f"{len(kicks)} kicks for one write after 100 reads"
    finally:
        observer.stop()


def test_a_half_sent_request_is_closed_after_the_connection_timeout():
    """A client that sends half a request and waits (slowloris) holds its thread only until
    the per-connection timeout; the server keeps answering others meanwhile."""
    runner = Runner(lambda: None, poll_interval=3600)
    server = Server("127.0.0.1", 0, runner, Metrics(), conn_timeout=0.5)
    server.start()
    try:
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")    # never the blank line
        t0 = time.monotonic()
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).status == 200
        for sock in socks:
            assert sock.recv(100) == b""        # closed by the server, nothing answered
            sock.close()
        assert 0.4 < time.monotonic() - t0 < 5
    finally:
        server.stop()


def test_watchdog_kicks_a_pass_when_a_push_lands_in_a_local_bare_repo(tmp_path):
    """git writes the branch as refs/heads/main.lock and renames it into place: the rename's
    destination is the change (and a read of the repo is not)."""
    import subprocess
    from tests.support.gitserver import make_bare
    bare = make_bare(tmp_path, seed={"releases/a.yaml": "x: 1\n"})
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    kicked = threading.Event()
    observer = watch_path(str(bare), lambda why: kicked.set())
    try:
        (work / "releases" / "a.yaml").write_text("x: 2\n")
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@x", "PATH": __import__("os").environ["PATH"]}
        subprocess.run(["git", "-C", str(work), "commit", "-qam", "edit"], check=True, env=env)
        kicked.clear()   # only the push counts
        subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "HEAD:main"], check=True, env=env)
        assert kicked.wait(5), "a push to the watched repo kicked no pass"
    finally:
        observer.stop()
