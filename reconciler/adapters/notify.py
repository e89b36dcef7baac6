"""Notifications: an optional HTTP webhook told about started, promoted,
rolledBack and waitingApproval, with the evidence in its JSON body.

``sluice.yaml``: ``notifications: {webhook: {url, events?, timeout?}}``.
A notification never blocks or fails a rollout: two short attempts, then
the failure is logged and forgotten.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Mapping

from reconciler.core.durations import parse_duration
from reconciler.core.model import Event

log = logging.getLogger("sluice.notify")
NOTIFY_API = "sluice.dev/notification/v1"


def body(kind: str, event: Event, commit: str | None = None) -> dict[str, Any]:
    ns, _, name = event.release.partition("/")
    return {"apiVersion": NOTIFY_API, "event": kind, "release": event.release, "namespace": ns, "name": name,
            "version": event.version, "stable": event.stable, "weight": event.weight, "step": event.step,
            "phase": event.phase, "summary": event.summary, "reason": event.reason or None,
            "evidence": [dict(e) for e in event.evidence], "commit": commit,
            "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def send(settings: Mapping[str, Any], kind: str, event: Event, commit: str | None = None) -> bool:
    """POST the notification if ``sluice.yaml`` asks for it; True when delivered."""
    hook = (settings.get("notifications") or {}).get("webhook")
    if not hook or (hook.get("events") and kind not in hook["events"]):
        return False
    timeout = parse_duration(hook.get("timeout", "5s"))
    data = json.dumps(body(kind, event, commit)).encode()
    for attempt in range(2):
        req = urllib.request.Request(hook["url"], data=data, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "sluice"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if resp.status < 300:
                    return True
        except (urllib.error.URLError, OSError) as exc:
            log.warning("release=%s notification %s to %s failed (attempt %d): %s", event.release, kind,
                        hook["url"].split("?")[0], attempt + 1, getattr(exc, "reason", exc))
        time.sleep(0.2)
    return False
