"""Ports and route options (core/routes.py): each port gets the routes Istio
gives its protocol, with the rollout's weights; spec.service.http and
spec.service.trafficPolicy reach every route and the DestinationRule; every
option renders objects valid under Istio's own CRD schemas (and the Service
under the official Kubernetes schema, strict); what Istio would refuse or
silently drop, and what Sluice owns, is refused at load time at file:line;
and the options survive a rollout on the API emulator."""

import pathlib

import kubernetes_validate
import pytest
import yaml

from reconciler.core import routes
from reconciler.core.loader import load_files
from reconciler.core.render import render
from tests.support import istio
from tests.support.cluster_env import Env, promoted
from tests.support.specs import dump, release, release_doc

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATH = "releases/bookinfo/reviews.yaml"
V1 = {"version": "v1", "image": "example.com/reviews:v1"}
V2 = {"version": "v2", "image": "example.com/reviews:v2"}
HOST = "reviews.bookinfo.svc.cluster.local"

GRPC = {"name": "grpc-api", "port": 9090, "appProtocol": "grpc"}
HTTP2 = {"name": "http2-web", "port": 8080}
TCP = {"name": "tcp-admin", "port": 7000}
TLS = {"name": "tls-db", "port": 5432, "sniHosts": ["reviews"]}   # within the VirtualService's hosts, as Istio requires
HTTP_OPTIONS = {
    "timeout": "5s",
    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure,unavailable,503",
                "retryRemoteLocalities": True},
    "headers": {"request": {"set": {"x-route": "sluice"}, "add": {"x-trace": "1"}, "remove": ["x-debug"]},
                "response": {"set": {"cache-control": "no-store"}, "remove": ["server"]}},
    "corsPolicy": {"allowOrigins": [{"exact": "https://shop.example.com"}, {"regex": "https://.*\\.example\\.com"}],
                   "allowMethods": ["GET", "POST"], "allowHeaders": ["content-type"], "maxAge": "24h",
                   "allowCredentials": True},
    "rewrite": {"authority": "reviews.internal"},
}
TRAFFIC_POLICY = {
    "connectionPool": {"tcp": {"maxConnections": 100, "connectTimeout": "30ms"},
                       "http": {"http2MaxRequests": 1000, "maxRequestsPerConnection": 10, "idleTimeout": "1h"}},
    "outlierDetection": {"consecutive5xxErrors": 7, "interval": "5m", "baseEjectionTime": "15m",
                         "maxEjectionPercent": 50},
    "loadBalancer": {"simple": "LEAST_REQUEST"},
    "tls": {"mode": "ISTIO_MUTUAL"},
}


def policy(port):
    """Every trafficPolicy field Sluice's tests exercise, with a port-level setting on ``port``."""
    return {**TRAFFIC_POLICY, "portLevelSettings": [{"port": {"number": port}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]}


def service(*ports, **extra):
    return {"name": "reviews", "ports": [dict(p) for p in ports], **extra}


def rollout(weight, step=1, phase="Progressing"):
    return {"phase": phase, "stable": dict(V1), "canary": dict(V2), "weight": weight, "step": step}


def kinds(objs):
    return {o["kind"]: o for o in objs}


def weights(route):
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}


def problems(doc):
    out = load_files({PATH: dump(doc).encode()})
    return [str(p) for p in out.problems]


def line_of(doc, needle, nth=0):
    """1-based line of the ``nth`` line of the dumped ``doc`` containing ``needle``."""
    lines = [i for i, line in enumerate(dump(doc).splitlines(), 1) if needle in line]
    return lines[nth]


def check_valid(objs):
    """Istio objects under Istio's v1 schema (nothing pruned), the rest under Kubernetes' (strict)."""
    for obj in objs:
        if obj["apiVersion"].startswith("networking.istio.io"):
            assert istio.errors(obj) == [], obj
            assert istio.pruned(obj) == [], obj
        else:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    vs = kinds(objs)["VirtualService"]
    for kind in ("http", "tcp", "tls"):
        for route in vs["spec"].get(kind) or []:
            assert sum(d.get("weight", 100) for d in route["route"]) == 100


# --- every option renders valid objects --------------------------------------------------------------

OPTION_CASES = {
    "shorthand with every http option": dict(service={"name": "reviews", "port": 9080, "http": HTTP_OPTIONS}),
    "shorthand with trafficPolicy": dict(service={"name": "reviews", "port": 9080, "trafficPolicy": policy(9080)}),
    "grpc + tcp + tls, all options": dict(service=service(GRPC, TCP, TLS, http=HTTP_OPTIONS,
                                                          trafficPolicy=policy(9090))),
    "two http ports": dict(service=service(GRPC, HTTP2, http={"timeout": "1s"})),
    "tcp only": dict(service=service(TCP, trafficPolicy={"connectionPool": {"tcp": {"maxConnections": 5}}})),
    "tls only": dict(service=service(TLS)),
    "abTesting with grpc and options": dict(strategy="abTesting", service=service(GRPC, TCP, http=HTTP_OPTIONS)),
    "blueGreen mirror with options": dict(strategy="blueGreen", service=service(GRPC, HTTP2, http=HTTP_OPTIONS)),
    "mirror with options": dict(strategy="mirror", service=service(HTTP2, TCP, http=HTTP_OPTIONS)),
    "named targetPort, appProtocol http2": dict(service=service({"name": "web", "port": 80, "targetPort": "http",
                                                                  "appProtocol": "kubernetes.io/h2c"})),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
@pytest.mark.parametrize("status", [None, rollout(0), rollout(10), rollout(50, 3), rollout(100, 4),
                                    {"phase": "Promoted", "stable": V2, "weight": 100}], ids=str)
def test_every_option_loads_and_renders_valid_istio_and_kubernetes(case, status):
    doc = release_doc(status=status, **OPTION_CASES[case])
    assert problems(doc) == []
    objs = render(release(doc))
    check_valid(objs)
    svc = doc["spec"]["service"]
    vs, dr = kinds(objs)["VirtualService"], kinds(objs)["DestinationRule"]
    for route in vs["spec"].get("http") or []:
        for key, value in (svc.get("http") or {}).items():
            assert route[key] == value   # on every HTTP route: the primary and the A/B, dark launch or preview one
    assert dr["spec"].get("trafficPolicy") == svc.get("trafficPolicy")
    assert all("trafficPolicy" not in s for s in dr["spec"]["subsets"])   # subsets inherit the top level


def test_sluice_owned_fields_win_over_options_even_unchecked():
    """The renderer never lets an option replace a route's name, match, route or mirror (the loader
    refuses them; render does not rely on that)."""
    doc = release_doc(strategy="blueGreen", status=rollout(0),
                      service={"name": "reviews", "port": 9080, "http": {"timeout": "2s"}})
    doc["spec"]["service"]["http"].update(route=[], name="mine", match=[], mirror={"host": "evil"}, fault={})
    vs = kinds(render(release(doc)))["VirtualService"]
    assert [r["name"] for r in vs["spec"]["http"]] == ["match", "primary"]
    assert all(r["route"] and r["timeout"] == "2s" and "fault" not in r for r in vs["spec"]["http"])
    assert vs["spec"]["http"][1]["mirror"]["subset"] == "v2"


def test_service_ports_render_name_and_app_protocol_as_written():
    doc = release_doc(service=service(GRPC, {"name": "http2", "port": 8080, "targetPort": 8081}, TCP, TLS))
    svc = kinds(render(release(doc)))["Service"]
    assert svc["spec"]["ports"] == [
        {"name": "grpc-api", "port": 9090, "targetPort": 9090, "appProtocol": "grpc"},
        {"name": "http2", "port": 8080, "targetPort": 8081},
        {"name": "tcp-admin", "port": 7000, "targetPort": 7000},
        {"name": "tls-db", "port": 5432, "targetPort": 5432},
    ]


def test_the_shorthand_port_is_one_port_named_http():
    objs = render(release(service={"name": "reviews", "port": 9080, "targetPort": 8080}))
    assert kinds(objs)["Service"]["spec"]["ports"] == [{"name": "http", "port": 9080, "targetPort": 8080}]
    route = kinds(objs)["VirtualService"]["spec"]["http"][0]
    assert route["route"][0]["destination"]["port"] == {"number": 9080}
    assert set(kinds(objs)["VirtualService"]["spec"]) == {"hosts", "gateways", "http"}


@pytest.mark.parametrize("weight,step", [(0, 1), (10, 1), (20, 2), (50, 3), (100, 4)])
def test_grpc_http2_tcp_and_tls_ports_carry_the_same_weights_at_each_step(weight, step):
    doc = release_doc(status=rollout(weight, step), service=service(GRPC, HTTP2, TCP, TLS))
    spec = kinds(render(release(doc)))["VirtualService"]["spec"]
    expected = {k: v for k, v in {"v1": 100 - weight, "v2": weight}.items() if v}
    (http,) = spec["http"]
    assert weights(http) == expected
    # two HTTP ports (gRPC, HTTP/2): one route, no destination port, so Istio keeps each request's port
    assert all("port" not in d["destination"] for d in http["route"])
    (tcp,), (tls,) = spec["tcp"], spec["tls"]
    assert tcp["match"] == [{"port": 7000}] and weights(tcp) == expected
    assert tls["match"] == [{"port": 5432, "sniHosts": ["reviews"]}] and weights(tls) == expected
    assert {d["destination"]["port"]["number"] for d in tcp["route"]} == {7000}
    assert {d["destination"]["port"]["number"] for d in tls["route"]} == {5432}
    assert {d["destination"]["host"] for r in (http, tcp, tls) for d in r["route"]} == {HOST}


def test_one_grpc_port_routes_to_its_port_and_mirrors_to_it():
    doc = release_doc(strategy="mirror", status=rollout(0), service=service(GRPC, TCP))
    spec = kinds(render(release(doc)))["VirtualService"]["spec"]
    (http,) = spec["http"]
    assert http["route"] == [{"destination": {"host": HOST, "subset": "v1", "port": {"number": 9090}}, "weight": 100}]
    assert http["mirror"] == {"host": HOST, "subset": "v2", "port": {"number": 9090}}
    assert "mirror" not in spec["tcp"][0]   # Istio mirrors HTTP only: the TCP port keeps its weights


def test_a_release_without_http_ports_has_no_http_routes():
    spec = kinds(render(release(status=rollout(30, 2), service=service(TCP, TLS))))["VirtualService"]["spec"]
    assert "http" not in spec and len(spec["tcp"]) == 1 and len(spec["tls"]) == 1


def test_live_weights_of_a_tcp_or_tls_only_release_are_read_back_from_its_routes():
    """A lost status is rebuilt from live objects (core/observed): the weights of a release
    without HTTP ports are on its tcp/tls routes, not 0."""
    from reconciler.core import observed
    for ports in ((TCP,), (TLS,), (TCP, TLS)):
        rel = release(status=rollout(30, 2), service=service(*ports))
        live = {v["version"]: v["weight"] for v in observed.running(rel, render(rel))}
        assert sorted(live.values()) == [30, 70], (ports, live)


@pytest.mark.parametrize("port,kind", [
    ({"name": "grpc", "port": 1}, "http"), ({"name": "grpc-web-ui", "port": 1}, "http"),
    ({"name": "http2", "port": 1}, "http"), ({"name": "HTTP-x", "port": 1}, "http"),
    ({"name": "api", "port": 1, "appProtocol": "grpc-web"}, "http"),
    ({"name": "api", "port": 1, "appProtocol": "kubernetes.io/h2c"}, "http"),
    ({"name": "mysql", "port": 1}, "tcp"), ({"name": "redis-cache", "port": 1}, "tcp"),
    ({"name": "https", "port": 1}, "tls"), ({"name": "db", "port": 1, "appProtocol": "tls"}, "tls"),
    ({"name": "tcp-x", "port": 1, "appProtocol": "http"}, "http"),   # appProtocol wins, as in Istio
    ({"name": "web", "port": 1}, None), ({"name": "dns", "port": 1, "protocol": "UDP"}, None),
])
def test_protocol_selection_follows_istio(port, kind):
    assert routes.route_kind(port) == kind


def test_istio_http_route_fields_are_each_passed_through_or_refused():
    """A field a newer Istio adds to HTTPRoute fails here until someone decides whether Sluice passes it."""
    fields = set(routes.istio_schema("VirtualService")["properties"]["spec"]["properties"]["http"]["items"]
                 ["properties"])
    assert fields == set(routes.HTTP_OPTIONS) | set(routes.REFUSED_HTTP)


def test_the_packaged_istio_schemas_are_the_test_fixture():
    shipped = ROOT / "schemas" / routes.ISTIO_SCHEMAS
    assert shipped.read_bytes() == (ROOT / "tests" / "fixtures" / "istio" / "networking-schemas.json").read_bytes()


@pytest.mark.parametrize("text,seconds", [("5s", 5), ("1.5s", 1.5), ("300ms", 0.3), ("1h30m", 5400), ("2us", 2e-6),
                                          ("0", 0.0), ("5", None), ("1d", None), ("s", None), ("", None), (5, None)])
def test_go_durations(text, seconds):
    assert routes.go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


# --- refused at file:line ------------------------------------------------------------------------------

def svc_doc(svc, strategy="canary"):
    return release_doc(strategy=strategy, service=svc)


def test_fault_injection_is_refused_at_its_key():
    doc = svc_doc({"name": "reviews", "port": 9080, "http": {"timeout": "1s", "fault": {"abort": {
        "httpStatus": 503, "percentage": {"value": 10}}}}})
    assert problems(doc) == [f"{PATH}:{line_of(doc, 'fault:')}:7: spec.service.http.fault: fault injection stays "
                             "off in Sluice's routes: it would fail the requests the analysis judges (inject faults "
                             "in a separate VirtualService of a test namespace)"]


@pytest.mark.parametrize("key,value", [("route", []), ("match", [{"uri": {"prefix": "/"}}]), ("name", "x"),
                                       ("mirror", {"host": "x"}), ("mirrorPercentage", {"value": 1}),
                                       ("redirect", {"uri": "/x"}), ("directResponse", {"status": 503}),
                                       ("delegate", {"name": "x"})])
def test_what_sluice_owns_or_what_bypasses_the_versions_is_refused(key, value):
    doc = svc_doc({"name": "reviews", "port": 9080, "http": {key: value}})
    (problem,) = problems(doc)
    assert problem.startswith(f"{PATH}:{line_of(doc, 'http:') + 1}:7: spec.service.http.{key}: ")


@pytest.mark.parametrize("strategy,what", [
    ("mirror", "mirror shadows traffic"), ("abTesting", "abTesting routes by header/cookie match"),
    ("darkLaunch", "darkLaunch routes by header/cookie match"),
    ("blueGreen", "blueGreen preview routes by header/cookie match"),
])
def test_http_only_strategies_are_refused_without_an_http_port(strategy, what):
    doc = svc_doc(service(TCP, TLS), strategy)
    assert problems(doc) == [f"{PATH}:{line_of(doc, strategy + ':')}:5: {what}, which Istio does for HTTP only, "
                             "and this release has no HTTP port (http, http2, grpc, grpc-web): use canary, or add "
                             "an HTTP port"]


def test_blue_green_without_match_or_mirror_runs_on_tcp():
    doc = svc_doc(service(TCP), "blueGreen")
    doc["spec"]["strategy"]["blueGreen"] = {"iterations": 2, "interval": "1m"}
    assert problems(doc) == []


def test_a_tls_port_needs_sni_hosts():
    doc = svc_doc(service({"name": "tls-db", "port": 5432}))
    assert problems(doc) == [f"{PATH}:{line_of(doc, '- name: tls-db')}:7: tls port 'tls-db' needs sniHosts: Istio "
                             "routes TLS by the server name the client asks for; each must be one of the release's hosts "
                             "(spec.service.hosts) or within one, as Istio's validation requires"]


def test_unknown_traffic_policy_keys_are_refused_where_the_api_server_would_drop_them():
    doc = svc_doc({"name": "reviews", "port": 9080, "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnection": 10}}, "circuitBreaker": {}}})
    assert problems(doc) == [
        f"{PATH}:{line_of(doc, 'maxConnection:')}:11: unknown field 'maxConnection' in "
        "spec.service.trafficPolicy.connectionPool.tcp (Istio's DestinationRule trafficPolicy schema)",
        f"{PATH}:{line_of(doc, 'circuitBreaker:')}:7: unknown field 'circuitBreaker' in spec.service.trafficPolicy "
        "(Istio's DestinationRule trafficPolicy schema)",
    ]


@pytest.mark.parametrize("block,needle,message", [
    ({"http": {"timeout": "5"}}, "timeout:",
     "spec.service.http.timeout: '5' is not a duration of at least 1ms (e.g. 500ms, 5s, 1m30s) "
     "(Istio's VirtualService HTTPRoute schema)"),
    ({"http": {"retries": {"attempts": "three"}}}, "attempts:",
     "spec.service.http.retries.attempts: 'three' is not of type 'integer' (Istio's VirtualService HTTPRoute schema)"),
    ({"http": {"retries": {"attempts": 2, "retryOn": "5xx,flaky"}}}, "retryOn:",
     "spec.service.http.retries.retryOn: unknown retry condition 'flaky' (use e.g. 5xx, gateway-error, "
     "connect-failure, refused-stream, unavailable, or an HTTP status like 503)"),
    ({"http": {"corsPolicy": {"unmatchedPreflights": "DROP"}}}, "unmatchedPreflights:",
     "spec.service.http.corsPolicy.unmatchedPreflights: 'DROP' is not one of ['UNSPECIFIED', 'FORWARD', 'IGNORE'] "
     "(Istio's VirtualService HTTPRoute schema)"),
    ({"http": {"headers": {"request": {"set": {"bad header": "1"}}}}}, "bad header:",
     "'bad header' is not an HTTP header name (pseudo-headers such as :authority are set through rewrite)"),
    ({"http": {"timeoutt": "1s"}}, "timeoutt:",
     "unknown field 'timeoutt' in spec.service.http (Istio's VirtualService HTTPRoute schema)"),
    ({"trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}, "simple:",
     "spec.service.trafficPolicy.loadBalancer.simple: 'FASTEST' is not one of ['UNSPECIFIED', 'LEAST_CONN', "
     "'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', 'LEAST_REQUEST'] (Istio's DestinationRule trafficPolicy schema)"),
    ({"trafficPolicy": {"outlierDetection": {"interval": "0.1ms"}}}, "interval: 0.1ms",
     "spec.service.trafficPolicy.outlierDetection.interval: '0.1ms' is not a duration of at least 1ms "
     "(e.g. 500ms, 5s, 1m30s) (Istio's DestinationRule trafficPolicy schema)"),
    ({"trafficPolicy": {"portLevelSettings": [{"port": {"number": 81}}]}}, "number:",
     "port 81 is not a port of this release (9080)"),
])
def test_istio_schema_errors_at_file_line(block, needle, message):
    doc = svc_doc({"name": "reviews", "port": 9080, **block})
    (problem,) = problems(doc)
    line = line_of(doc, needle)
    assert problem.startswith(f"{PATH}:{line}:") and problem.endswith(f": {message}"), problem


@pytest.mark.parametrize("svc,needle,message", [
    ({"port": 80, "ports": [TCP]}, "ports:", "set port (one HTTP port, named http) or ports, not both"),
    ({"name": "reviews"}, "service:", "spec.service needs port (one HTTP port, named http) or ports"),
    ({"ports": [TCP], "targetPort": 80}, "targetPort:", "with ports, each port sets its own targetPort"),
    ({"ports": [{"name": "web", "port": 80}]}, "- name: web",
     "cannot tell the protocol of port 'web': name it <protocol>[-<suffix>] (http, http2, grpc, grpc-web, tcp, tls, "
     "https, mongo, mysql, redis) or set appProtocol"),
    ({"ports": [{"name": "grpc", "port": 80, "appProtocol": "tcp"}]}, "appProtocol:",
     "port 'grpc' is named for grpc (http routes) but appProtocol 'tcp' gives it tcp routes (Istio follows "
     "appProtocol): make them agree"),
    ({"ports": [GRPC, {**TCP, "name": "grpc-api"}]}, "- name: grpc-api", "port name 'grpc-api' is used twice"),
    ({"ports": [GRPC, {**TCP, "port": 9090}]}, "port: 9090", "port 9090/TCP is used twice"),
    ({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}, "protocol:",
     "Istio routes TCP ports only: UDP traffic would reach every version, whatever the rollout's weights"),
    ({"ports": [{**TCP, "sniHosts": ["a"]}]}, "sniHosts:", "sniHosts match TLS traffic: set them on a tls port only"),
])
def test_port_problems_at_file_line(svc, needle, message):
    doc = svc_doc({"name": "reviews", **svc})
    (problem,) = problems(doc)
    nth = 1 if needle in ("- name: grpc-api", "port: 9090") else 0
    assert problem.startswith(f"{PATH}:{line_of(doc, needle, nth)}:") and problem.endswith(f": {message}"), problem


@pytest.mark.parametrize("svc,needle,message", [
    # each mirrors a rule of Istio's validation webhook (istio/istio pkg/config/validation) the CRD schema lacks
    ({"ports": [GRPC, {**TLS, "sniHosts": ["db.example.com"]}]}, "- db.example.com",
     "SNI host 'db.example.com' is not within the VirtualService's hosts (reviews): Istio refuses it; add it to "
     "spec.service.hosts or match one of them"),
    ({"ports": [GRPC, {**TLS, "sniHosts": ["db.example.com"]}], "hosts": ["reviews", "*.example.com"]}, None, None),
    ({"port": 9080, "http": {"timeout": "1001us"}}, "timeout:",
     "spec.service.http.timeout: '1001us': Istio supports durations to ms precision only (e.g. 1ms, 1500ms) "
     "(Istio's VirtualService HTTPRoute schema)"),
    ({"port": 9080, "http": {"timeout": "1.0005s"}}, "timeout:", "only (e.g. 1ms, 1500ms) (Istio's VirtualService "
                                                                 "HTTPRoute schema)"),
    ({"port": 9080, "http": {"retries": {"attempts": 2, "perTryTimeout": "2.5ms"}}}, "perTryTimeout:", "ms precision"),
    ({"port": 9080, "trafficPolicy": {"outlierDetection": {"interval": "1500us"}}}, "interval:", "ms precision"),
    ({"port": 9080, "http": {"timeout": "3000000h"}}, "timeout:", "is longer than Go's int64 nanoseconds hold (about 2562047h) (Istio's VirtualService HTTPRoute schema)"),
    ({"port": 9080, "http": {"retries": {"attempts": -1}}}, "attempts:",
     "retries.attempts -1: attempts cannot be negative"),
    ({"port": 9080, "http": {"retries": {"attempts": 0, "retryOn": "5xx"}}}, "attempts:",
     "retries with attempts 0 (retries off) cannot set perTryTimeout, retryOn or retryRemoteLocalities: Istio refuses "
     "the policy; set attempts, or remove retries"),
    ({"port": 9080, "http": {"retries": {"attempts": 2, "retryOn": "5xx, connect-failure"}}}, "retryOn:",
     "retries.retryOn '5xx, connect-failure': no spaces around the commas (Istio reads ' connect-failure' as an "
     "unknown policy)"),
    ({"port": 9080, "http": {"rewrite": {}}}, "rewrite:", "rewrite must set uri, uriRegexRewrite or authority"),
    ({"port": 9080, "http": {"rewrite": {"uri": "/x", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}}},
     "uriRegexRewrite:", "rewrite may set uri or uriRegexRewrite, not both"),
    ({"port": 9080, "http": {"corsPolicy": {"allowOrigins": [{"exact": "https://a"}], "allowMethods": ["GET", "FETCH"]}}},
     "FETCH", "corsPolicy.allowMethods: 'FETCH' is not an HTTP method (CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, "
              "POST, PUT, TRACE or *)"),
])
def test_what_istios_validation_webhook_refuses_is_refused_at_file_line(svc, needle, message):
    doc = svc_doc({"name": "reviews", **svc})
    if needle is None:
        assert problems(doc) == []
        return
    (problem,) = problems(doc)
    assert problem.startswith(f"{PATH}:{line_of(doc, needle)}:") and message in problem, problem


def test_route_options_are_refused_outside_the_mesh():
    doc = svc_doc({"name": "reviews", "port": 9080, "http": {"timeout": "1s"}}, "rolling")
    assert problems(doc) == [f"{PATH}:{line_of(doc, 'http:')}:5: spec.service.http configures the Istio routes; "
                             "a rolling release has none (it runs outside the mesh)"]


def test_one_bad_route_option_never_stops_the_other_releases():
    bad = release_doc(name="ratings", service={"name": "ratings", "port": 9080, "http": {"fault": {}}})
    good = release_doc(service=service(GRPC, http={"timeout": "1s"}))
    out = load_files({f"releases/bookinfo/{d['metadata']['name']}.yaml": dump(d).encode() for d in (bad, good)})
    assert [r.key for r in out.releases] == ["bookinfo/reviews"]
    assert list(out.invalid) == ["releases/bookinfo/ratings.yaml"]


def test_the_sample_repo_shows_a_grpc_release():
    from reconciler.adapters.files import read_tree
    loaded = load_files(read_tree(ROOT / "sample-repo"))
    rel = loaded.by_key()["shop/inventory"]
    assert [routes.protocol_of(p) for p in rel.ports] == ["grpc", "tcp"]
    objs = render(rel, loaded.settings)
    check_valid(objs)
    assert kinds(objs)["VirtualService"]["spec"]["http"][0]["timeout"] == "3s"
    assert kinds(objs)["DestinationRule"]["spec"]["trafficPolicy"]["outlierDetection"]


# --- on the API emulator, through a rollout --------------------------------------------------------------

def test_route_options_survive_a_rollout_and_follow_git(tmp_path, emu):
    doc = promoted(service=service(GRPC, TCP, http={"timeout": "5s", "retries": {"attempts": 2}},
                                   trafficPolicy={"outlierDetection": {"consecutive5xxErrors": 3}}))
    env = Env(tmp_path, emu, [doc])

    def live():
        vs = emu.get("virtualservices", "bookinfo", "reviews")["spec"]
        dr = emu.get("destinationrules", "bookinfo", "reviews")["spec"]
        return vs, dr

    seen = []
    for _ in range(10):   # the whole rollout, bounded
        env.tick()
        vs, dr = live()
        http, tcp = vs["http"][0], vs["tcp"][0]
        assert http["timeout"] == "5s" and http["retries"] == {"attempts": 2}
        assert dr["trafficPolicy"] == {"outlierDetection": {"consecutive5xxErrors": 3}}
        assert weights(tcp) == weights(http)   # the TCP port moves with the HTTP routes
        seen.append(weights(http))
        if env.status().get("phase") == "Promoted" and env.status()["stable"]["version"] == "v2":
            break
    assert {"v1": 90, "v2": 10} in seen and seen[-1] == {"v2": 100}
    svc = emu.get("services", "bookinfo", "reviews")["spec"]["ports"]
    assert [(p["name"], p["port"], p.get("appProtocol")) for p in svc] == [("grpc-api", 9090, "grpc"),
                                                                          ("tcp-admin", 7000, None)]

    env.tick()   # the retired v1 goes (its Deployment and subset)
    assert emu.get("deployments", "bookinfo", "reviews-v1") is None
    emu.reset_counts()
    env.tick()
    assert emu.writes() == 0   # a pass over unchanged options writes nothing

    def change(text):
        data = yaml.safe_load(text)
        data["spec"]["service"]["http"] = {"timeout": "9s", "corsPolicy": {"allowOrigins": [{"exact": "https://a"}]}}
        data["spec"]["service"].pop("trafficPolicy")
        return dump(data)

    env.edit("reviews", change, "reviews: new route options")
    env.tick()
    vs, dr = live()
    assert vs["http"][0]["timeout"] == "9s" and vs["http"][0]["corsPolicy"] == {"allowOrigins": [{"exact": "https://a"}]}
    assert "retries" not in vs["http"][0]   # an option removed in git leaves the live object
    assert "trafficPolicy" not in dr
