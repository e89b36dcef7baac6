"""Rollout hooks against real HTTP servers on 127.0.0.1: each type answered 2xx, 5xx,
too slowly (timeout) and not at all (a refused port). Gating hooks gate like a
check (failed checks counted, a rollback at maxFailedChecks, a passing pre-rollout
starts step 1, a failing pre-promotion holds the promotion); fire-and-record hooks
are recorded in git and never delay the rollout (measured); the JSON body's shape,
retries, redaction of a token, validation, and the load-test receiver."""

from __future__ import annotations

import json
import pathlib
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.adapters.hooks import send
from reconciler.adapters.loadtest import Limits, Receiver
from reconciler.cli.main import cli
from reconciler.controller import Controller
from reconciler.core import hooks
from reconciler.core.loader import load_files
from reconciler.core.messages import parse_commit
from reconciler.core.parse import parse
from tests.support.drive import T0
from tests.support.gitserver import clone_work, free_port, human_commit, make_bare, run
from tests.support.specs import dump, release_doc
from tests.support.webserver import Server

pytestmark = pytest.mark.timeout(120)
FILE = "releases/bookinfo/reviews.yaml"
TOKEN = "s3cr3t-hook-token-42"
BODY_KEYS = {"apiVersion", "hook", "type", "release", "namespace", "name", "phase", "revisions", "step", "steps",
             "weight", "evidence", "metadata", "commit"}


class Scripted:
    """A loopback server answering each path from a script: a list of (status, delay)
    taken one per request (the last one stays), recording each request's JSON body."""

    def __init__(self):
        self.scripts: dict[str, list[tuple[int, float]]] = {}
        self.said: dict[str, bytes] = {}   # path -> the answer's body (default {"said": "hello"})
        self.seen: list[tuple[str, dict]] = []
        self.release = threading.Event()   # set at close: a delayed answer ends at once
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append((self.path, json.loads(data)))
                script = server.scripts.get(self.path, [(404, 0.0)])
                status, delay = script.pop(0) if len(script) > 1 else script[0]
                if delay:
                    server.release.wait(delay)
                body = server.said.get(self.path, b'{"said": "hello"}')
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass   # the caller gave up (its timeout)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def bodies(self, path):
        return [b for p, b in self.seen if p.split("?")[0] == path]

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rx():
    server = Scripted()
    yield server
    server.close()


def rollout_doc(hook_list, steps=(10, 20), max_failed=2):
    doc = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
    doc["spec"]["strategy"]["canary"].update(steps=list(steps), maxFailedChecks=max_failed)
    doc["spec"]["analysis"] = {"metrics": []}   # the hooks are the whole check
    doc["spec"]["hooks"] = hook_list
    return doc


class World:
    """A config repo with one release, a Controller (git target) on a fake clock that
    moves 2 minutes a pass, so every pass's check is due."""

    def __init__(self, tmp_path, doc, others=None):
        self.tmp = tmp_path
        self.bare = make_bare(tmp_path, seed={FILE: dump(doc), **{f: dump(d) for f, d in (others or {}).items()}})
        self.now = [T0]
        self.ctl = Controller(GitRepo(str(self.bare), tmp_path / "clone"), GitTarget(), clock=lambda: self.now[0])

    def tick(self):
        self.now[0] += timedelta(minutes=2)
        return self.ctl.run_pass()

    def until(self, phase, passes=12):
        for _ in range(passes):
            out = self.tick().outcomes["bookinfo/reviews"]
            if out.phase == phase:
                return out
        raise AssertionError(f"not {phase} after {passes} passes: {self.status()}")

    def status(self, rev="main"):
        return parse(run("show", f"{rev}:{FILE}", cwd=self.bare).encode()).get("status") or {}   # Sluice's parser

    def human(self, file, edit):
        """A person's commit changing ``file``'s document with ``edit(doc)``."""
        work = clone_work(str(self.bare), self.tmp / f"human-{len(list(self.tmp.glob('human-*')))}")
        doc = parse((work / file).read_bytes())
        edit(doc)
        human_commit(work, {file: dump(doc)}, "a person's edit")

    def actions(self, file=FILE):
        return [p.action for p, _ in self.commits(file)]

    def commits(self, file=FILE):
        """(parsed trailers, message) of Sluice's commits, oldest first (a person's are left out)."""
        out = []
        for sha in run("log", "--reverse", "--format=%H", "main", "--", file, cwd=self.bare).split()[1:]:
            message = run("show", "-s", "--format=%B", sha, cwd=self.bare)
            if parse_commit(message) is not None:
                out.append((parse_commit(message), message))
        return out

    def history(self):
        res = CliRunner().invoke(cli, ["history", "bookinfo/reviews", "--repo", str(self.bare), "-o", "json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.output)
        return doc["records"] if isinstance(doc, dict) else doc


def hook(name, kind, url, **kw):
    return {"name": name, "type": kind, "url": url, **kw}


# --- gating hooks -------------------------------------------------------------------
def test_a_passing_step_hook_is_a_check_its_body_and_evidence_recorded(tmp_path, rx):
    rx.scripts["/step"] = [(200, 0.0)]
    w = World(tmp_path, rollout_doc([hook("smoke", "step", rx.url + "/step", metadata={"suite": "fast"})]))
    w.until("Promoted")
    bodies = rx.bodies("/step")
    assert [b["step"] for b in bodies] == [1, 2]   # one per step's check, never before step 1
    body = bodies[0]
    assert set(body) == BODY_KEYS
    assert body["apiVersion"] == "sluice.dev/hook/v1" and body["type"] == "step" and body["hook"] == "smoke"
    assert (body["release"], body["namespace"], body["name"]) == ("bookinfo/reviews", "bookinfo", "reviews")
    assert body["revisions"]["stable"]["version"] == "v1" and body["revisions"]["new"]["version"] == "v2"
    assert (body["weight"], body["steps"], body["phase"]) == (10, 2, "Progressing")
    assert body["metadata"] == {"suite": "fast"} and len(body["commit"]) == 40
    advance = [m for p, m in w.commits() if p.action == "advance" and p.get("Sluice-Weight") == "20"][0]
    assert "Sluice-Evidence: smoke=200 provider=hook took=" in advance and advance.count(" ok") >= 1
    assert 'Sluice-Answer: smoke {"said": "hello"}' in advance
    evidence = [e for r in w.history() for e in r["evidence"]]
    assert {(e["name"], e["value"], e.get("provider"), e["ok"]) for e in evidence} == {("smoke", 200.0, "hook", True)}
    assert all(e["answer"] == '{"said": "hello"}' for e in evidence)


@pytest.mark.parametrize("answer, words", [
    ("5xx", "answered 503"), ("timeout", "no answer within the 1s timeout"), ("refused", "connection refused")])
def test_a_failing_step_hook_counts_and_rolls_back_at_max_failed_checks(tmp_path, rx, answer, words):
    rx.scripts["/step"] = [(503, 0.0)] if answer == "5xx" else [(200, 5.0)]
    url = f"http://127.0.0.1:{free_port()}/step" if answer == "refused" else rx.url + "/step"
    w = World(tmp_path, rollout_doc([hook("smoke", "step", url, timeout="1s")], max_failed=2))
    w.until("RolledBack")
    actions = [p.action for p, _ in w.commits()]
    assert actions == ["start", "advance", "check-failed", "rollback"]
    failed = [m for p, m in w.commits() if p.action == "check-failed"][0]
    assert "Sluice-Evidence: smoke=" + ("503" if answer == "5xx" else "nodata") in failed and words in failed
    assert w.status()["rolledBack"]["reason"].startswith("2/2 failed checks: smoke " + words)


def test_a_passing_pre_rollout_hook_starts_step_1_and_a_failing_one_rolls_back(tmp_path, rx):
    rx.scripts["/smoke"] = [(204, 0.0)]
    w = World(tmp_path / "a", rollout_doc([hook("smoke", "pre-rollout", rx.url + "/smoke")]))
    w.tick()                                   # start: step 0, nothing asked yet
    assert rx.bodies("/smoke") == []
    out = w.tick().outcomes["bookinfo/reviews"]
    assert (out.step, out.weight) == (1, 10)
    [body] = rx.bodies("/smoke")
    assert (body["type"], body["step"], body["weight"]) == ("pre-rollout", 0, 0)   # before any traffic moved
    assert w.status()["lastAnalysis"]["results"][0]["value"] == 204
    w.until("Promoted")
    assert len(rx.bodies("/smoke")) == 1       # before step 1 only

    rx.scripts["/bad"] = [(500, 0.0)]
    w = World(tmp_path / "b", rollout_doc([hook("smoke", "pre-rollout", rx.url + "/bad")], max_failed=2))
    w.until("RolledBack")
    assert [(p.action, p.get("Sluice-Step")) for p, _ in w.commits()] == [
        ("start", "0/2"), ("check-failed", "0/2"), ("rollback", "0/2")]
    assert w.status()["weight"] == 0 and len(rx.bodies("/bad")) == 2


def test_a_failing_pre_promotion_hook_holds_the_promotion(tmp_path, rx):
    rx.scripts["/confirm"] = [(409, 0.0)]
    w = World(tmp_path, rollout_doc([hook("confirm", "pre-promotion", rx.url + "/confirm")], max_failed=5))
    for _ in range(5):
        w.tick()
    st = w.status()
    assert (st["phase"], st["weight"], st["failedChecks"]) == ("Progressing", 20, 2)
    assert [b["step"] for b in rx.bodies("/confirm")] == [2, 2]   # at the last step's checks only
    rx.scripts["/confirm"] = [(200, 0.0)]
    w.until("Promoted", passes=2)


# --- fire-and-record hooks ------------------------------------------------------------
def test_a_dead_rollback_hook_never_delays_the_rollback_and_its_result_is_recorded(tmp_path, rx):
    rx.scripts["/rollback"] = [(200, 30.0)]   # never answers within its timeout
    rx.scripts["/step"] = [(500, 0.0)]
    doc = rollout_doc([hook("smoke", "step", rx.url + "/step"),
                       hook("page", "rollback", rx.url + "/rollback", timeout="3s", retries=1)], max_failed=1)
    w = World(tmp_path, doc)
    w.tick()
    w.tick()
    started = time.monotonic()
    report = w.tick()
    took = time.monotonic() - started
    assert report.outcomes["bookinfo/reviews"].phase == "RolledBack" and report.pushed
    assert took < 2.0, f"the rollback pass took {took:.2f}s: it waited for its hook"
    assert w.ctl.hook_sender.flush(15)           # 2 attempts of 3s, a pause: well within
    assert len(rx.bodies("/rollback")) == 2 and rx.bodies("/rollback")[0]["event"]["action"] == "rollback"
    w.tick()
    parsed, message = w.commits()[-1]
    assert parsed.action == "hook" and "rollback hook page no answer" in parsed.subject
    [kept] = w.status()["lastHooks"]
    assert (kept["name"], kept["type"], kept["ok"], kept["attempts"]) == ("page", "rollback", False, 2)
    assert kept["message"] == "no answer within the 3s timeout" and kept["took"] >= "6s"
    # its own trailer with its type and time, never evidence of the commit it rides on (finding 12)
    assert f"Sluice-Hook: page type=rollback status=none took={kept['took']} at={kept['at']} attempts=2 failed" in message
    assert "Sluice-Evidence:" not in message and "Hook results: rollback hook page no answer" in message
    record = w.history()[-1]
    assert record["evidence"] == [] and [(h["name"], h["type"], h["at"], h["ok"]) for h in record["hooks"]] == [
        ("page", "rollback", kept["at"], False)]
    assert w.tick().pushed is False             # recorded once


def test_post_promotion_and_event_hooks_record_their_answers(tmp_path, rx):
    rx.scripts["/promoted"] = [(201, 0.0)]
    rx.scripts["/events"] = [(200, 0.0)]
    w = World(tmp_path, rollout_doc([hook("deployed", "post-promotion", rx.url + "/promoted"),
                                     hook("audit", "event", rx.url + "/events")], steps=(50,)))
    w.until("Promoted")
    assert w.ctl.hook_sender.flush(10)
    w.tick()
    events = [b["event"]["action"] for b in rx.bodies("/events")]
    assert events == ["start", "advance", "promote"]            # every committed event, once
    [promoted] = rx.bodies("/promoted")
    assert promoted["type"] == "post-promotion" and promoted["phase"] == "Promoted" and promoted["weight"] == 100
    kept = {(h["name"], h["value"]) for h in w.status()["lastHooks"]}
    assert kept == {("deployed", 201), ("audit", 200)}
    records = w.history()
    assert records[-1]["action"] == "finalize"   # the release's next commit carries them
    assert not [e for e in records[-1]["evidence"] if e["name"] in ("deployed", "audit")]   # not the finalize's evidence
    assert {(h["name"], h["value"], h["type"]) for h in records[-1]["hooks"]} == {
        ("deployed", 201.0, "post-promotion"), ("audit", 200.0, "event")}
    assert all(h["at"] and h["took"] and h["answer"] == '{"said": "hello"}' for h in records[-1]["hooks"])
    assert w.ctl.hook_sender.flush(10)   # the finalize event's own audit hook
    w.tick()
    assert w.history()[-1]["action"] == "hook"   # nothing else happens: a commit of its own
    for _ in range(2):
        assert w.tick().pushed is False
    assert w.ctl.hook_sender.flush(10)
    events = [b["event"]["action"] for b in rx.bodies("/events")]
    assert events == ["start", "advance", "promote", "finalize"]   # recording a result fires nothing again


# --- the adapter: retries, redaction ---------------------------------------------------
def test_retries_on_5xx_and_no_answer_but_not_on_4xx(rx):
    rx.scripts["/flaky"] = [(503, 0.0), (502, 0.0), (200, 0.0)]
    rx.scripts["/gone"] = [(404, 0.0)]
    call = hooks.Call("h", "step", rx.url + "/flaky", timeout=2.0, retries=2, body={"x": 1})
    answer = send(call)
    assert (answer.status, answer.attempts, answer.ok) == (200, 3, True)
    assert answer.seconds >= hooks.RETRY_PAUSE * 3   # paced 0.5s then 1s
    rx.scripts["/flaky"] = [(503, 0.0)]
    assert (send(call).status, send(call).attempts) == (503, 3)
    gone = send(hooks.Call("h", "step", rx.url + "/gone", timeout=2.0, retries=3))
    assert (gone.status, gone.attempts) == (404, 1)
    dead = send(hooks.Call("h", "step", f"http://127.0.0.1:{free_port()}/", timeout=1.0, retries=1))
    assert (dead.status, dead.attempts, dead.error) == (None, 2, "connection refused")


def test_a_token_in_the_url_is_never_recorded(tmp_path):
    server = Server()
    try:
        server.answer("/hook", {"error": f"token {TOKEN} is not allowed here"}, status=403)
        url = f"{server.url}/hook?token={TOKEN}&team=shop"
        w = World(tmp_path, rollout_doc([hook("smoke", "step", url)], max_failed=1))
        w.until("RolledBack")
        assert server.seen[0]["path"].endswith(f"token={TOKEN}&team=shop")   # sent as written
        messages = run("log", "--format=%B", "main", cwd=w.bare)   # (the spec itself holds it, as a person wrote it)
        statuses = json.dumps([w.status(sha) for sha in run("rev-list", "main", cwd=w.bare).split()])
        assert TOKEN not in messages and TOKEN not in statuses
        assert "token=***&team=shop" in messages and "is not allowed here" in messages
        assert "token=***&team=shop" in statuses
    finally:
        server.close()


# --- validation ---------------------------------------------------------------------------
def test_validation_locates_bad_hooks_and_the_policy_bounds_their_hosts():
    doc = release_doc(hooks=[hook("a", "step", "file:///etc/passwd"), hook("b", "step", "http://x/", timeout="2m"),
                             hook("request-success-rate", "event", "http://x/")])
    out = load_files({FILE: dump(doc).encode()})
    got = sorted((p.line, p.message.split(":")[0]) for p in out.problems)
    assert [m for _, m in got] == ["spec.hooks[0].url is not an http(s) URL with a host", "spec.hooks[1].timeout",
                                   "hook name 'request-success-rate' is used twice (hooks and metrics share the "
                                   "names their results are recorded under)"]
    assert all(p.file == FILE and p.line > 1 for p in out.problems)
    policy = {"tenancy": {"folders": {"bookinfo": {"namespaces": ["bookinfo"],
                                                   "hosts": ["*.bookinfo.svc.cluster.local"]}}}}
    inside = release_doc(hooks=[hook("lt", "step", "http://loadtest.bookinfo.svc.cluster.local:8080/")])
    assert load_files({FILE: dump(inside).encode()}, policy=policy).problems == []
    outside = release_doc(hooks=[hook("lt", "step", "http://169.254.169.254/latest/meta-data/")])
    [problem] = load_files({FILE: dump(outside).encode()}, policy=policy).problems
    assert "under the controller policy a hook may only call a host the policy grants" in problem.message
    assert load_files({FILE: dump(outside).encode()}).problems == []   # no policy: the repo is trusted
    rolling = release_doc(strategy="rolling", hooks=[hook("lt", "step", "http://x/")])
    [problem] = load_files({FILE: dump(rolling).encode()}).problems
    assert "has no steps" in problem.message


# --- the load-test receiver ------------------------------------------------------------------
def test_the_loadtest_receiver_refuses_what_it_must_and_loads_what_it_may():
    hits = Server()
    hits.answer("/", {})
    receiver = Receiver(limits=Limits(max_rps=50, max_duration=5, concurrency=4)).start()
    try:
        def post(metadata):
            return send(hooks.Call("lt", "step", receiver.url, timeout=2.0, retries=0,
                                   body={"apiVersion": hooks.API, "metadata": metadata}))
        for bad, why in ((
                {"cmd": "rm -rf /", "url": hits.url, "rps": "1", "duration": "1s"}, "never runs commands"),
                ({"url": "file:///etc/passwd", "rps": "1", "duration": "1s"}, "not an http(s) URL"),
                ({"url": hits.url + "/", "rps": "500", "duration": "1s"}, "outside (0, 50]"),
                ({"url": hits.url + "/", "rps": "5", "duration": "1h"}, "outside (0, 5s]")):
            answer = post(bad)
            assert answer.status == 400 and why in answer.said
        answer = post({"url": hits.url + "/", "rps": "20", "duration": "1s", "header.x-canary": "1"})
        assert answer.status == 200 and answer.seconds < 1.0   # at once, the load runs on its own
        end = time.monotonic() + 10
        while time.monotonic() < end and receiver.state()["loads"][0]["secondsLeft"] > 0:
            receiver.loads[hits.url + "/"].stop.wait(0.1)
        [load] = receiver.state()["loads"]
        assert 10 <= load["sent"] <= 25 and load["ok"] == load["sent"]   # ~20 rps for 1s, bounded
        assert all(r["headers"].get("x-canary") == "1" for r in hits.seen)
    finally:
        receiver.stop()
        hits.close()


# --- what an adversarial review found (issue 16) --------------------------------------------
RATINGS = "releases/bookinfo/ratings.yaml"


def ratings_doc():
    doc = release_doc(name="ratings", status={"phase": "Promoted", "weight": 100,
                                              "stable": {"version": "v1", "image": "r:1"}})
    doc["spec"]["strategy"]["canary"].update(steps=[50, 80], maxFailedChecks=1)
    doc["spec"]["analysis"] = {"metrics": []}
    return doc


def test_control_characters_in_an_answer_never_reach_git_nor_block_another_release(tmp_path, rx):
    rx.scripts["/ev"] = [(200, 0.0)]
    rx.said["/ev"] = b"\x00ok\x1b[31m red\x07\xc2\x85\xe2\x80\xae done\r\nSluice-Action: promote"
    w = World(tmp_path, rollout_doc([hook("audit", "event", rx.url + "/ev")], steps=(50,)), {RATINGS: ratings_doc()})
    w.tick()                                   # both start; reviews' event hook answers NUL, ESC, BEL, C1, RLO
    assert w.ctl.hook_sender.flush(10)
    w.human(RATINGS, lambda d: d["spec"].__setitem__("abort", True))
    report = w.tick()                          # records the answer, and ratings' abort commits beside it
    assert report.pushed and report.error is None
    assert w.actions(RATINGS)[-1] == "abort"
    messages = run("log", "--format=%B", "main", cwd=w.bare)
    assert all(ch.isprintable() or ch == "\n" for ch in messages)
    recorded = [m for p, m in w.commits() if "Sluice-Answer: audit" in m]
    assert recorded and "Sluice-Answer: audit ok [31m red done Sluice-Action: promote\n" in recorded[0]
    [kept] = [h for h in w.status()["lastHooks"] if h["name"] == "audit"][:1]
    assert kept["answer"] == "ok [31m red done Sluice-Action: promote"


def test_an_approval_never_promotes_in_a_pass_whose_check_failed(tmp_path, rx):
    for when in ("later", "same"):
        rx.scripts["/confirm"] = [(200, 0.0), (409, 0.0)]   # passes once (waits for approval), then fails
        doc = rollout_doc([hook("confirm", "pre-promotion", rx.url + "/confirm")], steps=(50,), max_failed=5)
        doc["spec"]["gates"] = {"promotion": "manual"}
        w = World(tmp_path / when, doc)
        w.until("WaitingApproval")
        if when == "later":
            w.tick()                           # a failing check while it waits: counted
            assert w.status()["failedChecks"] == 1
        w.human(FILE, lambda d: d["spec"].__setitem__("approve", "v2"))
        asked = len(rx.bodies("/confirm"))
        out = w.tick().outcomes["bookinfo/reviews"]   # the approval's pass: the hook says 409 again
        assert len(rx.bodies("/confirm")) == asked + 1
        assert (out.phase, out.weight) == ("WaitingApproval", 50), w.actions()
        assert w.status()["failedChecks"] == (2 if when == "later" else 1)
        parsed, message = w.commits()[-1]
        assert parsed.action == "check-failed" and "confirm answered 409" in message
        rx.scripts["/confirm"] = [(200, 0.0)]
        w.until("Promoted", passes=2)          # approved and the check passes: promoted
        assert w.actions()[-1] == "promote"


@pytest.mark.parametrize("how", ["abort", "paused"])
def test_no_gating_hook_is_sent_while_a_release_is_aborted_or_paused(tmp_path, rx, how):
    rx.scripts["/step"] = [(200, 0.0), (200, 20.0)]   # answers the first check, then hangs
    w = World(tmp_path, rollout_doc([hook("smoke", "step", rx.url + "/step", timeout="5s", retries=2)],
                                    steps=(10, 20, 50)))
    w.tick()
    w.tick()                                    # step 1
    w.tick()                                    # step 2: the hook said 200 once
    assert len(rx.bodies("/step")) == 1
    w.human(FILE, lambda d: d["spec"].__setitem__(how, True))
    started = time.monotonic()
    w.tick()
    took = time.monotonic() - started
    assert w.actions()[-1] == ("abort" if how == "abort" else "pause")
    assert len(rx.bodies("/step")) == 1 and took < 3.0, f"{took:.1f}s, {len(rx.bodies('/step'))} calls"


def test_hanging_gating_hooks_delay_another_releases_abort_by_at_most_the_check_budget(tmp_path, rx):
    rx.scripts["/hang"] = [(200, 0.0), (200, 120.0)]   # answers ratings' first check, then never in time
    slow = ratings_doc()
    slow["spec"]["hooks"] = [hook(f"h{i}", "step", rx.url + "/hang", timeout="12s", retries=2)
                             for i in range(hooks.MAX_HOOKS)]   # each alone: 3 x 12s + pauses = 37.5s
    slow["spec"]["analysis"] = {"metrics": []}
    w = World(tmp_path, rollout_doc([], steps=(10, 20, 50)), {RATINGS: slow})
    w.tick()
    w.tick()                                   # both at step 1
    w.human(FILE, lambda d: d["spec"].__setitem__("abort", True))
    started = time.monotonic()
    report = w.tick()                          # ratings' check: every hook hangs; reviews is aborted
    took = time.monotonic() - started
    assert w.actions()[-1] == "abort" and report.pushed
    assert took < hooks.CHECK_BUDGET + 3.0, f"the pass took {took:.1f}s"
    assert len(rx.bodies("/hang")) >= hooks.MAX_HOOKS + 1   # all ten at once, in one round
    failed = report.outcomes["bookinfo/ratings"]
    assert failed.phase == "RolledBack", failed     # maxFailedChecks 1: the hanging hooks failed the check
    print(f"pass with {hooks.MAX_HOOKS} hanging hooks and another release's abort: {took:.1f}s")


def test_the_schema_bounds_hooks_as_the_gate_runs_them():
    schema = json.loads((pathlib.Path(__file__).parents[1] / "schemas" / "release.schema.json").read_text())
    spec = schema["properties"]["spec"]["properties"]["hooks"]
    assert spec["maxItems"] == hooks.MAX_HOOKS
    assert spec["items"]["properties"]["retries"]["maximum"] == hooks.MAX_RETRIES
    doc = release_doc(hooks=[hook("a", "step", "http://x/", timeout="31s")])
    [problem] = load_files({FILE: dump(doc).encode()}).problems
    assert "over the maximum 30s" in problem.message
    call = hooks.Call("h", "step", "http://x/", timeout=hooks.MAX_TIMEOUT, retries=hooks.MAX_RETRIES)
    assert call.bound == hooks.CHECK_BUDGET


@pytest.mark.parametrize("url,why", [
    ("http://bob:pw@127.0.0.1:9/x", "user info"),
    ("http://127.0.0.1:9/x\r\nX-Evil: 1", "control character"),
    ("http://127.0.0.1:9/a b", "whitespace"),
])
def test_a_hook_url_with_user_info_or_control_characters_is_refused_at_its_line(url, why):
    from reconciler.core.loader import load_files
    from tests.support.specs import dump, release_doc
    doc = release_doc()
    doc["spec"]["hooks"] = [{"name": "smoke", "type": "step", "url": url}]
    text = dump(doc)
    got = [str(p) for p in load_files({"releases/bookinfo/reviews.yaml": text.encode()}).problems]
    assert len(got) == 1 and why in got[0] and "reviews.yaml:" in got[0], got


def recorded_lines(w, name):
    """The commit trailer lines that record ``name``'s result, in every commit of the release."""
    return [line for _, m in w.commits() for line in m.splitlines()
            if line.startswith((f"Sluice-Evidence: {name}=", f"Sluice-Hook: {name} "))]


def test_each_fire_and_record_result_is_recorded_once_however_many_arrive_together(tmp_path, rx):
    rx.scripts["/events"] = [(200, 0.0)]
    rx.scripts["/step"] = [(500, 0.0)]
    doc = rollout_doc([hook("smoke", "step", rx.url + "/step")]
                      + [hook(f"e{i}", "event", rx.url + "/events") for i in range(6)], max_failed=1)
    w = World(tmp_path, doc)
    for _ in range(3):                         # start, advance, rollback (whose commit records nothing)
        w.tick()
        assert w.ctl.hook_sender.flush(10)
    assert w.actions() == ["start", "advance", "rollback"]
    assert w.tick().pushed                     # advance's and rollback's 12 results at once: lastHooks keeps 10
    assert len(w.status()["lastHooks"]) == hooks.KEEP_RECORDED
    for _ in range(3):
        assert w.tick().pushed is False        # nothing left to record
    assert [len(recorded_lines(w, f"e{i}")) for i in range(6)] == [3] * 6   # start, advance, rollback: once each


def test_a_rollback_hook_is_never_queued_behind_the_releases_event_hooks(tmp_path, rx):
    rx.scripts["/hang"] = [(200, 30.0)]        # every event hook: 2 attempts of 2s, a pause
    rx.scripts["/page"] = [(200, 0.0)]
    rx.scripts["/step"] = [(500, 0.0)]
    doc = rollout_doc([hook("audit", "event", rx.url + "/hang", timeout="2s", retries=1),
                       hook("smoke", "step", rx.url + "/step"), hook("page", "rollback", rx.url + "/page")],
                      max_failed=1)
    w = World(tmp_path, doc)
    for _ in range(3):                         # start, advance, rollback: three event hooks queued, 4.5s each
        w.tick()
    assert w.actions() == ["start", "advance", "rollback"]
    committed = time.monotonic()
    deadline = committed + 15.0
    while not rx.bodies("/page") and time.monotonic() < deadline:
        w.ctl.hook_sender.flush(0.05)          # waits on the sender's condition, bounded
    delay = time.monotonic() - committed
    assert rx.bodies("/page"), "the rollback hook was never sent"
    assert delay < 1.5, f"the rollback hook was sent {delay:.1f}s after the rollback commit"
    print(f"rollback hook sent {delay:.2f}s after the rollback commit")


def test_the_body_says_steps_null_without_steps_and_names_the_rolled_back_revision(tmp_path, rx):
    rx.scripts["/ev"] = [(200, 0.0)]
    doc = release_doc(strategy="rolling", status={"phase": "Promoted", "weight": 100,
                                                  "stable": {"version": "v1", "image": "r:1"}})
    doc["spec"]["analysis"] = {"metrics": []}
    doc["spec"]["hooks"] = [hook("audit", "event", rx.url + "/ev")]
    w = World(tmp_path / "rolling", doc)
    w.tick()
    assert w.ctl.hook_sender.flush(10)
    [body] = rx.bodies("/ev")
    assert body["steps"] is None and body["event"]["action"] == "start"

    rx.scripts["/page"] = [(200, 0.0)]
    w = World(tmp_path / "abort", rollout_doc([hook("page", "rollback", rx.url + "/page")]))
    w.tick()
    w.tick()
    w.human(FILE, lambda d: d["spec"].__setitem__("abort", True))
    w.tick()
    assert w.ctl.hook_sender.flush(10)
    [body] = rx.bodies("/page")
    assert body["event"]["action"] == "abort" and body["steps"] == 2
    assert body["revisions"]["new"]["version"] == "v2" and body["revisions"]["stable"]["version"] == "v1"
