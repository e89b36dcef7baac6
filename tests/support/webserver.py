"""A JSON HTTP server on loopback for provider tests: answers per path, records each request."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server:
    """Answers ``routes[path] = (status, body, extra headers)``; records each request."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.routes: dict[str, tuple[int, bytes, dict]] = {}
        self.seen: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                server.seen.append({"method": self.command, "path": self.path,
                                    "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": self.rfile.read(length) if length else b""})
                status, body, extra = server.routes.get(self.path.split("?")[0], (404, b"{}", {}))
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass   # the client stopped reading (an oversized answer)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(self, path, doc, status=200, **headers):
        self.routes[path] = (status, doc if isinstance(doc, bytes) else json.dumps(doc).encode(), headers)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
