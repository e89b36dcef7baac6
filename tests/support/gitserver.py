"""Real git servers on 127.0.0.1 for tests: ``git daemon`` and smart HTTP.

Both serve bare repos made with ``receive.denyNonFastForwards=true``, so any
force-push fails as it would on a protected branch. The HTTP server pipes
requests to ``git http-backend``; it can require a token (401 otherwise) or
fail every request with 500.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import random
import socket
import subprocess
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None) -> str:
    full_env = {**os.environ, "GIT_AUTHOR_NAME": "Human", "GIT_AUTHOR_EMAIL": "human@example.com",
                "GIT_COMMITTER_NAME": "Human", "GIT_COMMITTER_EMAIL": "human@example.com", **(env or {})}
    return subprocess.run(["git", *args], cwd=cwd, env=full_env, check=True,
                          capture_output=True, text=True).stdout


def make_bare(root: pathlib.Path, name: str = "config.git", seed: dict[str, bytes | str] | None = None,
              branch: str = "main") -> pathlib.Path:
    """A bare repo at root/name with one commit holding ``seed`` files."""
    bare = root / name
    run("init", "--bare", "-q", "-b", branch, str(bare))
    run("config", "receive.denyNonFastForwards", "true", cwd=bare)
    run("config", "receive.denyDeletes", "true", cwd=bare)
    run("config", "http.receivepack", "true", cwd=bare)
    if seed is not None:
        work = root / (name + ".seed")
        run("clone", "-q", str(bare), str(work))
        for path, data in seed.items():
            full = work / path
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(data.encode() if isinstance(data, str) else data)
        run("add", "-A", cwd=work)
        run("commit", "-q", "-m", "seed", cwd=work)
        run("push", "-q", "origin", f"HEAD:{branch}", cwd=work)
    return bare


@contextlib.contextmanager
def git_daemon(base: pathlib.Path):
    """``git daemon`` serving every repo under ``base``; yields ``git://127.0.0.1:PORT``."""
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr",
         f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _ThreadingWSGI(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class HttpGit:
    """A smart-HTTP git server on 127.0.0.1 through ``git http-backend``."""

    def __init__(self, root: pathlib.Path, token: str | None = None):
        self.root, self.token = root, token
        self.fail = False
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, authorization)
        self._server = make_server("127.0.0.1", 0, self.app, server_class=_ThreadingWSGI, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "HttpGit":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _authorised(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if not header or not header.startswith("Basic "):
            return False
        _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return password == self.token

    def app(self, environ, start_response):
        auth = environ.get("HTTP_AUTHORIZATION")
        self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), auth))
        if len(self.requests) > 5000:
            del self.requests[:1000]
        if self.fail:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"broken on purpose\n"]
        if not self._authorised(auth):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'),
                                                ("Content-Type", "text/plain")])
            return [b"unauthorised\n"]
        env = {k: str(v) for k, v in environ.items() if isinstance(v, str)}
        env.update({"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "REMOTE_USER": "tester",
                    "PATH": os.environ.get("PATH", "")})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            elif key:
                headers.append((key, value.strip()))
        start_response(status, headers)
        return [payload]


def clone_work(url: str, dest: pathlib.Path, branch: str = "main") -> pathlib.Path:
    """A human's working clone."""
    run("clone", "-q", "-b", branch, url, str(dest))
    return dest


def human_commit(work: pathlib.Path, files: dict[str, str | bytes], message: str, *, push: bool = True,
                 attempts: int = 50) -> str:
    """Edit, commit and push as a human would, rebasing on rejection (bounded)."""
    for path, data in files.items():
        full = work / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data.encode() if isinstance(data, str) else data)
    run("add", "-A", cwd=work)
    run("commit", "-q", "-m", message, cwd=work)
    if push:
        for _ in range(attempts):
            try:
                run("push", "-q", "origin", "HEAD", cwd=work)
                break
            except subprocess.CalledProcessError:
                run("pull", "-q", "--rebase", cwd=work)
        else:
            raise RuntimeError("human push kept failing")
    return run("rev-parse", "HEAD", cwd=work).strip()


def human_edit(work: pathlib.Path, edit, message: str, *, attempts: int = 300) -> str:
    """Redo ``edit(work)`` on the latest tip until the push lands, as a person
    would after a rejected push (bounded). Returns the pushed commit."""
    for _ in range(attempts):
        run("fetch", "-q", "origin", cwd=work)
        run("reset", "-q", "--hard", "origin/HEAD", cwd=work)
        edit(work)
        run("add", "-A", cwd=work)
        run("commit", "-q", "-m", message, cwd=work)
        try:
            run("push", "-q", "origin", "HEAD", cwd=work)
            return run("rev-parse", "HEAD", cwd=work).strip()
        except subprocess.CalledProcessError:
            time.sleep(random.uniform(0.02, 0.1))   # people do not retry in a busy loop
    raise RuntimeError(f"human push of {message!r} kept failing")
