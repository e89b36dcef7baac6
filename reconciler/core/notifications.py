"""What a notification is about, who receives it, and what a commit status says.

Pure. The one table from a decision's action (``Event.action``, set by
``core.decide`` and the controller's drift record) to the event kind people
subscribe to; the receivers in force (the controller policy's when it
defines any, else ``sluice.yaml``'s, plus the old ``notifications.webhook``
shorthand) and the routing of a release's folder to them; the checks of the
``notifications`` block a schema cannot express; which commit asked for a
rollout (``trigger_of``, recorded by the controller as the ``Sluice-Trigger``
trailer of its start commit) and which commits a status goes to
(``rollout_triggers``); a commit status's state and description. Formatting per destination and delivery off the pass
thread live in ``reconciler.adapters.notify``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from reconciler.core.analysis import MAX_PROVIDER_TIMEOUT
from reconciler.core import durations
from reconciler.core.messages import parse_commit
from reconciler.core.model import Event

EVENTS = ("started", "stepAdvanced", "checkFailed", "waitingApproval", "promoted", "rolledBack",
          "driftRepaired", "error")

# Event.action -> the kind a receiver subscribes to. Actions not listed (hold, pause, resume, ready,
# adopt, deploy, finalize, render) notify nobody: they are in the commit log and `sluice history`.
KINDS: Mapping[str, str] = {
    "start": "started", "retarget": "started",
    "advance": "stepAdvanced", "approve": "stepAdvanced",
    "check-failed": "checkFailed",
    "wait-approval": "waitingApproval",
    "promote": "promoted",
    "rollback": "rolledBack", "abort": "rolledBack",
    "drift": "driftRepaired",
    "error": "error",
}
RECEIVER_TYPES = ("slack", "teams", "discord", "webhook")
SECRET_URL_TYPES = ("slack", "teams", "discord")   # whoever holds the URL can post to the channel
DEFAULT_ROUTE = "*"      # routes: the receivers of every folder not listed
WEBHOOK = "webhook"      # the receiver name of the ``notifications.webhook`` shorthand
DEFAULT_TIMEOUT = "5s"
MAX_TIMEOUT = MAX_PROVIDER_TIMEOUT   # seconds: a receiver's timeout bounds each whole request, at most this
MAX_ROUTE_PROBLEMS = 20   # unknown receivers named in routes, reported one by one; the rest are counted
SETTINGS = "sluice.yaml"  # the "release" of the event that says every release is held
MAX_HELD_PROBLEMS = 5     # problems of sluice.yaml quoted in that event; the rest are counted

# kind -> commit status state, per forge. GitLab refuses pending -> success (a status must have run),
# so a rollout under way is "running" there. Kinds not listed post no status.
COMMIT_STATES: Mapping[str, Mapping[str, str]] = {
    "github": {"started": "pending", "stepAdvanced": "pending", "checkFailed": "pending",
               "waitingApproval": "pending", "promoted": "success", "rolledBack": "failure"},
    "gitlab": {"started": "running", "stepAdvanced": "running", "checkFailed": "running",
               "waitingApproval": "running", "promoted": "success", "rolledBack": "failed"},
}
# the state of a trigger whose rollout a new target replaced mid-way: final, so its pull request is
# not left pending; GitHub has no "cancelled" status state, GitLab has
SUPERSEDED = {"github": "error", "gitlab": "canceled"}
STATUS_DESCRIPTION_MAX = 140   # GitHub's documented limit; GitLab's is larger
START_ACTIONS = ("start", "retarget")
END_ACTIONS = ("promote", "rollback", "abort")


def kind_of(event: Event) -> str | None:
    """The notification kind of ``event``; None when it notifies nobody."""
    return KINDS.get(event.action)


def clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut with an ellipsis when longer."""
    text = str(text)
    return text if len(text) <= limit else text[:max(0, limit - 1)].rstrip() + "…"


def error_event(release: str, message: str, phase: str | None = None, weight: int | None = None) -> Event:
    """The event of a release whose step of a pass failed (``PassReport.release_errors``)."""
    return Event(release, "error", f"error: {' '.join(message.split())}", weight=weight, phase=phase,
                 reason=message)


def held_event(problems: Iterable[str]) -> Event:
    """The ``error`` event of an invalid ``sluice.yaml``, which holds every release (``problems``:
    ``sluice.yaml:line:col: message``, the first few quoted)."""
    lines = list(problems)
    shown = "; ".join(lines[:MAX_HELD_PROBLEMS])
    more = f" (and {len(lines) - MAX_HELD_PROBLEMS} more)" if len(lines) > MAX_HELD_PROBLEMS else ""
    return Event(SETTINGS, "error", f"{SETTINGS} is invalid: every release is held", reason=shown + more)


def folder_of(path: str | None, release: str) -> str:
    """The folder of a release file ``releases/<folder>/<name>.yaml`` (its namespace when unknown)."""
    parts = (path or "").split("/")
    return parts[1] if len(parts) >= 3 else release.partition("/")[0]


# --- receivers and routes ------------------------------------------------------
def _block(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    block = (doc or {}).get("notifications")
    return block if isinstance(block, Mapping) else {}


def receivers(settings: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> dict[str, Mapping[str, Any]]:
    """The receivers in force by name: the policy's when it defines any (the repo's, and its
    webhook shorthand, are then ignored), else ``sluice.yaml``'s plus the shorthand as ``webhook``."""
    owned = _block(policy).get("receivers")
    if owned:
        return dict(owned)
    block = _block(settings)
    out = dict(block.get("receivers") or {})
    if block.get("webhook"):
        out[WEBHOOK] = {"type": "webhook", **block["webhook"]}
    return out


def recipients(folder: str, kind: str, settings: Mapping[str, Any],
               policy: Mapping[str, Any] | None = None) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, receiver) pairs that get a ``kind`` event of a release in ``folder``: the folder's
    route, else the default route (``*``), else (no ``routes`` at all) every receiver; the
    webhook shorthand gets every folder's. Each receiver's ``events`` filter applies."""
    found = receivers(settings, policy)
    routes = _block(settings).get("routes")
    if routes is None:
        names = list(found)
    else:
        names = list(routes.get(folder, routes.get(DEFAULT_ROUTE, [])))
        if WEBHOOK in found and WEBHOOK not in names and not _block(policy).get("receivers"):
            names.append(WEBHOOK)
    out = []
    for name in dict.fromkeys(names):
        cfg = found.get(name)
        if cfg is not None and (not cfg.get("events") or kind in cfg["events"]):
            out.append((name, cfg))
    return out


def configured(settings: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> bool:
    return bool(receivers(settings, policy))


def settings_problems(doc: Mapping[str, Any], policy: Mapping[str, Any] | None) -> list[tuple[tuple[Any, ...], str, bool]]:
    """What the schema cannot say about ``sluice.yaml``'s ``notifications``: (path, message, at-key)."""
    block = _block(doc)
    out: list[tuple[tuple[Any, ...], str, bool]] = []
    owned = _block(policy).get("receivers")
    mine = block.get("receivers") or {}
    if WEBHOOK in mine and block.get("webhook"):
        out.append((("notifications", "receivers", WEBHOOK), "receivers.webhook: the name is taken by the "
                    "notifications.webhook shorthand; rename this receiver or drop the shorthand", True))
    if policy is not None:
        for name, cfg in mine.items():
            if isinstance(cfg, Mapping) and "urlFile" in cfg:
                out.append((("notifications", "receivers", name, "urlFile"), f"receivers.{name}.urlFile: under "
                            "a controller policy the controller's files are the policy's to name (a repo edit "
                            "must not choose which of its files is read and sent where): define the receiver "
                            "in the policy file's notifications.receivers", True))
    for name, cfg in [*mine.items(), (WEBHOOK, block.get("webhook"))]:
        if isinstance(cfg, Mapping) and "timeout" in cfg:
            why = timeout_problem(cfg["timeout"])
            at = ("notifications", "webhook", "timeout") if cfg is block.get("webhook") else (
                "notifications", "receivers", name, "timeout")
            if why:
                out.append((at, f"{'.'.join(at[1:])}: {why}", False))
    known = receivers(doc, policy)
    where = "the controller policy's notifications.receivers" if owned else "notifications.receivers"
    unknown = [(folder, i, name) for folder, names in (block.get("routes") or {}).items()
               for i, name in enumerate(names or []) if name not in known]
    defined = ", ".join(sorted(known)) or "none"
    for folder, i, name in unknown[:MAX_ROUTE_PROBLEMS]:
        out.append((("notifications", "routes", folder, i), f"routes.{folder}: receiver {name!r} is not "
                    f"defined in {where} (defined: {defined})", False))
    if len(unknown) > MAX_ROUTE_PROBLEMS:
        folder, i, _ = unknown[MAX_ROUTE_PROBLEMS]
        out.append((("notifications", "routes", folder, i), f"routes: and {len(unknown) - MAX_ROUTE_PROBLEMS} more "
                    f"receiver names not defined in {where}", False))
    return out


def timeout_problem(value: Any) -> str | None:
    """Why a receiver's ``timeout`` is refused: more than 0 and at most ``MAX_TIMEOUT`` (each request
    of a delivery, all of it)."""
    return durations.timeout_problem(value, most=MAX_TIMEOUT, subject="receiver")


def schema_message(path: tuple[Any, ...], message: str) -> str:
    """A schema message about a receiver without the value it quotes: a receiver's ``url`` is a
    secret (whoever holds a Slack, Teams or Discord URL can post to the channel), and jsonschema
    quotes the whole failing value (a URL without its scheme, a receiver with url and urlFile)."""
    if path[:2] not in (("notifications", "receivers"), ("notifications", "webhook")) or len(path) < 2:
        return message
    where = ".".join(str(p) for p in path)
    if len(path) == 2 and path[1] == "webhook" or len(path) == 3:   # the whole receiver
        if "is valid under each of" in message:
            return f"{where}: set url or urlFile, not both"
        if "is not valid under any of the given schemas" in message:
            return f"{where}: set url or urlFile (one of them)"
    if path[-1] == "url":
        return f"{where}: must be an http:// or https:// URL (the value is not shown: it may be a secret)"
    if "'url'" in message or "://" in message:
        return f"{where}: is not valid here (the value is not shown: it may hold a secret URL)"
    return message


# --- commit statuses -------------------------------------------------------------
def commit_state(forge: str, kind: str) -> str | None:
    """The commit status state of a ``kind`` event on ``forge`` (github, gitlab); None: no status."""
    return COMMIT_STATES.get(forge, {}).get(kind)


def status_description(event: Event) -> str:
    """What the commit status says: the commit subject of the step (``canary v2 10% -> 20% (step 2/4)``)."""
    return clip(" ".join(event.summary.split()), STATUS_DESCRIPTION_MAX)


def _mine(own: bool, message: str, release: str | None = None):
    """The parsed commit when Sluice made it (its identity authored it and its trailers say so),
    of ``release`` when given; None for a person's commit, whatever its message claims."""
    parsed = parse_commit(message) if own else None
    if parsed is None or (release is not None and parsed.release != release):
        return None
    return parsed


def trigger_of(log: Iterable[tuple[str, tuple[str, ...], bool, str]]) -> str | None:
    """The person's commit that asked for a rollout: the newest in ``log`` (the first-parent history
    of the release file and its config folder at the synced tip, newest first, as (sha, parents,
    authored by Sluice's identity, message)) that is not Sluice's own. None when the log has none."""
    for sha, _, own, message in log:
        if _mine(own, message) is None:
            return sha
    return None


def rollout_triggers(log: Iterable[tuple[str, tuple[str, ...], bool, str]], release: str) -> list[str]:
    """The trigger of each ``start``/``retarget`` of ``release``'s current rollout, newest first:
    [0] is the commit to mark now, the rest were superseded by a new target mid-rollout.

    ``log`` is the release file's history (every parent: a person's ``git pull`` merge must
    not hide Sluice's commits), newest first, as (sha, parents, authored by Sluice's identity,
    message). Only Sluice's own commits count as Sluice's (a person's commit that copies the
    trailers does not). A start records its trigger as ``Sluice-Trigger``; an older one without
    it is read as before: the newest commit by someone else below it. Empty when the log
    reaches the end of an earlier rollout first (a ``rollback --to`` starts nothing to mark)."""
    out: list[str] = []
    seen_own = waiting = last = False
    for sha, _, own, message in log:
        parsed = _mine(own, message, release)
        if parsed is None:
            if waiting:   # the start had no trailer: the person's commit below it
                out.append(sha)
                waiting = False
                if last:
                    break
            continue
        if waiting:
            continue      # a start without its trailer: below Sluice's own commits, as it always was read
        if parsed.action in END_ACTIONS and seen_own:
            break         # an earlier rollout ended here
        seen_own = True
        if parsed.action in START_ACTIONS:
            last = parsed.action == "start"   # a retarget replaced a rollout that has its own start below
            trigger = parsed.get("Sluice-Trigger")
            if trigger:
                out.append(trigger)
                if last:
                    break
            else:
                waiting = True
    return out
