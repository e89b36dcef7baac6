"""Ports and route options: what Istio makes of each Service port, the routes
each gets, and the Istio options a release passes through to its routes.

- ``spec.service.ports`` names each port's protocol the way Istio reads it:
  ``appProtocol`` when set, else the port name's prefix (``grpc-api`` is
  gRPC). HTTP-like ports (http, http2, grpc, grpc-web, h2c, ws) share the
  release's ``http:`` routes; each TCP-like port gets a ``tcp:`` route and
  each TLS port a ``tls:`` route (matched on its port, and on its
  ``sniHosts``) with the same weights. ``spec.service.port`` stays the
  one-port shorthand: a port named ``http``, rendered exactly as before.
- ``spec.service.http`` (timeout, retries, headers, corsPolicy, rewrite) is
  copied onto every HTTP route Sluice renders; ``spec.service.trafficPolicy``
  onto the DestinationRule. Both are checked at load time against Istio's own
  CRD schemas (``schemas/istio-networking.json``: istio/api at the commit its
  ``source`` names, Apache-2.0, see ``schemas/istio-networking.md``), strictly:
  a key Istio's schema does not know is an error here, where the API server
  would silently drop it.

What Sluice owns in a route (name, match, route, mirror) is never taken from
the options, and fault injection stays off.
"""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterator, Mapping

import jsonschema

from reconciler.core import schema as release_schema
from reconciler.core.model import Release

# Istio's protocol names (appProtocol, or a port name's part before its first "-"), by the routes they get
HTTP_PROTOCOLS = ("http", "http2", "grpc", "grpc-web", "kubernetes.io/h2c", "kubernetes.io/ws")
TCP_PROTOCOLS = ("tcp", "mongo", "mysql", "redis")
TLS_PROTOCOLS = ("tls", "https", "kubernetes.io/wss")
ROUTE_KINDS = {**{p: "http" for p in HTTP_PROTOCOLS}, **{p: "tcp" for p in TCP_PROTOCOLS},
               **{p: "tls" for p in TLS_PROTOCOLS}}

# spec.service.http keys: passed through, or refused with the reason
HTTP_OPTIONS = ("timeout", "retries", "headers", "corsPolicy", "rewrite")
REFUSED_HTTP = {
    "fault": "fault injection stays off in Sluice's routes: it would fail the requests the analysis judges "
             "(inject faults in a separate VirtualService of a test namespace)",
    **{k: "Sluice owns the routes' names, matches, destinations and mirrors (set them through spec.strategy)"
       for k in ("name", "match", "route", "mirror", "mirrors", "mirrorPercentage", "mirrorPercent",
                 "mirror_percent")},
    **{k: "a route that answers itself or delegates sends no traffic to the versions: the rollout's weights "
          "would mean nothing" for k in ("redirect", "directResponse", "delegate")},
}
# Envoy's retry conditions Istio accepts in retryOn (x-envoy-retry-on and x-envoy-retry-grpc-on), or an HTTP status
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
ISTIO_SCHEMAS = "istio-networking.json"
_MIN_DURATION = "duration(self) >= duration('1ms')"   # the one CEL rule of these subtrees
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_GO_MAX_NS = 2**63 - 1   # Go's time.Duration is int64 nanoseconds: ParseDuration and CEL duration() refuse more
# what Istio's validation webhook accepts in a CORS allowMethods (supportedCORSMethods: Go's net/http methods, "*")
CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")   # an RFC 9110 token

_Raw = tuple[tuple[Any, ...], str, bool]   # (path, message, points-at-key), as the loader locates them
Weighted = Callable[[int | None], list[dict[str, Any]]]


# --- protocols and ports -------------------------------------------------------------------------------

def protocol_of(port: Mapping[str, Any]) -> str | None:
    """The protocol Istio gives ``port``: its ``appProtocol``, else its name's prefix (None: unknown)."""
    if port.get("appProtocol"):
        return str(port["appProtocol"]).lower()
    prefix = str(port.get("name", "")).split("-", 1)[0].lower()
    return prefix if prefix in ROUTE_KINDS else None


def route_kind(port: Mapping[str, Any]) -> str | None:
    """``http``, ``tcp`` or ``tls``: which routes carry ``port``'s traffic (None: Istio routes none)."""
    if port.get("protocol", "TCP") != "TCP":
        return None
    return ROUTE_KINDS.get(protocol_of(port) or "")


def _ports_of(rel: Release, kind: str) -> list[Mapping[str, Any]]:
    return [p for p in rel.ports if route_kind(p) == kind]


def http_port(rel: Release) -> int | None:
    """The destination port of the HTTP routes: the one HTTP port, or None when there are
    several (Istio then sends each request to the port it came in on, so one route serves all)."""
    ports = _ports_of(rel, "http")
    return int(ports[0]["port"]) if len(ports) == 1 else None


def service_ports(rel: Release) -> list[dict[str, Any]]:
    """The Service's ports: the shorthand as ever (``http``, port, targetPort), else each as written
    with ``targetPort`` defaulting to its port (as the API server stores it)."""
    out = []
    for port in rel.ports:
        item = {"name": port["name"], "port": int(port["port"]), "targetPort": port.get("targetPort", port["port"])}
        item.update({k: port[k] for k in ("protocol", "appProtocol") if k in port})
        out.append(item)
    return out


def destination(host: str, subset: str, port: int | None) -> dict[str, Any]:
    """An Istio Destination; without ``port`` when the route serves several ports."""
    return {"host": host, "subset": subset, **({"port": {"number": port}} if port is not None else {})}


# --- what Sluice passes through ---------------------------------------------------------------------------

def http_options(rel: Release) -> dict[str, Any]:
    """``spec.service.http``, for each HTTP route (the loader refused everything Sluice owns)."""
    return {k: copy.deepcopy(v) for k, v in (rel.service.get("http") or {}).items() if k in HTTP_OPTIONS}


def traffic_policy(rel: Release) -> dict[str, Any]:
    """The DestinationRule's top-level ``trafficPolicy``, when the release sets one. Subsets carry
    none: they inherit it field by field, so both versions run under the same policy (each subset
    is its own Envoy cluster, so connection limits count per version)."""
    policy = rel.service.get("trafficPolicy")
    return {"trafficPolicy": copy.deepcopy(dict(policy))} if policy else {}


def layer4_routes(rel: Release, weighted: Weighted) -> dict[str, list[dict[str, Any]]]:
    """``tcp:`` and ``tls:`` routes, one per TCP-like or TLS port, matched on it, carrying
    ``weighted(port)``: the same weights as the HTTP routes."""
    out: dict[str, list[dict[str, Any]]] = {}
    for port in rel.ports:
        kind, number = route_kind(port), int(port["port"])
        if kind == "tcp":
            out.setdefault("tcp", []).append({"match": [{"port": number}], "route": weighted(number)})
        elif kind == "tls":
            match = {"port": number, "sniHosts": list(port["sniHosts"])}
            out.setdefault("tls", []).append({"match": [match], "route": weighted(number)})
    return out


def has_http(rel: Release) -> bool:
    return bool(_ports_of(rel, "http"))


# --- load-time checks -------------------------------------------------------------------------------------

def problems(path: str, doc: Mapping[str, Any]) -> list[_Raw]:
    """What is wrong with a schema-valid release's ports and route options, each at its key."""
    service = (doc.get("spec") or {}).get("service") or {}
    base = ("spec", "service")
    if "port" in service and "ports" in service:
        return [(base + ("ports",), "set port (one HTTP port, named http) or ports, not both", True)]
    if "port" not in service and "ports" not in service:
        return [(base, "spec.service needs port (one HTTP port, named http) or ports", False)]
    if "ports" in service and "targetPort" in service:
        return [(base + ("targetPort",), "with ports, each port sets its own targetPort", True)]
    rel = Release(path=path, doc=doc)
    out = _port_problems(rel)
    if not rel.is_mesh:
        out += [(base + (key,), f"spec.service.{key} configures the Istio routes; a {rel.strategy_kind} release "
                                "has none (it runs outside the mesh)", True)
                for key in ("http", "trafficPolicy") if key in service]
        return out
    out += _strategy_problems(rel)
    out += [(base + ("http", key), f"spec.service.http.{key}: {why}", True)
            for key, why in REFUSED_HTTP.items() if key in (service.get("http") or {})]
    out += list(_istio_problems(service))
    out += list(_webhook_problems(rel))
    out += _policy_port_problems(rel)
    return out


def _port_problems(rel: Release) -> list[_Raw]:
    out: list[_Raw] = []
    names: set[str] = set()
    numbers: set[tuple[int, str]] = set()
    for i, port in enumerate(rel.service.get("ports") or []):
        at = ("spec", "service", "ports", i)
        key = (int(port["port"]), port.get("protocol", "TCP"))
        if port["name"] in names:
            out.append((at + ("name",), f"port name {port['name']!r} is used twice", False))
        if key in numbers:
            out.append((at + ("port",), f"port {key[0]}/{key[1]} is used twice", False))
        names.add(port["name"])
        numbers.add(key)
        out += _protocol_problems(rel, port, at)
    return out


def _protocol_problems(rel: Release, port: Mapping[str, Any], at: tuple[Any, ...]) -> list[_Raw]:
    kind = route_kind(port)
    if "sniHosts" in port and kind != "tls":
        return [(at + ("sniHosts",), "sniHosts match TLS traffic: set them on a tls port only", True)]
    if not rel.is_mesh:
        return []
    if port.get("protocol", "TCP") != "TCP":
        return [(at + ("protocol",), f"Istio routes TCP ports only: {port['protocol']} traffic would reach every "
                                     "version, whatever the rollout's weights", False)]
    prefix = str(port["name"]).split("-", 1)[0].lower()
    named = ROUTE_KINDS.get(prefix)
    if kind is None:
        return [(at + ("name",), f"cannot tell the protocol of port {port['name']!r}: name it <protocol>[-<suffix>] "
                                 "(http, http2, grpc, grpc-web, tcp, tls, https, mongo, mysql, redis) or set "
                                 "appProtocol", False)]
    if named and port.get("appProtocol") and named != kind:
        return [(at + ("appProtocol",), f"port {port['name']!r} is named for {prefix} ({named} routes) but "
                                        f"appProtocol {port['appProtocol']!r} gives it {kind} routes (Istio "
                                        "follows appProtocol): make them agree", False)]
    if kind == "tls" and not port.get("sniHosts"):
        return [(at, f"tls port {port['name']!r} needs sniHosts: Istio routes TLS by the server name the client "
                     "asks for; each must be one of the release's hosts (spec.service.hosts) or within one, "
                     "as Istio's validation requires", False)]
    return []


def needs_http(rel: Release) -> str | None:
    """What the release's strategy routes by HTTP only in Istio (header/cookie matches, mirroring)."""
    kind, strat = rel.strategy_kind, rel.strategy
    if kind in ("abTesting", "darkLaunch"):
        return f"{kind} routes by header/cookie match"
    if kind == "blueGreen" and (strat.get("preview") or {}).get("match"):
        return "blueGreen preview routes by header/cookie match"
    if kind == "blueGreen" and strat.get("mirror"):
        return "blueGreen mirror shadows traffic"
    if kind == "mirror":
        return "mirror shadows traffic"
    return None


def _strategy_problems(rel: Release) -> list[_Raw]:
    need = needs_http(rel)
    if not need or has_http(rel):
        return []
    return [(("spec", "strategy", rel.strategy_kind), f"{need}, which Istio does for HTTP only, and this release "
             "has no HTTP port (http, http2, grpc, grpc-web): use canary, or add an HTTP port", True)]


def _policy_port_problems(rel: Release) -> list[_Raw]:
    numbers = {int(p["port"]) for p in rel.ports}
    settings = (rel.service.get("trafficPolicy") or {}).get("portLevelSettings") or []
    out: list[_Raw] = []
    for i, item in enumerate(settings if isinstance(settings, list) else []):
        number = ((item or {}).get("port") or {}).get("number") if isinstance(item, Mapping) else None
        if isinstance(number, int) and number not in numbers:
            out.append((("spec", "service", "trafficPolicy", "portLevelSettings", i, "port", "number"),
                        f"port {number} is not a port of this release ({', '.join(map(str, sorted(numbers)))})",
                        False))
    return out


# --- Istio's schemas, strictly -------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def istio_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    """The ``openAPIV3Schema`` of Istio's ``kind`` CRD at ``version`` (read once from the package)."""
    data = json.loads(resources.files("reconciler").joinpath("schemas", ISTIO_SCHEMAS).read_text())
    return data["schemas"][f"networking.istio.io/{version}/{kind}"]


def _strict(node: Any) -> Any:
    """A structural schema as the loader checks it: unknown keys are errors (the API server
    would prune them without a word) and ``nullable`` allows null."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def go_duration_ns(text: Any) -> int | None:
    """Nanoseconds in a Go duration string (``1.5s``, ``300ms``, ``1h30m``), exactly, as Go's
    ``time.ParseDuration`` and Istio's CEL ``duration()`` read it; None when it is not one
    or does not fit Go's int64 nanoseconds (``3000000h``)."""
    if not isinstance(text, str):
        return None
    if text in ("0", "+0", "-0"):
        return 0
    if not _GO_DURATION.fullmatch(text):
        return None
    total = int(sum(Decimal(n) * _GO_NS[u] for n, u in _GO_PART.findall(text)))
    if total > _GO_MAX_NS:
        return None
    return -total if text.startswith("-") else total


def go_duration(text: Any) -> float | None:
    """Seconds in a Go duration string; None when it is not one (``go_duration_ns``)."""
    ns = go_duration_ns(text)
    return None if ns is None else ns / 1e9


def _cel(validator, rules, instance, schema):
    """The CEL rule of these subtrees, in Python (durations of at least 1ms), and what
    Istio's validation webhook adds for the same fields: istio/istio
    pkg/config/validation/agent ``ValidateDuration`` ("only durations to ms precision are
    supported"), called by validateHTTPRoute (timeout), validateHTTPRetry (perTryTimeout,
    backoff), validateCORSPolicy (maxAge) and the DestinationRule trafficPolicy checks."""
    for rule in rules:
        if rule.get("rule") == _MIN_DURATION and isinstance(instance, str):
            ns = go_duration_ns(instance)
            if ns is None and _GO_DURATION.fullmatch(instance) and not instance.startswith("-"):
                yield jsonschema.ValidationError(f"{instance!r} is longer than Go's int64 nanoseconds hold "
                                                 "(about 2562047h)")
            elif ns is None or ns < 10**6:
                yield jsonschema.ValidationError(f"{instance!r} is not a duration of at least 1ms "
                                                 "(e.g. 500ms, 5s, 1m30s)")
            elif ns % 10**6:
                yield jsonschema.ValidationError(f"{instance!r}: Istio supports durations to ms precision only "
                                                 "(e.g. 1ms, 1500ms)")


_Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-validations": _cel})


@lru_cache(maxsize=None)
def _validator() -> jsonschema.protocols.Validator:
    """One compiled validator of both pass-through blocks, placed where they sit in a Release,
    so every error carries its full path in the document."""
    http = istio_schema("VirtualService")["properties"]["spec"]["properties"]["http"]["items"]
    policy = istio_schema("DestinationRule")["properties"]["spec"]["properties"]["trafficPolicy"]
    service = {"type": "object", "properties": {"http": _strict(http), "trafficPolicy": _strict(policy)}}
    return _Validator({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"service": service}}}})


def _istio_problems(service: Mapping[str, Any]) -> Iterator[_Raw]:
    given = {k: v for k, v in (service.get("http") or {}).items() if k not in REFUSED_HTTP}
    block = {"http": given} if given else {}
    if service.get("trafficPolicy") is not None:
        block["trafficPolicy"] = service["trafficPolicy"]
    if not block:
        return
    found = sorted(_validator().iter_errors({"spec": {"service": block}}), key=lambda e: [str(p) for p in e.absolute_path])
    for err in found:
        path, message, at_key = release_schema._message(err)
        yield path, f"{message} (Istio's {_owner(path)} schema)", at_key
    retry_on = ((given.get("retries") or {}) if isinstance(given.get("retries"), Mapping) else {}).get("retryOn")
    if isinstance(retry_on, str):
        bad = [c for c in retry_on.split(",") if c.strip() not in RETRY_ON and not _status_code(c.strip())]
        if bad:
            yield (("spec", "service", "http", "retries", "retryOn"),
                   f"spec.service.http.retries.retryOn: unknown retry condition {bad[0].strip()!r} (use e.g. 5xx, gateway-error, "
                   "connect-failure, refused-stream, unavailable, or an HTTP status like 503)", False)
    for where in ("request", "response"):
        ops = (given.get("headers") or {}).get(where) if isinstance(given.get("headers"), Mapping) else None
        yield from _header_problems(ops, ("spec", "service", "http", "headers", where))


def _webhook_problems(rel: Release) -> Iterator[_Raw]:
    """What Istio's validation webhook refuses (istio/istio pkg/config/validation,
    validation.go) though its CRD schema lets it through: Sluice would render a
    VirtualService the API server answers with a 400 on every pass. Durations are
    checked with the schema (``_cel``)."""
    base = ("spec", "service")
    http = rel.service.get("http") if isinstance(rel.service.get("http"), Mapping) else {}
    retries = http.get("retries")
    if isinstance(retries, Mapping):
        # validateHTTPRetry: "attempts cannot be negative"; "http retry policy configured when attempts are
        # set to 0 (disabled)"; each comma-separated retryOn policy as written, never trimmed
        attempts = retries.get("attempts", 0)
        at = base + ("http", "retries")
        if isinstance(attempts, int) and attempts < 0:
            yield at + ("attempts",), f"retries.attempts {attempts}: attempts cannot be negative", False
        elif attempts == 0 and any(k in retries for k in ("perTryTimeout", "retryOn", "retryRemoteLocalities")):
            yield (at + (("attempts",) if "attempts" in retries else ()),
                   "retries with attempts 0 (retries off) cannot set perTryTimeout, retryOn or "
                   "retryRemoteLocalities: Istio refuses the policy; set attempts, or remove retries", False)
        retry_on = retries.get("retryOn")
        if isinstance(retry_on, str) and any(c != c.strip() for c in retry_on.split(",")):
            yield (at + ("retryOn",), f"retries.retryOn {retry_on!r}: no spaces around the commas "
                   "(Istio reads ' connect-failure' as an unknown policy)", False)
    rewrite = http.get("rewrite")
    if isinstance(rewrite, Mapping):
        # validateHTTPRewrite: one of uri and uriRegexRewrite; at least one of them or authority
        if rewrite.get("uri") and rewrite.get("uriRegexRewrite") is not None:
            yield (base + ("http", "rewrite", "uriRegexRewrite"), "rewrite may set uri or uriRegexRewrite, "
                   "not both", True)
        elif not (rewrite.get("uri") or rewrite.get("uriRegexRewrite") is not None or rewrite.get("authority")):
            yield (base + ("http", "rewrite"), "rewrite must set uri, uriRegexRewrite or authority", True)
    cors = http.get("corsPolicy")
    methods = cors.get("allowMethods") if isinstance(cors, Mapping) else None
    for i, method in enumerate(methods if isinstance(methods, list) else []):
        # validateCORSPolicy: each allowMethods entry is one of supportedCORSMethods
        if method not in CORS_METHODS:
            yield (base + ("http", "corsPolicy", "allowMethods", i), f"corsPolicy.allowMethods: {method!r} is not "
                   f"an HTTP method ({', '.join(sorted(CORS_METHODS - {'*'}))} or *)", False)
    for i, port in enumerate(rel.service.get("ports") or []):
        for j, sni in enumerate(port.get("sniHosts") or [] if route_kind(port) == "tls" else []):
            # validateSniHost: each SNI host is a subset (host.Name.SubsetOf) of one of the VirtualService's hosts
            if not any(_host_subset(str(sni), str(h)) for h in rel.hosts):
                yield (base + ("ports", i, "sniHosts", j), f"SNI host {sni!r} is not within the VirtualService's "
                       f"hosts ({', '.join(rel.hosts)}): Istio refuses it; add it to spec.service.hosts or match "
                       "one of them", False)


def _host_subset(name: str, of: str) -> bool:
    """istio/istio pkg/config/host ``Name.SubsetOf``: equal, or within a wildcard host."""
    if of == "*" or name == of:
        return True
    if of.startswith("*"):
        return name[1:].endswith(of[1:]) if name.startswith("*") else name.endswith(of[1:])
    return False


def _owner(path: tuple[Any, ...]) -> str:
    return "DestinationRule trafficPolicy" if path[2:3] == ("trafficPolicy",) else "VirtualService HTTPRoute"


def _status_code(text: str) -> bool:
    return text.isdigit() and 100 <= int(text) <= 599


def _header_problems(ops: Any, at: tuple[Any, ...]) -> Iterator[_Raw]:
    if not isinstance(ops, Mapping):
        return
    for op in ("set", "add", "remove"):
        names = ops.get(op)
        names = list(names) if isinstance(names, (Mapping, list)) else []
        for name in names:
            if isinstance(name, str) and not _HEADER_NAME.fullmatch(name):
                where = at + (op, name) if op != "remove" else at + (op, names.index(name))
                yield where, f"{name!r} is not an HTTP header name (pseudo-headers such as :authority are set " \
                             "through rewrite)", op != "remove"
