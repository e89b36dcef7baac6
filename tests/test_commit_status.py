"""Commit statuses across real rollouts driven by the Controller, received by a
loopback server that asserts the documented request: GitHub's
``POST /repos/{owner}/{repo}/statuses/{sha}`` (Bearer token, Accept
application/vnd.github+json, X-GitHub-Api-Version 2022-11-28; state,
description <= 140, context, target_url) and GitLab's
``POST /api/v4/projects/{url-encoded path}/statuses/{sha}`` (PRIVATE-TOKEN;
state, name, description, target_url)."""

import json
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.adapters.commitstatus import CommitStatus, configure, defaults, git_log_of
from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.adapters.notify import Notifications, Notifier
from reconciler.controller import Controller
from reconciler.core import notifications as rules
from reconciler.core.messages import format_commit, parse_commit
from reconciler.core.model import Event
from tests.support.drive import T0
from tests.support.gitserver import clone_work, human_edit, make_bare, run
from tests.support.specs import dump, release_doc
from tests.support.webserver import Server

pytestmark = pytest.mark.timeout(120)
TOKEN = "ghp_s3cr3tT0kenValue1234"


class Setup:
    def __init__(self, tmp_path, forge, repository, doc=None, extra=None, api=None):
        doc = doc or release_doc(status={"phase": "Promoted", "weight": 100,
                                         "stable": {"version": "v1", "image": "r:1"}}, version="v1")
        doc["spec"]["target"]["image"] = "r:1"
        doc["spec"]["analysis"] = {"metrics": []}
        self.bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(doc), **(extra or {})})
        self.human = clone_work(str(self.bare), tmp_path / "human")
        self.api = api or Server()
        self.repository = repository
        self.token, self.forge = tmp_path / "token", forge
        self.token.write_text(TOKEN + "\n")
        self.now = T0
        self.start(tmp_path / "clone")
        self.tick(1)   # Sluice adopts v1 as a revision: at rest before the humans change anything

    def start(self, workdir, backoff=0.05, can_write=lambda: True):
        """A controller process: its own clone, notifier and commit-status client."""
        repo = GitRepo(str(self.bare), workdir)
        self.status = CommitStatus(self.forge, self.api.url, self.repository, str(self.token), git_log_of(repo),
                                   target_url="https://sluice.example.com/releases/{release}")
        self.notify = Notifications(Notifier(backoff=backoff), commit_status=self.status)
        self.ctl = Controller(repo, GitTarget(), clock=lambda: self.now, notify=self.notify, can_write=can_write)
        return self.ctl, self.notify

    def answer(self, sha, doc=None, status=201):
        """The API's answer to a status of ``sha`` (unknown paths answer 404)."""
        path = (f"/repos/{self.repository}/statuses/{sha}" if self.status.forge == "github" else
                f"/api/v4/projects/{self.repository.replace('/', '%2F')}/statuses/{sha}")
        self.api.answer(path, doc or {"state": "pending"}, status=status)

    def retarget(self, version="v2", message="reviews v2", answer=True):
        sha = self._retarget(version, message)
        if answer:
            self.answer(sha)
        return sha

    def _retarget(self, version, message):
        return human_edit(self.human, lambda w: (w / "releases/bookinfo/reviews.yaml").write_text(
            (w / "releases/bookinfo/reviews.yaml").read_text().replace("version: v1\n    image: r:1",
                                                                       f"version: {version}\n    image: r:2")),
            message)

    def target(self, version, message):
        """A person's commit setting the target to ``version`` (image r:<n>), whatever it was."""
        def edit(w):
            p = w / "releases/bookinfo/reviews.yaml"
            p.write_text(re.sub(r"version: v\d+\n    image: r:\d+", f"version: {version}\n    image: r:{version[1:]}",
                                p.read_text(), count=1))
        sha = human_edit(self.human, edit, message)
        self.answer(sha)
        return sha

    def statuses(self, failed=0):
        """(sha, state, description) of every status posted, in order."""
        return [(r["path"].rsplit("/", 1)[1], json.loads(r["body"])["state"], json.loads(r["body"])["description"])
                for r in self.requests(failed)]

    def tick(self, n=1):
        for _ in range(n):
            self.now += timedelta(minutes=2)
            report = self.ctl.run_pass()
        return report

    def requests(self, failed=0):
        assert self.notify.flush(10)
        assert self.notify.notifier.failed == failed
        return list(self.api.seen)

    def close(self):
        self.notify.close(1)
        self.api.close()


@pytest.fixture
def github(tmp_path):
    s = Setup(tmp_path, "github", "acme/config")
    yield s
    s.close()


def check_github(req, sha):
    assert req["method"] == "POST" and req["path"] == f"/repos/acme/config/statuses/{sha}"
    h = req["headers"]
    assert h["authorization"] == f"Bearer {TOKEN}" and h["accept"] == "application/vnd.github+json"
    assert h["x-github-api-version"] == "2022-11-28" and h["content-type"] == "application/json"
    body = json.loads(req["body"])
    assert set(body) <= {"state", "target_url", "description", "context"}
    assert body["state"] in {"pending", "success", "failure", "error"}
    assert len(body["description"]) <= 140 and body["context"] == "sluice/bookinfo/reviews"
    assert body["target_url"] == "https://sluice.example.com/releases/bookinfo/reviews"
    return body


def test_github_statuses_follow_a_rollout_to_success_on_the_commit_that_started_it(github):
    sha = github.retarget()
    github.tick(8)
    reqs = github.requests()
    bodies = [check_github(r, sha) for r in reqs]
    assert [b["state"] for b in bodies] == ["pending"] * 4 + ["success"]
    assert bodies[0]["description"].startswith("start canary v1 -> v2")
    assert bodies[2]["description"] == "canary v2 10% -> 20% (step 2/3)"
    assert bodies[-1]["description"].startswith("promote v2")


def test_a_restarted_controller_marks_the_same_commit_and_an_abort_is_a_failure(github, tmp_path):
    sha = github.retarget()
    github.tick(2)
    before = github.requests()
    github.notify.close(1)
    github.start(tmp_path / "clone2")   # a new process: nothing kept in memory
    human_edit(github.human, lambda w: (w / "releases/bookinfo/reviews.yaml").write_text(
        (w / "releases/bookinfo/reviews.yaml").read_text().replace("spec:\n", "spec:\n  abort: true\n", 1)),
        "abort reviews")
    github.tick(2)
    assert len(before) == 2 and len(github.requests()) == 3
    bodies = [check_github(r, sha) for r in github.api.seen]   # every one on the retarget commit
    assert [b["state"] for b in bodies] == ["pending", "pending", "failure"]
    assert bodies[-1]["description"].startswith("abort v2")


def test_a_merged_pull_request_marks_the_merge_and_its_head(github):
    w = github.human
    run("pull", "-q", "--ff-only", cwd=w)
    run("checkout", "-q", "-b", "pr", cwd=w)
    p = w / "releases/bookinfo/reviews.yaml"
    p.write_text(p.read_text().replace("version: v1\n    image: r:1", "version: v2\n    image: r:2"))
    run("commit", "-qam", "reviews v2", cwd=w)
    head = run("rev-parse", "HEAD", cwd=w).strip()
    run("checkout", "-q", "main", cwd=w)
    (w / "README").write_text("meanwhile on main\n")
    run("add", "README", cwd=w)
    run("commit", "-qm", "unrelated", cwd=w)
    run("merge", "-q", "--no-ff", "-m", "Merge pull request #7", "pr", cwd=w)
    merge = run("rev-parse", "HEAD", cwd=w).strip()
    run("push", "-q", "origin", "main", cwd=w)
    github.answer(merge)
    github.answer(head)
    github.tick(1)
    reqs = github.requests()
    assert [r["path"].rsplit("/", 1)[1] for r in reqs] == [merge, head]
    for r, sha in zip(reqs, (merge, head)):
        assert check_github(r, sha)["state"] == "pending"


def test_gitlab_statuses_use_the_project_path_and_private_token(tmp_path):
    s = Setup(tmp_path, "gitlab", "group/sub/config")
    try:
        sha = s.retarget()
        s.tick(8)
        reqs = s.requests()
        for r in reqs:
            assert r["method"] == "POST" and r["path"] == f"/api/v4/projects/group%2Fsub%2Fconfig/statuses/{sha}"
            assert r["headers"]["private-token"] == TOKEN and "authorization" not in r["headers"]
            body = json.loads(r["body"])
            assert set(body) == {"state", "name", "description", "target_url"} and body["name"] == "sluice/bookinfo/reviews"
        assert [json.loads(r["body"])["state"] for r in reqs] == ["running"] * 4 + ["success"]
    finally:
        s.close()


def test_gitlab_refusing_running_to_running_counts_as_delivered(tmp_path):
    s = Setup(tmp_path, "gitlab", "g/c")
    try:
        s.answer(s.retarget(answer=False), {"message": "Cannot transition status via :run from :running (Reason(s): "
                                                       "Status cannot transition via \"run\")"}, status=400)
        s.tick(2)
        assert len(s.requests()) == 2   # no retries
        assert s.notify.notifier.sent == 2 and s.notify.notifier.failed == 0
    finally:
        s.close()


def test_the_token_is_never_logged_when_the_api_refuses(github, caplog):
    github.answer(github.retarget(answer=False), {"message": f"Bad credentials {TOKEN}"}, status=401)
    github.tick(1)
    assert len(github.requests(failed=1)) == 1   # a 401 is not retried
    assert "401" in caplog.text and TOKEN not in caplog.text


def test_flags_derive_the_api_and_repository_from_the_repo_url(tmp_path):
    assert defaults("github", "https://github.com/acme/config.git") == ("https://api.github.com", "acme/config")
    assert defaults("github", "git@ghe.example.com:acme/config.git") == ("https://ghe.example.com/api/v3", "acme/config")
    assert defaults("gitlab", "ssh://git@gitlab.example.com/group/sub/config.git") == (
        "https://gitlab.example.com", "group/sub/config")
    assert configure("none", token_file=None, api=None, repository=None, repo_url="x", target_url=None, git=None) is None
    with pytest.raises(ValueError, match="--commit-status-token-file"):
        configure("github", token_file=None, api=None, repository=None, repo_url="x", target_url=None, git=None)
    with pytest.raises(ValueError, match="--commit-status-repo"):
        configure("github", token_file="t", api=None, repository=None, repo_url=str(tmp_path), target_url=None,
                  git=None)


# --- which commit: recorded at the start (review findings 1, 2, 11) ---------------------------
def last_states(statuses):
    out = {}
    for sha, state, _ in statuses:
        out[sha] = state
    return out


def test_the_start_commit_records_the_commit_that_asked_for_it(github):
    sha = github.retarget()
    github.tick(1)
    run("fetch", "-q", cwd=github.human)
    start = run("log", "-1", "--format=%B", "origin/main", cwd=github.human)
    parsed = parse_commit(start)
    assert parsed.action == "start" and parsed.get("Sluice-Trigger") == sha


def test_a_config_file_change_marks_its_own_commit_not_the_previous_rollouts(tmp_path):
    doc = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}},
                      version="v1", config={"files": ["app.properties"]})
    s = Setup(tmp_path, "github", "acme/config", doc=doc,
              extra={"releases/bookinfo/reviews/app.properties": "level=info\n"})
    try:
        s.tick(5)   # at rest on v1 with its config
        before = len(s.api.seen)
        x = s.retarget()
        s.tick(8)
        first = s.statuses(failed=s.notify.notifier.failed)[before:]
        assert last_states(first) == {x: "success"}
        y = human_edit(s.human, lambda w: (w / "releases/bookinfo/reviews/app.properties").write_text(
            "level=debug\n"), "reviews: debug logs")   # a rollout that never touches the release file
        s.answer(y)
        s.tick(8)
        second = s.statuses(failed=s.notify.notifier.failed)[before + len(first):]
        assert second and {sha for sha, _, _ in second} == {y}   # X keeps its success
        assert second[-1][1] == "success"
    finally:
        s.close()


def test_a_new_target_mid_rollout_marks_the_replaced_commit_superseded_once(github):
    x = github.target("v2", "reviews v2 (PR #1)")
    github.tick(2)
    y = github.target("v3", "reviews v3 (PR #2)")
    github.tick(10)
    got = github.statuses()
    on_x = [(state, d) for sha, state, d in got if sha == x]
    assert [state for state, _ in on_x] == ["pending", "pending", "error"]   # final once, never pending again
    assert on_x[-1][1] == f"superseded by {y[:12]}"
    assert last_states(got) == {x: "error", y: "success"}


def test_gitlab_cancels_the_replaced_commit(tmp_path):
    s = Setup(tmp_path, "gitlab", "g/c")
    try:
        x = s.target("v2", "reviews v2")
        s.tick(1)
        y = s.target("v3", "reviews v3")
        s.tick(1)
        got = s.statuses()
        assert got[-1] == (x, "canceled", f"superseded by {y[:12]}") and got[-2][:2] == (y, "running")
    finally:
        s.close()


def test_a_persons_pull_merge_mid_rollout_keeps_its_statuses_going(github, tmp_path):
    laptop = tmp_path / "laptop"
    run("clone", "-q", str(github.bare), str(laptop))   # a person's clone from before the rollout
    x = github.retarget()
    github.tick(2)
    p = laptop / "releases/bookinfo/reviews.yaml"
    p.write_text(p.read_text().replace("spec:\n", "spec:\n  paused: false\n", 1))
    run("commit", "-qam", "reviews: note", cwd=laptop)
    run("pull", "-q", "--no-rebase", "--no-edit", cwd=laptop)   # a merge: Sluice's start leaves first parents
    run("push", "-q", "origin", "HEAD:main", cwd=laptop)
    github.tick(10)
    got = github.statuses()
    assert {sha for sha, _, _ in got} == {x}
    assert got[-1][1] == "success" and len(got) == 5


def test_a_persons_commit_with_sluices_trailers_is_not_sluices(github):
    x = github.retarget()
    github.tick(8)
    n = len(github.statuses())
    y = github.target("v3", "reviews v3\n\nSluice-Release: bookinfo/reviews\nSluice-Action: start")
    github.tick(8)
    after = github.statuses()[n:]
    assert {sha for sha, _, _ in after} == {y} and after[-1][1] == "success"
    assert last_states(github.statuses())[x] == "success"


def rows(*commits):
    """A release file's log, newest first: (sha, parents, by Sluice's identity, message)."""
    return [(sha, ("p" + sha,), own, message) for sha, own, message in commits]


def sluice(action, trigger=None, release="bookinfo/reviews"):
    return format_commit(Event(release, action, f"{action} v2", trigger=trigger))


def test_triggers_are_read_from_sluices_own_starts_and_an_old_start_falls_back():
    log = rows(("s3", True, sluice("advance")), ("s2", True, sluice("retarget", "t2")), ("h2", False, "v3"),
               ("s1", True, sluice("start", "t1")), ("h1", False, "v2"), ("s0", True, sluice("promote")))
    assert rules.rollout_triggers(log, "bookinfo/reviews") == ["t2", "t1"]
    legacy = rows(("s2", True, sluice("advance")), ("s1", True, sluice("start")), ("h1", False, "v2"),
                  ("s0", True, sluice("promote")))
    assert rules.rollout_triggers(legacy, "bookinfo/reviews") == ["h1"]   # made before the trailer existed
    forged = rows(("h2", False, sluice("start", "t9")), ("s1", True, sluice("start", "t1")))
    assert rules.rollout_triggers(forged, "bookinfo/reviews") == ["t1"]
    ended = rows(("s2", True, sluice("rollback")), ("s1", True, sluice("promote")), ("s0", True, sluice("start", "t")))
    assert rules.rollout_triggers(ended, "bookinfo/reviews") == []
    assert rules.trigger_of(rows(("s1", True, sluice("render", release="-")), ("h1", False, "x"))) == "h1"
    assert rules.trigger_of(rows(("h1", False, sluice("start")),)) == "h1"   # trailers by a person: theirs


# --- delivery of statuses (review findings 3, 4) ---------------------------------------
class FirstFails:
    """A forge API answering 502 to its first status (after ``delay`` seconds), 201 after."""

    def __init__(self, delay=0.0):
        self.seen, self.hold = [], threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                first = not outer.seen
                outer.seen.append({"path": self.path, "body": json.dumps(body), "method": "POST",
                                   "headers": {k.lower(): v for k, v in self.headers.items()}})
                if first:
                    outer.hold.wait(delay)
                self.send_response(502 if first else 201)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(self, *a, **k):
        pass

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def wait_for(cond, seconds=10.0):
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        threading.Event().wait(0.01)


def test_a_replica_that_lost_its_lease_delivers_nothing_it_queued(tmp_path):
    api = FirstFails()
    s = Setup(tmp_path, "github", "acme/config", api=api)
    lead = {"a": True}
    try:
        a, a_notes = s.start(tmp_path / "a", backoff=3.0, can_write=lambda: lead["a"])
        b, b_notes = s.start(tmp_path / "b", can_write=lambda: not lead["a"])
        x = s._retarget("v2", "reviews v2")
        s.ctl = a
        s.tick(1)                       # A leads: its start's pending gets a 502, to be retried in 3 s
        wait_for(lambda: len(api.seen) == 1)
        lead["a"] = False               # A's lease is gone; B drives the rollout to promotion
        s.ctl = b
        s.tick(8)
        assert b_notes.flush(10) and a_notes.flush(15)
        states = [json.loads(r["body"])["state"] for r in api.seen if r["path"].endswith(x)]
        assert states[-1] == "success"
        assert a_notes.notifier.dropped == 1 and a_notes.notifier.sent == 0
        a_notes.close(1)
        b_notes.close(1)
    finally:
        api.close()


def test_a_rollouts_statuses_waiting_in_the_queue_collapse_to_the_newest(tmp_path):
    api = FirstFails(delay=30)          # the first status hangs until released, then 502s
    s = Setup(tmp_path, "github", "acme/config", api=api)
    try:
        x = s.retarget(answer=False)
        s.tick(1)
        wait_for(lambda: len(api.seen) == 1)
        s.tick(8)                       # steps and the promotion queue behind the hung first attempt
        api.hold.set()
        assert s.notify.flush(15)
        got = [json.loads(r["body"])["state"] for r in api.seen if r["path"].endswith(x)]
        # the hung pending, then its retry carries the newest status: success, never a stale pending after
        assert got == ["pending", "success"], got
    finally:
        s.notify.close(1)
        api.close()
