"""A Kubernetes API emulator that behaves like kube-apiserver where a controller can tell, built on kmock.

kmock 0.8 parses requests (resource, namespace, name, action) and serves them
over HTTP on 127.0.0.1 for the official ``kubernetes`` client; its stock
emulator misses what a controller depends on (see the project's testing
notes). This subclass keeps kmock's server, parsing and discovery and
replaces the object store for resource requests with one that copies these
API-server behaviours (each has its own test in tests/test_kube_emulator.py):

- ``resourceVersion`` (a global counter, unchanged by a no-op write), ``uid``,
  ``creationTimestamp``, ``generation`` bumped only when ``spec`` changes;
  writes to the main resource never change ``status`` (but for CRDs served
  without a status subresource, as Argo CD's Application: ``NO_STATUS_SUBRESOURCE``);
- 201 on create, 409 AlreadyExists, PUT with 409 on a stale ``resourceVersion``;
- validation with 422 Invalid and the server's messages: a Deployment's
  ``spec.selector`` is immutable and must match the template labels,
  containers need a name and an image, ``rollingUpdate`` is forbidden with
  ``Recreate``, requests may not exceed limits, a Service's ``clusterIP`` is
  immutable, a string ``targetPort`` must be a port name, names and labels
  must be valid;
- defaulting (Deployment strategy, revisionHistoryLimit,
  progressDeadlineSeconds, replicas; pod template restartPolicy, dnsPolicy,
  schedulerName, terminationGracePeriodSeconds, securityContext; container
  imagePullPolicy, terminationMessagePath/Policy, port protocol, probe
  timings; Service type, clusterIP(s) allocated from 10.96.0.0/16,
  sessionAffinity, ipFamilies, ipFamilyPolicy, internalTrafficPolicy, port
  protocol, targetPort);
- quantities in canonical form (``1000m`` -> ``"1"``, ``0.5`` -> ``"500m"``,
  ``1024Mi`` -> ``"1Gi"``); int-or-string fields keep their type;
- unknown fields, per the official OpenAPI schemas (the newest Kubernetes
  that ``kubernetes-validate`` ships) and Istio's CRD schemas
  (tests/fixtures/istio): dropped with a ``Warning`` header, 400 with
  ``fieldValidation=Strict``, and a 500 "field not declared in schema" on
  server-side apply;
- server-side apply with ``managedFields`` per field manager (tests/support/
  ssa.py): removal of fields a manager stopped applying, 409 conflicts with
  other managers unless ``force``, keyed lists merged by key; other writes
  record ``Update`` entries (manager from ``fieldManager`` or the User-Agent);
  apply on a missing object creates it;
- merge patch, strategic merge patch (keyed lists by key), JSON patch;
- ``dryRun=All`` on every write: the object as it would be stored, nothing
  stored, ``resourceVersion`` untouched (counted as ``dry-<verb>``);
- label selectors (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``),
  ``limit``/``continue`` on LIST;
- watches that replay current objects and end (a client re-watches);
- a bounded request log and counters of (verb, plural, namespace) for tests;
- fault injection: the next N requests matching (verb, plural) answer a
  status code (409, 429, 500, 403).

Known gaps: no admission webhooks (Istio's sidecar injection, mutating
annotations); no type or enum checks against the schemas (only unknown
fields; tests/test_render.py validates rendered objects fully) and no CEL
rules; no ownership of status fields and no ``v:`` set-lists (finalizers are
atomic); no field selectors; no watch events after the replay; no garbage
collection of dependents; no ReplicaSets or Pods behind a Deployment
(``set_ready`` fakes its status); validation covers Deployments and Services
(other kinds: names and labels only).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import functools
import importlib.resources
import json
import math
import pathlib
import re
import threading
import uuid
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Callable

import aiohttp.web
import attrs
import kmock
import kubernetes
import yaml

from tests.support import ssa

LOG_LIMIT = 500
DRY = "dry-"   # prefix of the counted verb of a dryRun=All request


class ApiError(Exception):
    """An API answer other than success (a ``Status`` object)."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if not self.reason:
            del out["reason"]
        if self.details:
            out["details"] = self.details
        return out

    def response(self) -> aiohttp.web.Response:
        return aiohttp.web.json_response(self.body(), status=self.code)


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return ApiError(code, reason, message).response()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# === patches =============================================================================
def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): dicts merge, None deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _json_patch(obj: dict, ops: list) -> dict:
    """JSON patch (RFC 6902): add, remove, replace, test."""
    out = copy.deepcopy(obj)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = out
        try:
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node[p]
            if isinstance(node, list):
                at = len(node) if last == "-" else int(last)
            else:
                at = last
            if op["op"] == "add":
                node.insert(at, op["value"]) if isinstance(node, list) else node.__setitem__(at, op["value"])
            elif op["op"] == "replace":
                node[at]  # noqa: B018 - must exist
                node[at] = op["value"]
            elif op["op"] == "remove":
                del node[at]
            elif op["op"] == "test" and node[at] != op["value"]:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                               f"testing value {op['path']} failed")
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                           f"doc is missing path: \"{op['path']}\"") from None
    return out


# === label selectors ==========================================================================
_SET_TERM = re.compile(r"^\s*(!?)([^\s!=,()]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [t.strip() for t in out + [cur] if t.strip()]


def _selector(text: str) -> Callable[[dict], bool]:
    tests = []
    for term in _terms(text):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in term:
            k, v = term.split("=", 1)
            k, v = k.rstrip("=").strip(), v.lstrip("=").strip()
            tests.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif m := _SET_TERM.match(term):
            neg, k, op, values = m.groups()
            if op:
                vals = {v.strip() for v in values.split(",")}
                tests.append(lambda labels, k=k, vals=vals, op=op: (labels.get(k) in vals) == (op == "in")
                             if k in labels else op == "notin")
            else:
                tests.append(lambda labels, k=k, neg=neg: (k in labels) != bool(neg))
    return lambda labels: all(t(labels) for t in tests)


def _matches(selector: dict, labels: dict) -> bool:
    """Does a LabelSelector (matchLabels, matchExpressions) select ``labels``?"""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


# === quantities (k8s.io/apimachinery resource.Quantity) =======================================
QUANTITY_RE = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?\d+))?$")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SUFFIX_OF = {v: k for k, v in _DECIMAL.items()}
_BINARY_OF = {v: k for k, v in _BINARY.items()}


def canonical_quantity(value: Any) -> str:
    """The canonical text of a quantity, as a real server returns it: the format
    of the input (decimal SI, binary SI, exponent), the largest suffix that
    keeps the number an integer, rounded up to 1n; binary values under 1Ki or
    not whole bytes become decimal."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(value)
    text = str(value) if isinstance(value, str) else repr(value)
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(value)
    number, suffix, exponent = m.groups()
    try:
        amount = Fraction(Decimal(number))
    except InvalidOperation:
        raise ValueError(value) from None
    if suffix in _BINARY:
        amount, fmt = amount * 2 ** _BINARY[suffix], "binary"
    elif exponent is not None:
        amount, fmt = amount * Fraction(10) ** int(exponent), "exponent"
    else:
        amount, fmt = amount * Fraction(10) ** _DECIMAL[suffix or ""], "decimal"
    amount = Fraction(math.ceil(amount * 10 ** 9), 10 ** 9)   # at most nano precision, rounded up
    if amount == 0:
        return "0"
    if fmt == "binary" and (abs(amount) < 1024 or amount.denominator != 1):
        fmt = "decimal"
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if fmt == "binary":
        n, exp = int(amount), 0
        while n % 1024 == 0 and exp < 60:
            n, exp = n // 1024, exp + 10
        return f"{sign}{n}{_BINARY_OF[exp]}"
    exp = 0
    while amount.denominator != 1:
        amount, exp = amount * 1000, exp - 3
    n = int(amount)
    while n % 1000 == 0 and (exp < 18 or fmt == "exponent"):
        n, exp = n // 1000, exp + 3
    if fmt == "exponent":
        return f"{sign}{n}" + (f"e{exp}" if exp else "")
    return f"{sign}{n}{_SUFFIX_OF[exp]}"


def quantity_value(text: str) -> Fraction:
    q = canonical_quantity(text)
    m = _QUANTITY.match(q)
    number, suffix, exponent = m.groups()
    base = Fraction(Decimal(number))
    if suffix in _BINARY:
        return base * 2 ** _BINARY[suffix]
    return base * Fraction(10) ** (int(exponent) if exponent else _DECIMAL[suffix or ""])


def _pod_spec(obj: dict) -> dict | None:
    """The pod spec inside a workload (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job) or a Pod."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    if obj.get("kind") == "Pod":
        return spec
    template = spec.get("template")
    if obj.get("kind") == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    return template.get("spec") if isinstance(template, dict) and isinstance(template.get("spec"), dict) else None


def _containers(pod: dict):
    for field in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(field) or []):
            if isinstance(c, dict):
                yield field, i, c


def canonicalise_quantities(obj: dict, where: str) -> None:
    """Quantities of a workload in canonical form, in place; 400 BadRequest on one that does not parse."""
    pod = _pod_spec(obj)
    if pod is None:
        return
    for _, _, c in _containers(pod):
        for part in ("requests", "limits"):
            values = (c.get("resources") or {}).get(part)
            for name, value in (values or {}).items():
                try:
                    values[name] = canonical_quantity(value)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"{where} in version \"v1\" cannot be handled as a {where}: "
                                                      f"quantities must match the regular expression "
                                                      f"'{QUANTITY_RE}'") from None
    for vol in pod.get("volumes") or []:
        empty = (vol or {}).get("emptyDir")
        if isinstance(empty, dict) and "sizeLimit" in empty:
            empty["sizeLimit"] = canonical_quantity(empty["sizeLimit"])


# === defaults (pkg/apis/*/v1/defaults.go) =========================================================
def _pull_policy(image: str) -> str:
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        probe.setdefault(key, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(c: dict) -> None:
    c.setdefault("imagePullPolicy", _pull_policy(str(c.get("image") or "")))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))
    for env in c.get("env") or []:
        ref = ((env or {}).get("valueFrom") or {}).get("fieldRef")
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")


def _default_pod_spec(pod: dict) -> None:
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("securityContext", {})
    pod.setdefault("schedulerName", "default-scheduler")
    for _, _, c in _containers(pod):
        _default_container(c)
    for vol in pod.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance((vol or {}).get(source), dict):
                vol[source].setdefault("defaultMode", 420)


def default_deployment(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    if isinstance(template.get("spec"), dict):
        _default_pod_spec(template["spec"])


def default_service(obj: dict, old: dict | None, allocate_ip: Callable[[], str],
                    allocate_port: Callable[[], int]) -> None:
    spec = obj.setdefault("spec", {})
    old_spec = (old or {}).get("spec") or {}
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if kind != "ExternalName":
        # a PUT without clusterIP keeps the allocated one (the registry's patchAllocatedValues)
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
            spec.setdefault("clusterIPs", old_spec.get("clusterIPs"))
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocate_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    old_nodeports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or [] if isinstance(p, dict)}
    for port in spec.get("ports") or []:
        if not isinstance(port, dict):
            continue
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])
        if kind in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
            port["nodePort"] = old_nodeports.get(port.get("port")) or allocate_port()
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if kind == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    obj.setdefault("status", {"loadBalancer": {}})


# === validation (pkg/apis/*/validation) =============================================================
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
MSG_LABEL_1123 = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                  "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
MSG_LABEL_1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                  "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                  "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
MSG_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def go_repr(value: Any) -> str:
    """A value the way Go's ``%#v`` prints it in an error message (close enough)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "map[string]string{" + ", ".join(f"{json.dumps(k)}:{go_repr(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[]string{" + ", ".join(go_repr(v) for v in value) + "}"
    return str(value)


def go_selector(sel: Any) -> str:
    sel = sel if isinstance(sel, dict) else {}
    labels = go_repr(sel["matchLabels"]) if sel.get("matchLabels") else "map[string]string(nil)"
    exprs = "[]v1.LabelSelectorRequirement(nil)" if not sel.get("matchExpressions") else \
        "[]v1.LabelSelectorRequirement{" + ", ".join(
            f"v1.LabelSelectorRequirement{{Key:{go_repr(e.get('key'))}, Operator:{go_repr(e.get('operator'))}, "
            f"Values:{go_repr(e.get('values') or [])}}}" for e in sel["matchExpressions"]) + "}"
    return f"v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}"


class Errors(list):
    """field.ErrorList: each item (field, type, text)."""

    def required(self, field: str) -> None:
        self.append((field, "FieldValueRequired", f"{field}: Required value"))

    def invalid(self, field: str, value: Any, detail: str, shown: str | None = None) -> None:
        self.append((field, "FieldValueInvalid", f"{field}: Invalid value: {shown or go_repr(value)}: {detail}"))

    def forbidden(self, field: str, detail: str) -> None:
        self.append((field, "FieldValueForbidden", f"{field}: Forbidden: {detail}"))

    def unsupported(self, field: str, value: Any, supported: list[str]) -> None:
        self.append((field, "FieldValueNotSupported", f"{field}: Unsupported value: {go_repr(value)}: "
                                                       f"supported values: " + ", ".join(f'"{s}"' for s in supported)))

    def duplicate(self, field: str, value: Any) -> None:
        self.append((field, "FieldValueDuplicate", f"{field}: Duplicate value: {go_repr(value)}"))

    def raise_for(self, kind: str, group: str, name: str) -> None:
        if not self:
            return
        what = f"{kind}.{group}" if group else kind
        texts = [t for _, _, t in self]
        message = f'{what} "{name}" is invalid: ' + (texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]")
        causes = [{"reason": r, "message": t.split(": ", 1)[1], "field": f} for f, r, t in self]
        raise ApiError(422, "Invalid", message, {"name": name, "group": group, "kind": kind, "causes": causes})


def _check_labels(errs: Errors, labels: Any, field: str) -> None:
    for key, value in (labels or {}).items():
        prefix, _, name = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix))) or not name \
                or len(name) > 63 or not LABEL_VALUE.match(name):
            errs.invalid(field, key, "name part must consist of alphanumeric characters, '-', '_' or '.', and "
                                     "must start and end with an alphanumeric character")
        if not isinstance(value, str):
            errs.invalid(f"{field}", value, "label values must be strings")
        elif len(value) > 63:
            errs.invalid(field, value, "must be no more than 63 characters")
        elif not LABEL_VALUE.match(value):
            errs.invalid(field, value, MSG_LABEL_VALUE)


def validate_meta(errs: Errors, obj: dict, name_re: re.Pattern, name_msg: str) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        errs.required("metadata.name")
    elif len(name) > (63 if name_re is not DNS1123_SUBDOMAIN else 253) or not name_re.match(name):
        errs.invalid("metadata.name", name, name_msg)
    _check_labels(errs, meta.get("labels"), "metadata.labels")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int_or_percent(errs: Errors, value: Any, field: str) -> None:
    if isinstance(value, str) and not re.fullmatch(r"\d+%", value):
        errs.invalid(field, value, "a valid percent string must be a numeric string followed by an ending '%' "
                                   "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
    elif _is_int(value) and value < 0:
        errs.invalid(field, value, "must be greater than or equal to 0")


def validate_pod_spec(errs: Errors, pod: Any, field: str) -> None:
    if not isinstance(pod, dict):
        errs.required(field)
        return
    if not pod.get("containers"):
        errs.required(f"{field}.containers")
    seen: set = set()
    for kind, i, c in _containers(pod):
        where = f"{field}.{kind}[{i}]"
        name = c.get("name")
        if not name:
            errs.required(f"{where}.name")
        elif not DNS1123_LABEL.match(name) or len(name) > 63:
            errs.invalid(f"{where}.name", name, MSG_LABEL_1123)
        elif name in seen:
            errs.duplicate(f"{where}.name", name)
        seen.add(name)
        if not c.get("image"):
            errs.required(f"{where}.image")
        for j, port in enumerate(c.get("ports") or []):
            cp = (port or {}).get("containerPort")
            if not _is_int(cp) or not 0 < cp < 65536:
                errs.invalid(f"{where}.ports[{j}].containerPort", cp, "must be between 1 and 65535, inclusive")
        res = c.get("resources") or {}
        for resource, request in (res.get("requests") or {}).items():
            limit = (res.get("limits") or {}).get(resource)
            if limit is not None and quantity_value(request) > quantity_value(limit):
                errs.invalid(f"{where}.resources.requests", request,
                             f"must be less than or equal to {resource} limit of {limit}")


def validate_deployment(obj: dict, old: dict | None) -> Errors:
    errs = Errors()
    validate_meta(errs, obj, DNS1123_SUBDOMAIN, MSG_SUBDOMAIN)
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        errs.required("spec.selector")
    elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errs.invalid("spec.selector", selector, "empty selector is invalid for deployment", go_selector(selector))
    else:
        _check_labels(errs, selector.get("matchLabels"), "spec.selector.matchLabels")
        if not _matches(selector, labels):
            errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    _check_labels(errs, labels, "spec.template.metadata.labels")
    if old is not None and ((old.get("spec") or {}).get("selector")) != selector:
        errs.invalid("spec.selector", selector, "field is immutable", go_selector(selector))
    replicas = spec.get("replicas")
    if not _is_int(replicas) or replicas < 0:
        errs.invalid("spec.replicas", replicas, "must be greater than or equal to 0")
    strategy = spec.get("strategy") or {}
    if strategy.get("type") not in ("RollingUpdate", "Recreate"):
        errs.unsupported("spec.strategy.type", strategy.get("type"), ["Recreate", "RollingUpdate"])
    elif strategy["type"] == "Recreate" and strategy.get("rollingUpdate") is not None:
        errs.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
    rolling = strategy.get("rollingUpdate") or {}
    for key in ("maxSurge", "maxUnavailable"):
        if key in rolling:
            _check_int_or_percent(errs, rolling[key], f"spec.strategy.rollingUpdate.{key}")
    if rolling and str(rolling.get("maxSurge")) in ("0", "0%") and str(rolling.get("maxUnavailable")) in ("0", "0%"):
        errs.invalid("spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"),
                     "may not be 0 when `maxSurge` is 0")
    validate_pod_spec(errs, template.get("spec"), "spec.template.spec")
    restart = (template.get("spec") or {}).get("restartPolicy")
    if restart != "Always":
        errs.unsupported("spec.template.spec.restartPolicy", restart, ["Always"])
    return errs


def validate_service(obj: dict, old: dict | None) -> Errors:
    errs = Errors()
    validate_meta(errs, obj, DNS1035_LABEL, MSG_LABEL_1035)
    spec = obj.get("spec") or {}
    kind = spec.get("type")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.unsupported("spec.type", kind, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"])
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        errs.required("spec.ports")
    names: set = set()
    for i, port in enumerate(ports):
        port = port or {}
        where = f"spec.ports[{i}]"
        if len(ports) > 1 and not port.get("name"):
            errs.required(f"{where}.name")
        elif port.get("name") in names:
            errs.duplicate(f"{where}.name", port["name"])
        names.add(port.get("name"))
        if not _is_int(port.get("port")) or not 0 < port["port"] < 65536:
            errs.invalid(f"{where}.port", port.get("port"), "must be between 1 and 65535, inclusive")
        target = port.get("targetPort")
        if isinstance(target, str):
            if not re.search("[a-z]", target):
                errs.invalid(f"{where}.targetPort", target, "must contain at least one letter (a-z)")
            elif len(target) > 15 or not PORT_NAME.match(target) or "--" in target:
                errs.invalid(f"{where}.targetPort", target, "must be no more than 15 characters and consist of "
                                                            "lower case alphanumeric characters or '-'")
        elif not _is_int(target) or not 0 < target < 65536:
            errs.invalid(f"{where}.targetPort", target, "must be between 1 and 65535, inclusive")
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            errs.unsupported(f"{where}.protocol", port.get("protocol"), ["SCTP", "TCP", "UDP"])
    _check_labels(errs, spec.get("selector"), "spec.selector")
    old_ips = ((old or {}).get("spec") or {}).get("clusterIPs")
    if old is not None and old_ips and spec.get("clusterIPs") != old_ips:
        errs.invalid("spec.clusterIPs[0]", spec.get("clusterIPs"), "may not change once set")
    return errs


def validate_other(obj: dict, old: dict | None) -> Errors:
    errs = Errors()
    validate_meta(errs, obj, DNS1123_SUBDOMAIN, MSG_SUBDOMAIN)
    return errs


VALIDATORS = {"Deployment": validate_deployment, "Service": validate_service}


# === unknown fields: the official OpenAPI schemas (kubernetes-validate) and Istio's CRD schemas ======
ISTIO_SCHEMAS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "istio" / "networking-schemas.json"


@functools.lru_cache(maxsize=None)
def _k8s_schema_dir() -> pathlib.Path:
    import kubernetes_validate   # a test dependency; the emulator checks against its newest Kubernetes
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return pathlib.Path(str(root / f"v{kubernetes_validate.latest_version()}-local-strict"))


@functools.lru_cache(maxsize=None)
def _k8s_defs() -> dict:
    return json.loads((_k8s_schema_dir() / "_definitions.json").read_text())["$defs"]


@functools.lru_cache(maxsize=None)
def _root_schema(api_version: str, kind: str) -> dict | None:
    if api_version.startswith("networking.istio.io/"):
        schema = json.loads(ISTIO_SCHEMAS.read_text())["schemas"].get(f"{api_version}/{kind}")
        if schema is None:
            return None
        # a CR's apiVersion, kind and metadata are the server's, whatever the CRD says
        known = {"apiVersion": {}, "kind": {}, "metadata": {"x-kubernetes-preserve-unknown-fields": True}}
        return {**schema, "properties": {**known, **schema.get("properties", {})}}
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _k8s_schema_dir() / f"{kind.lower()}-{group_version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = _k8s_defs()[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def unknown_fields(obj: dict, kind: ssa.Kind) -> list[tuple]:
    """Paths of fields the schema does not declare; each a tuple of (field name | (index, item))."""
    schema = _root_schema(obj.get("apiVersion", ""), kind.kind)
    out: list[tuple] = []
    if schema is not None:
        _unknown(obj, schema, (), out)
    return out


def _unknown(value: Any, schema: dict, path: tuple, out: list) -> None:
    schema = _resolve(schema)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, sub in value.items():
            if props is not None and key in props:
                _unknown(sub, props[key], path + (key,), out)
            elif isinstance(extra, dict):
                _unknown(sub, extra, path + (key,), out)
            elif props is not None or extra is False:
                out.append(path + (key,))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _unknown(item, schema["items"], path + ((i, item),), out)


def _drop(obj: dict, path: tuple) -> None:
    node = obj
    for el in path[:-1]:
        node = node[el[0]] if isinstance(el, tuple) else node[el]
    node.pop(path[-1], None)


def path_by_index(path: tuple) -> str:
    """``spec.template.spec.containers[0].imagePullPolicyy`` (strict decoding errors, warnings)."""
    return "".join(f"[{el[0]}]" if isinstance(el, tuple) else ("." if i else "") + el for i, el in enumerate(path))


def path_by_key(path: tuple, kind: ssa.Kind) -> str:
    """``.spec.template.spec.containers[name="web"].imagePullPolicyy`` (structured-merge-diff's errors)."""
    out, names = "", ()
    for el in path:
        if isinstance(el, tuple):
            keys = kind.list_keys(names)
            out += ssa.path_text((ssa.item_key(el[1], keys),)) if keys else f"[{el[0]}]"
        else:
            out += "." + el
            names += (el,)
    return out


# === the store and the verbs ==========================================================================
KIND_OF = {"deployments": "Deployment", "services": "Service", "virtualservices": "VirtualService",
           "destinationrules": "DestinationRule", "leases": "Lease", "configmaps": "ConfigMap",
           "secrets": "Secret", "pods": "Pod", "namespaces": "Namespace", "replicasets": "ReplicaSet",
           "horizontalpodautoscalers": "HorizontalPodAutoscaler"}
SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")
# CRDs served WITHOUT a status subresource, as their projects ship them: Argo CD's
# Application (argoproj/argo-cd#22967). Their status is written with the object,
# there is no /status endpoint, and any change outside metadata bumps generation.
# Every other kind keeps status apart (a write to the object never changes it).
NO_STATUS_SUBRESOURCE = {("argoproj.io", "applications")}


def _status_apart(gvp: tuple) -> bool:
    return (gvp[0], gvp[2]) not in NO_STATUS_SUBRESOURCE


def _api_version(gvp: tuple) -> str:
    return "/".join(filter(None, gvp[:2]))


def _sans_meta(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "metadata"}


def _what(gvp: tuple) -> str:
    return f"{gvp[2]}.{gvp[0]}" if gvp[0] else gvp[2]


def _not_found(gvp: tuple, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_what(gvp)} "{name}" not found')


def _header(request, name: str) -> str:
    return next((v for k, v in (request.headers or {}).items() if k.lower() == name), "")


class Store(dict):
    """The object store, ``{(gvp, namespace, name): object}``, indexed by (gvp, namespace) so a LIST
    reads its own collection, not every object (kube-apiserver lists one etcd key prefix), and
    keeping each stored object's JSON: every write stores a new dict, so an entry whose object
    is still the one stored is still true. ``plurals`` maps a plural to the group-versions it was
    stored under, in the order first seen, so the test helpers find an object by plural without a scan."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.by: dict[tuple, dict[str, dict]] = {}
        self.plurals: dict[str, dict[tuple, None]] = {}
        self.encoded: dict[tuple, tuple[dict, bytes]] = {}
        self.update(*args, **kwargs)

    def __setitem__(self, key, obj) -> None:
        super().__setitem__(key, obj)
        self.by.setdefault((key[0], key[1]), {})[key[2]] = obj
        self.plurals.setdefault(key[0][2], {})[key[0]] = None

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self.by.get((key[0], key[1]), {}).pop(key[2], None)
        self.encoded.pop(key, None)

    def update(self, *args, **kwargs) -> None:
        for key, obj in dict(*args, **kwargs).items():
            self[key] = obj

    def pop(self, key, *default):
        if key in self:
            obj = self[key]
            del self[key]
            return obj
        if default:
            return default[0]
        raise KeyError(key)

    def clear(self) -> None:
        super().clear()
        self.by.clear()
        self.plurals.clear()
        self.encoded.clear()

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def collection(self, gvp: tuple, namespace: str | None) -> list[tuple[tuple, dict]]:
        """``(key, object)`` of one resource in one namespace (all namespaces: None), in key order."""
        if namespace is not None:
            found = self.by.get((gvp, namespace), {})
            return [((gvp, namespace, name), found[name]) for name in sorted(found)]
        return [((gvp, ns, name), objs[name]) for (g, ns), objs in sorted(self.by.items(), key=lambda kv: kv[0][1] or "")
                if g == gvp for name in sorted(objs)]

    def find(self, plural: str, namespace: str | None, name: str) -> tuple | None:
        """The key of the object ``name`` of resource ``plural`` (any group-version) in ``namespace``."""
        for gvp in self.plurals.get(plural, ()):
            if name in self.by.get((gvp, namespace), ()):
                return (gvp, namespace, name)
        return None

    def of_plural(self, plural: str | None) -> list[tuple[tuple, dict]]:
        """``(key, object)`` of every object of resource ``plural`` (every object: None)."""
        if plural is None:
            return list(self.items())
        return [((g, ns, name), obj) for gvp in self.plurals.get(plural, ())
                for (g, ns), objs in self.by.items() if g == gvp for name, obj in objs.items()]

    def json(self, key: tuple, obj: dict) -> bytes:
        kept = self.encoded.get(key)
        if kept is None or kept[0] is not obj:
            kept = self.encoded[key] = (obj, json.dumps(obj).encode())
        return kept[1]


@attrs.define(kw_only=True)
class StrictEmulator(kmock.KubernetesEmulator):
    store: Store = attrs.field(factory=Store)
    rv: int = 0
    counts: collections.Counter = attrs.field(factory=collections.Counter)
    log: collections.deque = attrs.field(factory=lambda: collections.deque(maxlen=LOG_LIMIT))
    faults: list = attrs.field(factory=list)
    ips: int = 0
    node_ports: int = 0
    warnings: list = attrs.field(factory=list)   # of the request being served (Warning headers)

    # --- HTTP ---------------------------------------------------------------------------
    async def _handle(self, request):
        # kmock keeps every request; a long test would slow down. Keep the last few.
        if len(self._requests) > LOG_LIMIT:
            del self._requests[: len(self._requests) - LOG_LIMIT]
        if request.resource is None or request.resource.plural is None:
            return await super()._handle(request)
        verb = self._verb(request)
        plural = request.resource.plural
        counted = DRY + verb if request.params.get("dryRun") == "All" else verb
        self.counts[(counted, plural, request.namespace or "")] += 1
        self.log.append((counted, plural, request.namespace, request.name))
        for fault in self.faults:
            if fault["n"] > 0 and fault["verb"] in (verb, counted, "*") and fault["plural"] in (plural, "*"):
                fault["n"] -= 1
                resp = _status(fault["code"], fault["reason"], fault["message"])
                if fault["code"] == 429:
                    resp.headers["Retry-After"] = "0"
                return resp
        self.warnings = []
        if request.subresource == "status" and not _status_apart(self._gvp(request)):
            return _status(404, "NotFound", "the server could not find the requested resource")
        try:
            resp = await getattr(self, f"_do_{verb}")(request)
        except ApiError as exc:
            resp = exc.response()
        for text in self.warnings:
            resp.headers.add("Warning", '299 - ' + json.dumps(text))
        return resp

    def _verb(self, request) -> str:
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method == "GET":
            if request.params.get("watch") in ("true", "1"):
                return "watch"
            return "get" if request.name else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())

    @staticmethod
    def _gvp(request) -> tuple:
        res = request.resource
        return (res.group or "", res.version, res.plural)

    @staticmethod
    def _manager(request) -> str:
        """``fieldManager``, else the User-Agent up to its first ``/`` (as the server does)."""
        return request.params.get("fieldManager") or _header(request, "user-agent").split("/")[0][:128] or "unknown"

    @staticmethod
    def _dry(request) -> bool:
        return request.params.get("dryRun") == "All"

    @staticmethod
    def _validation(request) -> str:
        return request.params.get("fieldValidation") or "Warn"

    def _listed(self, request) -> list[tuple[tuple, dict]]:
        match = _selector(request.params.get("labelSelector", ""))
        return [(key, obj) for key, obj in self.store.collection(self._gvp(request), request.namespace)
                if match((obj.get("metadata") or {}).get("labels") or {})]

    async def _do_list(self, request):
        items = self._listed(request)
        start = int(request.params.get("continue") or 0)
        limit = int(request.params.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        items = items[start:start + limit] if limit else items[start:]
        gvp = self._gvp(request)
        head = json.dumps({"apiVersion": _api_version(gvp), "kind": f"{self._kind(gvp).kind}List", "metadata": meta})
        body = head[:-1].encode() + b', "items": [' + b", ".join(self.store.json(k, o) for k, o in items) + b"]}"
        return aiohttp.web.Response(body=body, content_type="application/json")

    async def _do_watch(self, request):
        """Replay the current objects as ADDED events, then end (a client re-watches)."""
        lines = [b'{"type": "ADDED", "object": ' + self.store.json(k, o) + b"}" for k, o in self._listed(request)]
        return aiohttp.web.Response(body=b"\n".join(lines) + b"\n" if lines else b"",
                                    content_type="application/json")

    async def _do_get(self, request):
        gvp = self._gvp(request)
        obj = self.store.get((gvp, request.namespace, request.name))
        if obj is None:
            raise _not_found(gvp, request.name)
        return aiohttp.web.json_response(obj)

    async def _do_create(self, request):
        obj = self.create(self._gvp(request), request.namespace, request.data, manager=self._manager(request),
                          dry=self._dry(request), validation=self._validation(request))
        return aiohttp.web.json_response(obj, status=201)

    async def _do_update(self, request):
        obj = self.replace(self._gvp(request), request.namespace, request.name, request.data,
                           manager=self._manager(request), dry=self._dry(request), subresource=request.subresource,
                           validation=self._validation(request))
        return aiohttp.web.json_response(obj)

    async def _do_patch(self, request):
        gvp, ns, name = self._gvp(request), request.namespace, request.name
        ctype = _header(request, "content-type")
        if "apply-patch" in ctype:
            if not request.params.get("fieldManager"):
                raise ApiError(400, "BadRequest", "PATCH /apis: fieldManager is required for apply requests")
            try:
                config = yaml.safe_load(request.body or b"")
            except yaml.YAMLError as exc:
                raise ApiError(400, "BadRequest", f"error decoding YAML: {exc}") from None
            code, obj = self.apply(gvp, ns, name, config, manager=request.params["fieldManager"],
                                   force=request.params.get("force") in ("true", "1"), dry=self._dry(request),
                                   subresource=request.subresource)
            return aiohttp.web.json_response(obj, status=code)
        try:
            patch = json.loads(request.body or b"{}")
        except ValueError:
            raise ApiError(400, "BadRequest", "error decoding patch: invalid JSON") from None
        obj = self.patch(gvp, ns, name, patch, ctype, manager=self._manager(request), dry=self._dry(request),
                         subresource=request.subresource, validation=self._validation(request))
        return aiohttp.web.json_response(obj)

    async def _do_delete(self, request):
        return aiohttp.web.json_response(self.delete(self._gvp(request), request.namespace, request.name,
                                                     dry=self._dry(request)))

    # --- the API server's write path (also called by the test helpers) ---------------------------
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _allocate_ip(self) -> str:
        self.ips += 1
        return f"10.96.{self.ips // 250}.{self.ips % 250 + 2}"

    def _allocate_port(self) -> int:
        self.node_ports += 1
        return 30000 + self.node_ports

    def _kind(self, gvp: tuple, *objs: dict | None) -> ssa.Kind:
        for obj in objs:
            if obj and obj.get("kind"):
                return ssa.Kind(gvp[0], obj["kind"])
        for (g, _), objs in self.store.by.items():
            if g == gvp and objs:
                return ssa.Kind(gvp[0], next(iter(objs.values()))["kind"])
        return ssa.Kind(gvp[0], KIND_OF.get(gvp[2], gvp[2].rstrip("s").capitalize()))

    @staticmethod
    def _check_target(meta: dict, namespace: str | None, name: str | None) -> None:
        if meta.get("namespace") and namespace and meta["namespace"] != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                                              "sent on the request")
        if name and meta.get("name") and meta["name"] != name:
            raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not match the name on "
                                              f"the URL ({name})")

    @staticmethod
    def _check_version(meta: dict, old: dict, gvp: tuple, name: str) -> None:
        given = meta.get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_what(gvp)} "{name}": the object '
                                            f'has been modified; please apply your changes to the latest version '
                                            f'and try again')

    def _prepare(self, kind: ssa.Kind, old: dict | None, obj: dict) -> None:
        """Normalise, default and validate ``obj`` in place (what admission and the registry do)."""
        if kind.builtin:
            canonicalise_quantities(obj, kind.kind)
        if kind.kind == "Deployment" and kind.builtin:
            default_deployment(obj)
        elif kind.kind == "Service" and kind.builtin:
            default_service(obj, old, self._allocate_ip, self._allocate_port)
        errs = VALIDATORS.get(kind.kind, validate_other)(obj, old) if kind.builtin else validate_other(obj, old)
        errs.raise_for(kind.kind, kind.group, (obj.get("metadata") or {}).get("name") or "")

    def _store_new(self, key: tuple, obj: dict, dry: bool) -> dict:
        meta = obj["metadata"]
        if key[1] is not None:
            meta["namespace"] = key[1]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if not dry:
            meta["resourceVersion"] = self._next_rv()
            self.store[key] = obj
        return copy.deepcopy(obj)

    def _check_fields(self, obj: dict, kind: ssa.Kind, validation: str) -> None:
        """Unknown fields: 400 with fieldValidation=Strict, else dropped (with a Warning unless Ignore)."""
        unknown = unknown_fields(obj, kind)
        if not unknown:
            return
        texts = [f'unknown field "{path_by_index(p)}"' for p in unknown]
        if validation == "Strict":
            version = obj.get("apiVersion", "").rpartition("/")[2]
            raise ApiError(400, "BadRequest", f'{kind.kind} in version "{version}" cannot be handled as a '
                                              f'{kind.kind}: strict decoding error: ' + ", ".join(texts))
        for path in unknown:
            _drop(obj, path)
        if validation != "Ignore":
            self.warnings += texts

    def create(self, gvp: tuple, namespace: str | None, body: dict, *, manager: str, dry: bool = False,
               validation: str = "Warn") -> dict:
        obj = copy.deepcopy(body or {})
        meta = obj.setdefault("metadata", {})
        self._check_target(meta, namespace, None)
        for field in SERVER_META:
            meta.pop(field, None)
        kind = self._kind(gvp, obj)
        obj.setdefault("apiVersion", _api_version(gvp))
        obj.setdefault("kind", kind.kind)
        if _status_apart(gvp):
            obj.pop("status", None)
        self._check_fields(obj, kind, validation)
        self._prepare(kind, None, obj)
        key = (gvp, namespace, meta["name"])
        if key in self.store:
            raise ApiError(409, "AlreadyExists", f'{_what(gvp)} "{meta["name"]}" already exists',
                           {"name": meta["name"], "group": gvp[0], "kind": gvp[2]})
        meta["managedFields"] = ssa.update(None, obj, None, manager, _api_version(gvp), kind)
        return self._store_new(key, obj, dry)

    def replace(self, gvp: tuple, namespace: str | None, name: str, body: dict, *, manager: str,
                dry: bool = False, subresource: str | None = None, validation: str = "Warn") -> dict:
        key = (gvp, namespace, name)
        old = self.store.get(key)
        if old is None:
            raise _not_found(gvp, name)
        obj = copy.deepcopy(body or {})
        meta = obj.setdefault("metadata", {})
        self._check_target(meta, namespace, name)
        self._check_version(meta, old, gvp, name)
        return self._write(key, old, obj, manager=manager, dry=dry, subresource=subresource, validation=validation)

    def patch(self, gvp: tuple, namespace: str | None, name: str, patch: Any, content_type: str, *,
              manager: str, dry: bool = False, subresource: str | None = None, validation: str = "Warn") -> dict:
        key = (gvp, namespace, name)
        old = self.store.get(key)
        if old is None:
            raise _not_found(gvp, name)
        kind = self._kind(gvp, old)
        if "json-patch" in content_type:
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            new = _json_patch(old, patch)
        elif not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        elif "strategic-merge-patch" in content_type:
            if not kind.builtin:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               "accepted media types include: application/json-patch+json, "
                               "application/merge-patch+json, application/apply-patch+yaml")
            new = ssa.strategic_merge(copy.deepcopy(old), patch, kind)
        else:
            new = _merge(copy.deepcopy(old), patch)
        self._check_version((patch.get("metadata") or {}) if isinstance(patch, dict) else {}, old, gvp, name)
        return self._write(key, old, new, manager=manager, dry=dry, subresource=subresource, validation=validation)

    def apply(self, gvp: tuple, namespace: str | None, name: str, config: Any, *, manager: str,
              force: bool = False, dry: bool = False, subresource: str | None = None) -> tuple[int, dict]:
        """Server-side apply; (201, obj) when it created the object, (200, obj) otherwise."""
        if not isinstance(config, dict):
            raise ApiError(400, "BadRequest", "error decoding YAML: the applied configuration is not an object")
        for field in ("apiVersion", "kind"):
            if not config.get(field):
                raise ApiError(400, "BadRequest", f"Object '{field[0].upper() + field[1:]}' is missing in the "
                                                  f"applied configuration")
        config = copy.deepcopy(config)
        meta = config.setdefault("metadata", {})
        self._check_target(meta, namespace, name)
        key = (gvp, namespace, name)
        old = self.store.get(key)
        if old is not None:
            self._check_version(meta, old, gvp, name)
        for field in SERVER_META:
            meta.pop(field, None)
        if subresource != "status" and _status_apart(gvp):
            config.pop("status", None)
        kind = self._kind(gvp, config)
        unknown = unknown_fields(config, kind)
        if unknown:   # structured-merge-diff cannot type the patch: a 500 without a reason, as the server does
            raise ApiError(500, "", f"failed to create typed patch object ({namespace}/{name}; "
                                    f"{config['apiVersion']}, Kind={kind.kind}): {path_by_key(unknown[0], kind)}: "
                                    f"field not declared in schema")
        if kind.builtin:
            canonicalise_quantities(config, kind.kind)
        live = copy.deepcopy(old) if old else {}
        try:
            merged, managed = ssa.apply(live, config, (live.get("metadata") or {}).get("managedFields"), manager,
                                        _api_version(gvp), kind, force=force)
        except ssa.Conflicts as exc:
            raise ApiError(409, "Conflict", str(exc), {
                "name": name, "group": gvp[0], "kind": gvp[2],
                "causes": [{"reason": "FieldManagerConflict", "message": f"conflict with {c.who()}",
                            "field": ssa.path_text(c.path)} for c in exc.conflicts]}) from None
        merged["metadata"]["managedFields"] = managed
        if old is None:
            if _status_apart(gvp):
                merged.pop("status", None)
            merged["metadata"]["name"] = name
            self._prepare(kind, None, merged)
            return 201, self._store_new(key, merged, dry)
        return 200, self._write(key, old, merged, manager=manager, dry=dry, subresource=subresource, managed=managed)

    def _write(self, key: tuple, old: dict, obj: dict, *, manager: str, dry: bool, subresource: str | None = None,
               managed: list | None = None, with_status: bool = False, validation: str = "Warn") -> dict:
        """Store ``obj`` over ``old``: server metadata kept, status only through the status subresource."""
        gvp = key[0]
        kind = self._kind(gvp, obj, old)
        if subresource == "status":
            obj = {**copy.deepcopy(old), "status": copy.deepcopy(obj.get("status"))}
        elif not with_status and _status_apart(gvp):
            obj.pop("status", None)
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
        obj.setdefault("apiVersion", old.get("apiVersion"))
        obj.setdefault("kind", old.get("kind"))
        meta = obj.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "generation", "resourceVersion", "name", "namespace"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        if subresource != "status":
            self._check_fields(obj, kind, validation)
            self._prepare(kind, old, obj)
        if managed is None:
            managed = ssa.update(old, obj, old["metadata"].get("managedFields"), manager, _api_version(gvp), kind)
        meta["managedFields"] = managed
        if not managed:
            meta.pop("managedFields")
        if obj.get("spec") != old.get("spec") or \
                (not _status_apart(gvp) and _sans_meta(obj) != _sans_meta(old)):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        if obj != old and not dry:
            meta["resourceVersion"] = self._next_rv()
        if not dry:
            self.store[key] = obj
        return copy.deepcopy(obj)

    def delete(self, gvp: tuple, namespace: str | None, name: str, *, dry: bool = False) -> dict:
        key = (gvp, namespace, name)
        obj = self.store.get(key)
        if obj is None:
            raise _not_found(gvp, name)
        if not dry:
            del self.store[key]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": gvp[0], "kind": gvp[2], "uid": obj["metadata"].get("uid")}}


# === the emulator served from a thread, with helpers for tests ===============================================
PLURALS = {("apps", "v1", "Deployment"): "deployments", ("", "v1", "Service"): "services",
           ("networking.istio.io", "v1", "VirtualService"): "virtualservices",
           ("networking.istio.io", "v1", "DestinationRule"): "destinationrules",
           ("coordination.k8s.io", "v1", "Lease"): "leases", ("", "v1", "ConfigMap"): "configmaps",
           ("", "v1", "Secret"): "secrets",
           ("autoscaling", "v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
           # the GitOps appliers of the git target (tests/support/applier.py)
           ("argoproj.io", "v1alpha1", "Application"): "applications",
           ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"): "kustomizations",
           ("source.toolkit.fluxcd.io", "v1", "GitRepository"): "gitrepositories"}


def _gvp_of(obj: dict) -> tuple:
    group, _, version = obj["apiVersion"].rpartition("/")
    return (group, version, PLURALS[(group, version, obj["kind"])])


class Emulator:
    """The emulator served on 127.0.0.1 from a background thread with its own loop."""

    def __enter__(self) -> "Emulator":
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.thread.start()
        self._call(self._start())
        return self

    async def _start(self):
        self.emu = StrictEmulator()
        self.server = kmock.Server(self.emu, host="127.0.0.1")
        await self.server.__aenter__()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def __exit__(self, *exc) -> None:
        self._call(self.server.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _sync(self, fn, timeout: float = 30):
        async def run():
            return fn()
        return self._call(run(), timeout)

    # --- for tests --------------------------------------------------------
    def api_client(self) -> kubernetes.client.ApiClient:
        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.retries = False
        return kubernetes.client.ApiClient(cfg)

    @property
    def counts(self) -> collections.Counter:
        """Requests per (verb, plural, namespace); a dryRun=All write counts as ``dry-<verb>``."""
        return self._sync(lambda: collections.Counter(self.emu.counts))

    def reset_counts(self) -> None:
        self._sync(self.emu.counts.clear)

    def writes(self) -> int:
        """Writes that could change the cluster (dry runs are not writes)."""
        return sum(n for (verb, _, _), n in self.counts.items() if verb in ("create", "update", "patch", "delete"))

    def objects(self, plural: str | None = None) -> dict:
        return self._sync(lambda: {k: copy.deepcopy(v) for k, v in self.emu.store.of_plural(plural)})

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        def run():
            key = self.emu.store.find(plural, namespace, name)
            return None if key is None else copy.deepcopy(self.emu.store[key])
        return self._sync(run)

    def _key(self, plural: str, namespace: str, name: str) -> tuple:
        key = self.emu.store.find(plural, namespace, name)
        if key is None:
            raise KeyError(f"{plural}/{name} in {namespace}")
        return key

    def _edit(self, key: tuple, fn, manager: str) -> dict:
        """On the loop: an Update of the object at ``key`` by ``manager``, status included."""
        old = self.emu.store[key]
        new = copy.deepcopy(old)
        fn(new)
        return self.emu._write(key, old, new, manager=manager, dry=False, with_status=True)

    def edit(self, plural: str, namespace: str, name: str, fn, manager: str = "kubectl-edit") -> dict:
        """Change an object behind the controller's back (like ``kubectl edit``): an Update by ``manager``,
        defaulted and validated (raises :class:`ApiError`); status may change too."""
        return self._sync(lambda: self._edit(self._key(plural, namespace, name), fn, manager))

    def update_as(self, manager: str, plural: str, namespace: str, name: str, fn) -> dict:
        """An Update by another manager (``kube-controller-manager`` scaling for an HPA, for instance)."""
        return self.edit(plural, namespace, name, fn, manager=manager)

    def apply_as(self, manager: str, obj: dict, force: bool = False) -> dict:
        """Server-side apply of ``obj`` by another field manager (raises :class:`ApiError`, e.g. 409)."""
        gvp = _gvp_of(obj)
        meta = obj["metadata"]
        return self._sync(lambda: self.emu.apply(gvp, meta.get("namespace"), meta["name"], obj, manager=manager,
                                                 force=force)[1])

    def apply_all(self, manager: str, objs: list[dict], force: bool = False, timeout: float = 600) -> None:
        """:meth:`apply_as` of every object in one hop onto the loop (thousands of objects in seconds)."""
        def run():
            for obj in objs:
                meta = obj["metadata"]
                self.emu.apply(_gvp_of(obj), meta.get("namespace"), meta["name"], obj, manager=manager, force=force)
        self._sync(run, timeout)

    def put(self, obj: dict, manager: str = "kubectl-create") -> dict:
        """Create an object (e.g. one that Sluice does not own), as ``kubectl create`` would."""
        return self._sync(lambda: self.emu.create(_gvp_of(obj), obj["metadata"].get("namespace"), obj,
                                                  manager=manager))

    @staticmethod
    def _readiness(ready: bool = True, failed: bool = False):
        """An edit of a Deployment's status as kube-controller-manager reports its pods (up or not)."""
        def fn(dep):
            n = dep["spec"].get("replicas", 1)
            ok = n if ready else 0
            dep["status"] = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": n,
                             "updatedReplicas": ok, "readyReplicas": ok, "availableReplicas": ok}
            if failed:
                dep["status"]["conditions"] = [{"type": "Progressing", "status": "False",
                                                "reason": "ProgressDeadlineExceeded"}]
        return fn

    def set_ready(self, namespace: str, name: str, ready: bool = True, *, failed: bool = False) -> None:
        """Pretend the Deployment's pods came up (or not)."""
        self.edit("deployments", namespace, name, self._readiness(ready, failed), manager="kube-controller-manager")

    def all_ready(self, timeout: float = 600) -> None:
        """:meth:`set_ready` of every Deployment, in one hop onto the loop."""
        def run():
            for key, _ in self.emu.store.of_plural("deployments"):
                self._edit(key, self._readiness(), "kube-controller-manager")
        self._sync(run, timeout)

    def fail_next(self, verb: str, plural: str, code: int, n: int = 1, reason: str = "", message: str = "") -> None:
        reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 403: "Forbidden", 503: "ServiceUnavailable"}
        fault = {"verb": verb, "plural": plural, "code": code, "n": n, "reason": reason or reasons.get(code, "Error"),
                 "message": message or f"injected {code}"}
        self._sync(lambda: self.emu.faults.append(fault))


def kubeconfig(path, url: str):
    """A kubeconfig file pointing at the emulator (for subprocesses and CLIs)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "u"}}]}))
    return path
