"""The load-test hook receiver (reconciler/adapters/loadtest.py) against hostile requests,
on 127.0.0.1: it never lets a hook choose the authority, never reads an unbounded body,
never keeps idle connections or finished loads without bound."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from reconciler.adapters import loadtest
from tests.support.webserver import Server as JSONServer


def post(url: str, doc) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def body(url, **meta):
    return {"apiVersion": "sluice.dev/hook/v1", "metadata": {"url": url, "rps": "5", "duration": "1s", **meta}}


@pytest.fixture
def receiver():
    r = loadtest.Receiver(limits=loadtest.Limits(allow_hosts=("127.0.0.1",))).start()
    yield r
    r.stop()


@pytest.mark.parametrize("header", ["Host", "host", ":authority", "Connection", "Transfer-Encoding", "X-Forwarded-Host"])
def test_a_hook_never_chooses_the_authority_or_the_framing(receiver, header):
    target = JSONServer()
    try:
        status, doc = post(receiver.url, body(f"{target.url}/health", **{f"header.{header}": "payments.svc"}))
        assert status == 400 and "may not be set" in doc["error"], doc
        assert receiver.state()["loads"] == [] and target.seen == []
        status, _ = post(receiver.url, body(f"{target.url}/health", **{"header.x-canary": "1"}))
        assert status == 200   # an ordinary header still goes
    finally:
        target.close()


def test_a_negative_or_missing_length_is_refused_without_reading(receiver):
    host, port = receiver.server.server_address[:2]
    for head in (b"Content-Length: -1\r\n", b""):
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n")
            s.sendall(b"x" * 65536)   # a body that would go on: never read to the end
            answer = s.recv(4096).decode()
        assert answer.startswith("HTTP/1.0 4") or answer.startswith("HTTP/1.1 4"), answer


def test_an_idle_connection_is_closed(monkeypatch):
    monkeypatch.setattr(loadtest, "CONN_TIMEOUT", 0.5)
    r = loadtest.Receiver().start()
    try:
        host, port = r.server.server_address[:2]
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"POST / HTTP/1.1\r\n")   # half a request, then silence
            t0 = time.monotonic()
            assert s.recv(4096) == b""          # the receiver hung up
            assert time.monotonic() - t0 < 4
    finally:
        r.stop()


def test_finished_loads_are_forgotten_and_the_state_stays_small(receiver, monkeypatch):
    monkeypatch.setattr(loadtest, "KEEP_DONE", 0.0)
    target = JSONServer()
    target.answer("/x", {"ok": True})
    try:
        for i in range(40):   # many short loads, each with its own long URL
            status, _ = post(receiver.url, body(f"{target.url}/x?pad={i}{'a' * 1500}", duration="0.05s", rps="20"))
            assert status in (200, 400)   # 400: max_loads running at that moment
        deadline = time.monotonic() + 10
        while any(not load.stop.is_set() for load in list(receiver.loads.values())) and time.monotonic() < deadline:
            time.sleep(0.05)
        state = receiver.state()
        assert len(state["loads"]) <= 4 * receiver.limits.max_loads, len(state["loads"])
        status, doc = post(receiver.url, body(f"{target.url}/x?{'b' * 3000}"))
        assert status == 400 and "characters" in doc["error"]
    finally:
        target.close()
