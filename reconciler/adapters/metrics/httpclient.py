"""The HTTP side every metrics provider shares: auth, TLS, a deadline per
request, bounded answers, and errors that never carry a secret.

Options (the same keys in ``sluice.yaml`` for every HTTP provider): a bearer
token from ``tokenFile`` or basic auth (``username`` + ``passwordFile``),
custom ``headers`` (``X-Scope-OrgID``), ``caFile`` (a PEM bundle the server's
certificate must chain to, in place of the system's), ``timeout``. Secret
files are read at each request: a rotated secret takes effect at once, an
unreadable one is a MetricsError (an ``error`` result, which holds).

``timeout`` bounds the whole request: connecting, the TLS handshake, sending,
the status line and headers, and the body, however slowly a server drips it
(every socket read gets what is left of one deadline, never a fresh timeout).
It is at most ``MAX_TIMEOUT`` (validation refuses more; a larger value from
elsewhere is cut to it). Name resolution is the system resolver's and is not
bounded by it.

What is secret, and so never appears in a repr, an error or a recorded query:
the token, the password and the basic credentials (also in their escaped
forms: a library quoting ``b'Bearer abc\\n'`` must not give it away), the
value of every header except the known non-secret ones
(``NON_SECRET_HEADERS``: ``X-Scope-OrgID`` is a tenant name); a value
shorter than ``MIN_SECRET_CHARS`` is hidden only where it stands alone (a
shard ``1`` would otherwise be starred out of every query and number). A
URL's user info and the values of its credential-like query parameters are
hidden too (``shown_url``). A secret or header value holding a control
character (a line break inside a token file) is refused before anything is
sent, with a message that never quotes it. Redirects are not followed:
urllib would resend the Authorization header to whatever host a redirect
names.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

from reconciler.core.analysis import MAX_PROVIDER_TIMEOUT
from reconciler.core.durations import parse_duration
from reconciler.errors import MetricsError

DEFAULT_TIMEOUT = 5.0            # seconds per request, all of it; a check must not stall the pass
MAX_TIMEOUT = MAX_PROVIDER_TIMEOUT
MAX_ANSWER = 4 << 20             # bytes read of an answer; more is an error, not a truncated parse
MIN_SECRET_CHARS = 8             # a header value of an unknown header shorter than this is not redacted
# Parts of a header or URL parameter name that mark its value as a credential: the one list.
SECRET_WORDS = ("auth", "key", "token", "secret", "passw", "pass", "pwd", "signature", "sig", "credential",
                "jwt", "access", "code", "sid", "session", "hmac", "cookie", "bearer", "private", "nonce")
SECRET_NAME = re.compile("(?i)(" + "|".join(SECRET_WORDS) + ")")
NON_SECRET_HEADERS = frozenset({"x-scope-orgid", "x-grafana-org-id", "accept", "accept-language", "user-agent",
                                "cache-control", "x-request-id", "x-forwarded-proto"})
_USERINFO = re.compile(r"(https?://)[^/@\s]+@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def strip_userinfo(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


def shown_url(url: str) -> str:
    """``url`` as recorded: no user info, values of credential-like query parameters
    (``SECRET_NAME``) and any fragment hidden. An unparseable URL is shown as such."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    query = [(k, "***" if SECRET_NAME.search(k) else v)
             for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    netloc = parts.netloc.rpartition("@")[2]
    shown = urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=urllib.parse.urlencode(query, safe="*{}$"),
                                                   fragment="***" if parts.fragment else ""))
    return urllib.parse.unquote(shown)


def header_is_secret(name: str, value: str) -> bool:
    """Whether a configured header's value is redacted: every header but the known
    non-secret ones (a 7-character API key is still a key)."""
    return name.lower() not in NON_SECRET_HEADERS


def secret_forms(value: str) -> set[str]:
    """``value`` as it may be quoted back: raw, escaped the ways Python, JSON and URLs
    escape it, and each line of a value that holds several."""
    if not value:
        return set()
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], repr(value.encode("utf-8", "replace"))[2:-1],
             urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value, safe="")}
    forms.update(p for p in _CONTROL.split(value) if len(p) >= MIN_SECRET_CHARS)
    return {f for f in forms if f}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):   # noqa: D401 - urllib's hook
        return None   # urllib then raises HTTPError(3xx): an error result, never a resent credential


class _Deadline:
    """One request's end, on the monotonic clock."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; TimeoutError when none."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left


class _DeadlineReader(io.RawIOBase):
    """The socket's reading side: each read waits at most until the deadline."""

    def __init__(self, raw: io.RawIOBase, sock: Any, deadline: _Deadline):
        super().__init__()
        self._raw, self._sock, self._deadline = raw, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _DeadlineSocket:
    """A connected (TLS) socket whose sends and reads end by the request's deadline."""

    def __init__(self, sock: Any, deadline: _Deadline):
        self._sock, self._deadline = sock, deadline

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendall(self, data, *args):
        self._sock.settimeout(self._deadline.left())
        return self._sock.sendall(data, *args)

    def makefile(self, mode: str = "r", *args, **kwargs):
        if mode != "rb":
            raise ValueError(f"unsupported mode {mode!r}")   # http.client reads answers with "rb" only
        return io.BufferedReader(_DeadlineReader(self._sock.makefile("rb", buffering=0), self._sock, self._deadline))


class _DeadlineConnection:
    """Mixed into http.client's connections: connect (and the TLS handshake, which
    Python bounds as a whole) gets what is left of the deadline, then every read and
    send does."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self):
        self.timeout = self._deadline.left()
        self._create_connection = self._connect_within_deadline
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self._deadline)

    def _connect_within_deadline(self, address, timeout=None, source_address=None):
        """socket.create_connection, but every address of a name shares the one deadline
        (create_connection gives each address the whole timeout)."""
        host, port = address
        last: OSError | None = None
        for family, kind, proto, _, where in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._deadline.left())
                if source_address:
                    sock.bind(source_address)
                sock.connect(where)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError(f"no address for {host}")


class _HTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, deadline=req.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPSConnection, deadline=req.deadline), req, context=self._context)


class HttpClient:
    """Requests to one provider's server with its configured auth."""

    def __init__(self, kind: str, *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None,
                 token_file: str | None = None, username: str | None = None, password_file: str | None = None,
                 headers: Mapping[str, str] | None = None, ca_file: str | None = None, max_bytes: int = MAX_ANSWER):
        self.kind, self.timeout, self.max_bytes = kind, min(timeout, MAX_TIMEOUT), max_bytes
        self._token, self._token_file = token, token_file
        self._username, self._password_file = username, password_file
        self._headers = dict(headers or {})
        self._ca_file = ca_file
        self._opener: urllib.request.OpenerDirector | None = None
        self._secrets: set[str] = set()   # what redact() hides, in every form it may be quoted in
        self._hide(token or "")
        for name, value in self._headers.items():
            if header_is_secret(name, value):
                self._hide(value)

    @property
    def auth(self) -> str | None:
        return "bearer" if (self._token or self._token_file) else "basic" if self._username else None

    def describe(self) -> str:
        """For a repr: what is configured, never a value."""
        return (f"timeout={self.timeout}, auth={self.auth}, headers={sorted(self._headers)}, "
                f"ca={'file' if self._ca_file else 'system'}")

    def _hide(self, secret: str) -> None:
        self._secrets.update(secret_forms(secret))

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= MIN_SECRET_CHARS:
                text = text.replace(secret, "***")
            else:   # a short value only where it stands alone: a shard "1" never stars out "500" or "1m"
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
        return strip_userinfo(text)

    def _read_secret(self, path: str, what: str) -> str:
        try:
            value = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise MetricsError(f"cannot read {what} {path}: {why}") from None
        self._hide(value)
        return value

    def _auth_headers(self) -> dict[str, str]:
        out = dict(self._headers)
        for name, value in out.items():
            _sendable(value, f"header {name}")
        token = self._token or (self._read_secret(self._token_file, "tokenFile") if self._token_file else None)
        if token:
            _sendable(token, "tokenFile" if self._token_file else "the token")
            out["Authorization"] = f"Bearer {token}"
        elif self._username:
            password = self._read_secret(self._password_file, "passwordFile") if self._password_file else ""
            basic = base64.b64encode(f"{self._username}:{password}".encode()).decode()
            self._hide(basic)
            out["Authorization"] = f"Basic {basic}"
        return out

    def _open(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            context = None
            if self._ca_file:
                try:
                    context = ssl.create_default_context(cafile=self._ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise MetricsError(f"cannot read caFile {self._ca_file}: "
                                       f"{getattr(exc, 'strerror', None) or exc}") from None
            self._opener = urllib.request.build_opener(_NoRedirect(), _HTTPHandler(), _HTTPSHandler(context=context))
        return self._opener

    def fetch(self, url: str, *, method: str = "GET", body: bytes | None = None,
              content_type: str | None = None, detail: Callable[[bytes], str] | None = None) -> bytes:
        """The body of a 2xx answer to ``method url``, all of it within ``timeout``;
        anything else raises a MetricsError naming where and never a secret.
        ``detail`` picks the server's own words out of an error answer."""
        try:
            return self._fetch(url, method, body, content_type, detail)
        except MetricsError as exc:
            message = self.redact(str(exc))
        raise MetricsError(message)   # raised outside the handler: no chained original that may quote a secret

    def _fetch(self, url, method, body, content_type, detail) -> bytes:
        where = f"{self.kind} {origin(url)}"
        try:
            req = urllib.request.Request(url, data=body, method=method)
            headers = self._auth_headers()
        except MetricsError as exc:
            raise MetricsError(f"{where}: {exc}") from None
        except ValueError:
            raise MetricsError(f"{where}: invalid URL") from None
        for name, value in headers.items():
            req.add_header(name, value)
        if content_type:
            req.add_header("Content-Type", content_type)
        req.deadline = _Deadline(self.timeout)
        try:
            with self._open().open(req, timeout=self.timeout) as resp:
                data = resp.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            said = ""
            try:
                said = detail(exc.read(65536)) if detail else ""
            except (ValueError, OSError, AttributeError, TypeError, RecursionError):
                pass
            raise MetricsError(f"{where} answered {exc.code}: {said or exc.reason}") from None
        except http.client.HTTPException as exc:   # e.g. InvalidURL, whose text would echo the address
            raise MetricsError(f"{where} unreachable: {type(exc).__name__}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
                raise MetricsError(f"{where} did not answer within the {self.timeout:g}s timeout") from None
            raise MetricsError(f"{where} unreachable: {reason}") from None
        if len(data) > self.max_bytes:
            raise MetricsError(f"{where} answered more than {self.max_bytes} bytes")
        return data


def _sendable(value: str, what: str) -> None:
    """Refuse a header value http.client would refuse (quoting it in its error) or that
    would split the request: control characters, or characters beyond Latin-1."""
    if _CONTROL.search(value):
        raise MetricsError(f"{what} holds a control character (a line break inside it?): not sent")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise MetricsError(f"{what} holds a character an HTTP header cannot carry: not sent") from None


def origin(url: str) -> str:
    """``scheme://host:port/path`` of ``url``: no user info, no query string (may hold a key)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def client_from_settings(kind: str, cfg: Mapping[str, Any], *, max_bytes: int = MAX_ANSWER) -> HttpClient:
    """The HttpClient of a provider's ``sluice.yaml`` block (tokenFile, basicAuth, headers, caFile, timeout)."""
    try:
        timeout = parse_duration(cfg.get("timeout", DEFAULT_TIMEOUT)) or DEFAULT_TIMEOUT
    except ValueError:
        timeout = DEFAULT_TIMEOUT   # the schema refuses a bad duration before this runs
    if not 0 < timeout <= MAX_TIMEOUT:   # NaN, inf, or beyond the maximum: validation refuses them first
        timeout = MAX_TIMEOUT if timeout > MAX_TIMEOUT else DEFAULT_TIMEOUT
    basic = cfg.get("basicAuth") or {}
    return HttpClient(kind, timeout=timeout, token_file=cfg.get("tokenFile"), username=basic.get("username"),
                      password_file=basic.get("passwordFile"), headers=cfg.get("headers"),
                      ca_file=cfg.get("caFile"), max_bytes=max_bytes)
