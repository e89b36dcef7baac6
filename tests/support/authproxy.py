"""A reverse proxy on 127.0.0.1 in front of a real metrics store that refuses
(401) any request without the configured credentials, like a Thanos, Mimir
or vendor gateway. It forwards what it lets through to the store and records
the headers of every request it saw (names in lower case). ``drop_params``:
query arguments it leaves out when forwarding, as a gateway that passes only
the arguments it knows does."""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping


class AuthProxy:
    """``required``: header name -> exact value every request must carry."""

    def __init__(self, upstream: str, required: Mapping[str, str], drop_params: tuple[str, ...] = ()):
        self.upstream, self.required = upstream.rstrip("/"), dict(required)
        self.seen: list[dict[str, str]] = []
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                proxy.seen.append({k.lower(): v for k, v in self.headers.items()})
                if any(self.headers.get(k) != v for k, v in proxy.required.items()):
                    proxy.refused += 1
                    return self._answer(401, b'{"status":"error","error":"unauthorized"}')
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path, _, query = self.path.partition("?")
                kept = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)
                        if k not in drop_params]
                path += f"?{urllib.parse.urlencode(kept)}" if kept else ""
                req = urllib.request.Request(proxy.upstream + path, data=body, method=self.command)
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        self._answer(resp.status, resp.read())
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read())

            def _answer(self, code: int, data: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "AuthProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
