"""Sending rollout hooks: one POST of the hook's JSON body, its answer as data.

``send(call)`` POSTs ``call.body`` (reconciler.core.hooks builds it) with
the metrics HttpClient's transport: one deadline for the whole request
(connect, send, headers, body), no redirects followed. It never raises: a
2xx, a non-2xx, a timeout and a refused connection all come back as a
``hooks.Answer`` (status code or None, the time taken, the first
``ANSWER_CHARS`` characters of the answer, the URL as shown). A call is
tried ``1 + retries`` times while it gets no answer, a 5xx or a 429, with
``RETRY_PAUSE`` x n seconds between tries: at most ``Call.bound`` seconds.

Secrets: a URL's user info and the values of its credential-like query
parameters (``?token=...``, httpclient.SECRET_NAME) are starred out of the
URL as shown and of every answer and error recorded.

``Gate`` runs a check's gating hooks in parallel threads beside the metric
queries; ``Sender`` queues fire-and-record hooks on a ``Notifier`` (off the
pass thread; rollback hooks in a lane of their own) and hands each answer to a callback.
"""

from __future__ import annotations

import json
import math
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from reconciler.adapters.metrics.httpclient import (
    MIN_SECRET_CHARS, SECRET_NAME, HttpClient, _Deadline, secret_forms, shown_url,
)
from reconciler.adapters.notify import Notifier
from reconciler.core.hooks import ANSWER_CHARS, RETRY_PAUSE, Answer, Call
from reconciler.core.messages import one_line

log = logging.getLogger("sluice.hooks")

KIND = "hook"
READ_BYTES = 4096              # of an answer: its first characters are all that is kept
MIN_ATTEMPT = 1.0              # seconds: a retry is tried only with at least this much of the bound left


def secrets_of(url: str) -> set[str]:
    """What of ``url`` must never be recorded: its password and credential-like query values."""
    try:
        parts = urllib.parse.urlsplit(url)
        values = [v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if SECRET_NAME.search(k)]
        values.append(parts.password or "")
    except ValueError:
        return set()
    return {form for v in values for form in secret_forms(v)}


def redact(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, "***")
        else:   # a short value only where it stands alone
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def _first(data: bytes) -> str:
    """The first characters of an answer, printable, on one line (an answer is text: a NUL or
    an escape sequence never reaches a status, a commit message or a log)."""
    text = one_line(data.decode("utf-8", "replace"))
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS - 3] + "..."


class _Transport(HttpClient):
    """HttpClient's opener (deadline, no redirects), returning the status of every answer."""

    def post(self, url: str, data: bytes) -> tuple[int, bytes]:
        """(status, first bytes) of ``POST url``; OSError (TimeoutError) when nothing answered."""
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "sluice-hook"})
        req.deadline = _Deadline(self.timeout)
        try:
            with self._open().open(req, timeout=self.timeout) as resp:
                return resp.status, resp.read(READ_BYTES)
        except urllib.error.HTTPError as exc:
            try:
                said = exc.read(READ_BYTES)
            except OSError:
                said = b""
            return exc.code, said


def _attempt(call: Call, data: bytes, secrets: set[str], timeout: float) -> tuple[int | None, str, str]:
    """One try of at most ``timeout`` seconds: (status, first characters said, why nothing answered)."""
    try:
        status, said = _Transport(KIND, timeout=timeout).post(call.url, data)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError) or "timed out" in str(reason):
            return None, "", f"no answer within the {call.timeout:g}s timeout"
        if isinstance(reason, ConnectionRefusedError):
            return None, "", "connection refused"
        return None, "", redact(one_line(f"unreachable: {reason}"), secrets)
    except Exception as exc:   # noqa: BLE001 - http.client's odd answers: the hook failed, the pass goes on
        return None, "", f"unreachable: {type(exc).__name__}"
    return status, redact(_first(said), secrets), ""


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (inf, nan) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def send(call: Call, *, clock: Callable[[], datetime] | None = None) -> Answer:
    """POST ``call``'s body, retried as the module says, all within ``call.bound`` (a gating
    hook's retries within hooks.CHECK_BUDGET: an attempt gets what is left); never raises."""
    at = (clock or (lambda: datetime.now(timezone.utc)))().strftime("%Y-%m-%dT%H:%M:%SZ")
    secrets = secrets_of(call.url)
    shown = redact(shown_url(call.url), secrets)
    # strict JSON: a non-finite metric value (histogram_quantile's +Inf for a failing canary) goes as null
    data = json.dumps(_finite(call.body), allow_nan=False, default=str).encode()
    start = time.monotonic()
    end = start + call.bound
    tries = 0
    while True:
        tries += 1
        status, said, error = _attempt(call, data, secrets, min(call.timeout, end - time.monotonic()))
        final = status is not None and status < 500 and status != 429
        if final or tries > call.retries or end - time.monotonic() < RETRY_PAUSE * tries + MIN_ATTEMPT:
            break
        time.sleep(RETRY_PAUSE * tries)   # a paced retry on the hook's own thread, within Call.bound
    answer = Answer(call.name, call.type, shown, status, time.monotonic() - start, said, error, tries, at)
    log.info("hook=%s type=%s url=%s status=%s took=%.3fs attempts=%d %s", call.name, call.type, shown,
             status if status is not None else "-", answer.seconds, tries, error)
    return answer


class Gate:
    """A check's gating hooks, sent in parallel while the caller runs the metric queries."""

    def __init__(self, calls: list[Call]):
        self.calls = calls
        # all at once (at most hooks.MAX_HOOKS, the schema's maximum): a check takes its slowest hook
        self._pool = ThreadPoolExecutor(max_workers=len(calls) or 1, thread_name_prefix="sluice-hook")
        self._start = time.monotonic()
        self._futures = [self._pool.submit(send, c) for c in calls]

    def answers(self) -> list[Answer]:
        """Every call's answer, in the order given; a call past its bound counts as unanswered."""
        out = []
        try:
            for call, future in zip(self.calls, self._futures):
                try:
                    out.append(future.result(timeout=max(self._start + call.bound + 1.0 - time.monotonic(), 0.0)))
                except TimeoutError:
                    out.append(Answer(call.name, call.type, shown_url(call.url), None, call.bound,
                                      error=f"no answer within {call.bound:g}s"))
                except Exception as exc:   # noqa: BLE001 - a bug in one call is that hook's failure, never a pass's
                    log.error("hook=%s failed before it was sent: %s", call.name, type(exc).__name__, exc_info=True)
                    out.append(Answer(call.name, call.type, shown_url(call.url), None, 0.0,
                                      error=f"not sent: {type(exc).__name__}"))
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
        return out


class Sender:
    """Fire-and-record hooks: queued on a Notifier lane per release (its rollback hooks on
    a second lane), never on the pass thread; ``record(release, answer)`` gets each answer
    once it is in."""

    def __init__(self, record: Callable[[str, Answer], None], *, notifier: Notifier | None = None,
                 can_write: Callable[[], bool] | None = None):
        self.record = record
        # one attempt per job: the call retries itself (Call.retries), so the notifier never does
        self.notifier = notifier or Notifier(attempts=1, can_write=can_write)

    def fire(self, release: str, call: Call) -> bool:
        def attempt() -> None:
            self.record(release, send(call))
        return self.notifier.submit(self.lane(release, call), f"{call.type} hook {call.name} of {release}", attempt)

    @staticmethod
    def lane(release: str, call: Call) -> str:
        """The lane ``call`` waits in: a release's rollback hooks have one of their own, so a
        pager is never queued behind the release's event and post-promotion hooks."""
        return f"hooks {release} rollback" if call.type == "rollback" else f"hooks {release}"

    def flush(self, timeout: float) -> bool:
        return self.notifier.flush(timeout)

    def close(self, timeout: float = 10.0) -> int:
        return self.notifier.close(timeout)
