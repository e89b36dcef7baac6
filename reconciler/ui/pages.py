"""The dashboard's pages as HTML strings: pure functions of the read model.

Every string that comes from the repo (release names, messages, commit
subjects, authors, metric names and queries) is untrusted and goes through
``esc``. No inline script or style (the Content-Security-Policy forbids
them): charts and weight bars are SVG with presentation attributes, the
script and the stylesheet are files under ``static/``. Links are relative
(``root`` leads from a page back to the dashboard's root), so the pages work
under any path prefix and through ``kubectl port-forward``.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Iterable, Mapping
from urllib.parse import quote

from reconciler.core.messages import _BOUNDS as BOUNDS, _num as num   # the bounds and numbers commits show
from reconciler.core.model import DOWN_PHASES, LIVE_PHASES, PHASES
from reconciler.readmodel import age, weight_points
from reconciler.ui.actions import Action

CHART_W, CHART_H, PAD = 760, 240, 36
MARKED = {"promote": "promotion", "rollback": "rollback", "abort": "rollback", "check-failed": "failed check"}


def esc(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def release_href(root: str, namespace: str, name: str) -> str:
    return f"{root}r/{quote(namespace, safe='')}/{quote(name, safe='')}"


def page(title: str, root: str, body: str, *, token: str, tip: str | None, notice: str | None = None,
         form: str = "") -> str:
    """A whole page. The script swaps the parts with an id (``tip``, ``notice``, ``filters``,
    ``live``) from a fresh copy of the page when the data changed."""
    tip_html = (f'<span class="tip" id="tip" title="{esc(tip)}">tip {esc(tip[:12])}</span>' if tip
                else '<span class="tip" id="tip" hidden></span>')
    note = f'<p class="notice" id="notice">{esc(notice)}</p>' if notice else '<p class="notice" id="notice" hidden></p>'
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)} - Sluice</title><link rel="stylesheet" href="{root}static/app.css">'
            f'<script src="{root}static/app.js" defer></script></head>'
            f'<body data-root="{esc(root)}" data-token="{esc(token)}">'
            f'<header><a class="brand" href="{root}">Sluice</a> {tip_html}'
            f'<span class="live" id="live-state" title="updates as commits land">live</span>'
            f'<span class="ro">read-only</span></header>{note}{form}{body}</body></html>\n')


# --- overview ----------------------------------------------------------------

def weight_bar(weight) -> str:
    if weight is None:
        return "-"
    w = max(0, min(100, int(weight)))
    return (f'<svg class="bar" width="100" height="10" viewBox="0 0 100 10" role="img" aria-label="{w}%">'
            f'<rect width="100" height="10" fill="#e4e7eb"/><rect width="{w}" height="10" fill="#2f6fdd"/></svg>'
            f' <span class="w">{w}%</span>')


def phase_badge(phase: str, held: str | None = None) -> str:
    cls = "live" if phase in LIVE_PHASES else "down" if phase in DOWN_PHASES or phase == "Invalid" else "ok"
    extra = f' <span class="held">held: {esc(held)}</span>' if held else ""
    return f'<span class="phase {cls}">{esc(phase)}</span>{extra}'


def step_text(r: Mapping) -> str:
    return f"{r['step']}/{r['steps']}" if r.get("steps") and r["phase"] in LIVE_PHASES else "-"


def waiting_text(r: Mapping) -> str:
    if r.get("waitingFor"):
        return f"approval: {r['waitingFor']}"
    if r.get("heldBy"):
        return f"held by {r['heldBy']}"
    return ""


# what a row or page built from an odd hand-written status can raise: that release shows the
# error, every other release is shown as usual (invariant 7)
ROW_ERRORS = (TypeError, ValueError, KeyError, AttributeError, OverflowError)


def error_row(r: Mapping, exc: Exception, root: str) -> str:
    ns, name = str(r.get("namespace", "?")), str(r.get("name", "?"))
    return (f'<tr class="error" data-release="{esc(ns)}/{esc(name)}" data-phase="{esc(r.get("phase"))}" '
            f'data-weight=""><td class="ns">{esc(ns)}</td>'
            f'<td class="name"><a href="{release_href(root, ns, name)}">{esc(name)}</a>'
            f'</td><td colspan="10" class="msg">cannot show this release: {esc(type(exc).__name__)}: {esc(exc)}</td>'
            f'</tr>')


def overview_rows(items: Iterable[Mapping], root: str, now: datetime) -> str:
    out = []
    for r in items:
        try:
            out.append(overview_row(r, root, now))
        except ROW_ERRORS as exc:
            out.append(error_row(r, exc, root))
    return "".join(out)


def overview_row(r: Mapping, root: str, now: datetime) -> str:
    key = f"{r['namespace']}/{r['name']}"
    last = r.get("lastChange")
    problem = r["message"] if r["phase"] in DOWN_PHASES or not r["valid"] or r.get("heldBy") else ""
    return (
        f'<tr data-release="{esc(key)}" data-phase="{esc(r["phase"])}" '
        f'data-weight="{esc("" if r["weight"] is None else r["weight"])}">'
        f'<td class="ns">{esc(r["namespace"])}</td>'
        f'<td class="name"><a href="{release_href(root, r["namespace"], r["name"])}">{esc(r["name"])}</a></td>'
        f'<td>{esc(r["strategy"] or "-")}</td><td>{phase_badge(r["phase"], r.get("heldBy"))}</td>'
        f'<td class="weight">{weight_bar(r["weight"])}</td><td>{esc(step_text(r))}</td>'
        f'<td>{esc(r["stable"] or "-")}</td><td>{esc(r["new"] or "-")}</td>'
        f'<td title="{esc(r.get("since"))}">{esc(age(r.get("since"), now))}</td>'
        f'<td>{esc(waiting_text(r))}</td>'
        f'<td>{esc(last["author"]) + " " + esc(age(last["at"], now)) + " ago" if last else "-"}</td>'
        f'<td class="msg">{esc(problem or r.get("message") or "")}</td></tr>')


def matches(r: Mapping, namespace: str, phase: str, text: str) -> bool:
    return ((not namespace or r["namespace"] == namespace) and (not phase or r["phase"] == phase)
            and (not text or text.lower() in f"{r['namespace']}/{r['name']}".lower()))


def _select(name: str, label: str, options: Iterable[str], chosen: str) -> str:
    opts = [f'<option value=""{"" if chosen else " selected"}>all</option>']
    opts += [f'<option value="{esc(o)}"{" selected" if o == chosen else ""}>{esc(o)}</option>' for o in options]
    return f'<label>{esc(label)} <select name="{name}" class="auto">{"".join(opts)}</select></label>'


def overview(items: list[Mapping], *, root: str, now: datetime, namespace: str = "", phase: str = "",
             text: str = "") -> tuple[str, str]:
    """(filter form, live part) of the overview of ``items``."""
    namespaces = sorted({r["namespace"] for r in items})
    phases = [p for p in (*PHASES, "Pending") if any(r["phase"] == p for r in items) or p == phase]
    form = (f'<form class="filters" id="filters" method="get" action="">'
            f'{_select("ns", "namespace", namespaces, namespace)}{_select("phase", "phase", phases, phase)}'
            f'<label>name <input type="search" name="q" value="{esc(text)}"></label>'
            f'<button type="submit">filter</button></form>')
    shown = [r for r in items if matches(r, namespace, phase, text)]
    counts = {}
    for r in shown:
        counts[r["phase"]] = counts.get(r["phase"], 0) + 1
    summary = ", ".join(f"{n} {esc(p)}" for p, n in sorted(counts.items()))
    head = "".join(f"<th>{h}</th>" for h in ("namespace", "release", "strategy", "phase", "weight", "step",
                                                 "stable", "new", "age", "waiting", "last change", "message"))
    live = (f'<main id="live"><p class="summary"><span id="count">{len(shown)}</span> of {len(items)} releases'
            f'{": " + summary if summary else ""}</p>'
            f'<table class="releases"><thead><tr>{head}</tr></thead>'
            f'<tbody>{overview_rows(shown, root, now)}</tbody></table></main>')
    return form, live


# --- one release ---------------------------------------------------------------

def chart(records) -> str:
    """The new version's weight over time: one point per record that set a weight,
    promotions and rollbacks marked. The x axis is the sequence of steps (time on hover)."""
    points = weight_points(records)
    if not points:
        return '<p class="empty" id="chart-empty">no weight has been recorded yet</p>'
    n = len(points)
    span_x, span_y = CHART_W - 2 * PAD, CHART_H - 2 * PAD

    def xy(i, w):
        x = PAD + (span_x * i / (n - 1) if n > 1 else span_x / 2)
        return round(x, 1), round(PAD + span_y * (100 - w) / 100, 1)

    coords = [xy(i, r.weight) for i, r in enumerate(points)]
    path = f"M{coords[0][0]},{coords[0][1]}" + "".join(
        f" H{x} V{y}" for x, y in coords[1:])   # a weight holds until the next step sets another
    grid = "".join(
        f'<line x1="{PAD}" x2="{CHART_W - PAD}" y1="{xy(0, w)[1]}" y2="{xy(0, w)[1]}" stroke="#e4e7eb"/>'
        f'<text x="{PAD - 6}" y="{xy(0, w)[1] + 4}" text-anchor="end" font-size="11" fill="#555">{w}%</text>'
        for w in (0, 25, 50, 75, 100))
    marks, dots = [], []
    for (x, y), r in zip(coords, points):
        kind = MARKED.get(r.action)
        color = {"promotion": "#1a7f37", "rollback": "#cf222e", "failed check": "#bf8700"}.get(kind, "#2f6fdd")
        if kind in ("promotion", "rollback"):
            marks.append(f'<line class="mark mark-{kind}" x1="{x}" x2="{x}" y1="{PAD}" y2="{CHART_H - PAD}" '
                         f'stroke="{color}" stroke-dasharray="4 3"/>'
                         f'<text x="{x}" y="{PAD - 8}" text-anchor="middle" font-size="11" fill="{color}">{kind}</text>')
        r_ = 6 if kind else 4
        dots.append(f'<circle class="point" cx="{x}" cy="{y}" r="{r_}" fill="{color}" data-action="{esc(r.action)}" '
                    f'data-weight="{r.weight}" data-commit="{esc(r.commit)}"><title>{esc(r.at)} {esc(r.action)} '
                    f'{r.weight}% ({esc(r.commit[:8])})</title></circle>')
    first, last = points[0].at[:16].replace("T", " "), points[-1].at[:16].replace("T", " ")
    axis = (f'<text x="{PAD}" y="{CHART_H - 10}" font-size="11" fill="#555">{esc(first)}</text>'
            f'<text x="{CHART_W - PAD}" y="{CHART_H - 10}" text-anchor="end" font-size="11" fill="#555">{esc(last)}</text>')
    return (f'<svg id="chart" class="chart" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" '
            f'role="img" aria-label="weight of the new version over {n} steps">{grid}'
            f'<path d="{path}" fill="none" stroke="#2f6fdd" stroke-width="2"/>{"".join(marks)}{"".join(dots)}{axis}</svg>')


def evidence_table(evidence) -> str:
    if not evidence:
        return ""
    rows = []
    for e in evidence:
        bound = ", ".join(f"{b} {num(e[b])}" for b in BOUNDS if e.get(b) is not None)
        if e.get("stable") is not None:
            bound += f"{', ' if bound else ''}stable {num(e['stable'])}"
        verdict = "pass" if e.get("ok") else e.get("outcome") or "fail"
        verdict += " (dry run)" if e.get("dryRun") else ""
        query = f'<div class="query">{esc(e["query"])}</div>' if e.get("query") else ""
        rows.append(f'<tr class="{"pass" if e.get("ok") else "fail"}"><td>{esc(e.get("name"))}{query}</td>'
                    f'<td>{esc(num(e["value"]) if e.get("value") is not None else "no data")}</td>'
                    f'<td>{esc(bound or "-")}</td><td>{esc(e.get("window") or "")}</td><td>{esc(verdict)}</td></tr>')
    return ('<table class="evidence"><thead><tr><th>metric</th><th>value</th><th>bound</th><th>window</th>'
            f'<th>result</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def history_table(records, commit_url: str | None) -> str:
    if not records:
        return '<p class="empty">no commits touch this release yet</p>'
    out = []
    for r in reversed(records):    # newest first, as git log reads
        sha = esc(r.commit[:8])
        link = f'<a href="{esc(commit_url.format(sha=r.commit))}" rel="noreferrer">{sha}</a>' if commit_url else sha
        out.append(f'<tr class="record" data-action="{esc(r.action)}" data-commit="{esc(r.commit)}">'
                   f'<td title="{esc(r.at)}">{esc(r.at[:19].replace("T", " "))}</td><td class="sha">{link}</td>'
                   f'<td title="{esc(r.email)}">{esc(r.author)}</td><td>{esc(r.action)}</td>'
                   f'<td>{"" if r.weight is None else esc(r.weight) + "%"}</td>'
                   f'<td>{esc(r.subject)}{evidence_table(r.evidence)}</td></tr>')
    return ('<table class="history"><thead><tr><th>when</th><th>commit</th><th>author</th><th>action</th>'
            f'<th>weight</th><th>what and why</th></tr></thead><tbody>{"".join(out)}</tbody></table>')


def steering(acts: list[Action], path: str, where: str) -> str:
    if not acts:
        return '<p class="empty">nothing to steer now: no rollout is running and no earlier revision to return to</p>'
    items = "".join(f'<tr data-verb="{esc(a.verb)}"><td><code>{esc(a.command)}</code></td>'
                    f'<td><code>{esc(a.change)}</code></td><td>{esc(a.why)}</td></tr>' for a in acts)
    return (f'<p class="hint">This page never writes. In {esc(where)}, run a command below, or commit the change '
            f'to <code>{esc(path)}</code> yourself.</p><table class="steer"><thead><tr><th>command</th>'
            f'<th>the commit sets</th><th>when</th></tr></thead><tbody>{items}</tbody></table>')


def paging(older: str | None, newer: bool, shown: int) -> str:
    """What part of the history a page shows, and links to the rest."""
    if not older and not newer:
        return ""
    what = f"the {shown} newest commits" if not newer else f"{shown} older commits"
    links = f' <a class="older" href="?before={esc(older)}">older</a>' if older else ""
    links += ' <a class="newer" href="?">newest</a>' if newer else ""
    return f'<p class="paging">showing {what} to touch this file; the chart covers them only.{links}</p>'


def release_or_error(row: Mapping, records, acts: list[Action], **kw) -> str:
    """``release``, or the error that release's data raises (its page says why, never drops)."""
    try:
        return release(row, records, acts, **kw)
    except ROW_ERRORS as exc:
        return (f'<main id="live" data-phase="Error"><h1>{esc(row.get("namespace"))}/{esc(row.get("name"))}</h1>'
                f'<p class="message">cannot show this release: {esc(type(exc).__name__)}: {esc(exc)}</p></main>')


def release(row: Mapping, records, acts: list[Action], *, path: str, where: str, now: datetime,
            commit_url: str | None, older: str | None = None, newer: bool = False) -> str:
    """The live part of one release's page: ``records`` are the history shown (at most a
    page); ``older`` the commit whose parents hold older ones; ``newer`` on an older page."""
    facts = [("phase", phase_badge(row["phase"], row.get("heldBy"))), ("weight", weight_bar(row["weight"])),
             ("step", esc(step_text(row))), ("strategy", esc(row["strategy"] or "-")),
             ("stable", esc(row["stable"] or "-")), ("new", esc(row["new"] or "-")),
             ("in this step for", esc(age(row.get("since"), now))), ("waiting", esc(waiting_text(row) or "-"))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    msg = f'<p class="message">{esc(row["message"])}</p>' if row.get("message") else ""
    problems = "".join(f"<li>{esc(p.get('file'))}:{esc(p.get('line'))}: {esc(p.get('message'))}</li>"
                       for p in row.get("problems") or [])
    problems = f'<ul class="problems">{problems}</ul>' if problems else ""
    return (f'<main id="live" data-phase="{esc(row["phase"])}"><h1>{esc(row["namespace"])}/{esc(row["name"])}</h1>'
            f'<dl class="facts">{dl}</dl>{msg}{problems}'
            f'<h2>weight of the new version</h2>{paging(older, newer, len(records))}{chart(records)}'
            f'<h2>steer</h2>{steering(acts, path, where)}'
            f'<h2>history</h2>{paging(older, newer, len(records))}{history_table(records, commit_url)}</main>')

