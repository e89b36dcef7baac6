"""Notifications reach a real HTTP receiver on 127.0.0.1 with the evidence;
a failing receiver never fails the rollout."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
from tests.support.drive import T0
from tests.support.gitserver import free_port, make_bare
from tests.support.specs import dump, release_doc


class Receiver:
    def __init__(self, status=200):
        got = self.got = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def run_rollout(tmp_path, url, events="[started, promoted]"):
    doc = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
    doc["spec"]["analysis"] = {"metrics": []}
    settings = f"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nnotifications:\n  webhook: {{url: '{url}', events: {events}, timeout: 1s}}\n"
    bare = make_bare(tmp_path, seed={"sluice.yaml": settings, "releases/bookinfo/reviews.yaml": dump(doc)})
    now = [T0]
    ctl = Controller(GitRepo(str(bare), tmp_path / "clone"), GitTarget(), clock=lambda: now[0])
    phases = []
    for _ in range(8):
        now[0] += timedelta(minutes=2)
        phases.append(ctl.run_pass().outcomes["bookinfo/reviews"].phase)
    return phases


def test_started_and_promoted_are_sent_with_evidence(tmp_path):
    rx = Receiver()
    phases = run_rollout(tmp_path, rx.url)
    assert phases[-1] == "Promoted"
    assert [b["event"] for b in rx.got] == ["started", "promoted"]
    assert rx.got[1]["apiVersion"] == "sluice.dev/notification/v1" and rx.got[1]["release"] == "bookinfo/reviews"
    assert rx.got[1]["version"] == "v2" and rx.got[1]["commit"]


def test_a_failing_receiver_does_not_stop_the_rollout(tmp_path):
    rx = Receiver(status=500)
    assert run_rollout(tmp_path, rx.url)[-1] == "Promoted"
    assert run_rollout(tmp_path / "x", f"http://127.0.0.1:{free_port()}/down")[-1] == "Promoted"
