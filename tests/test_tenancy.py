"""Tenancy: a release under one team's folder aiming at another team's
namespace or host is refused with file:line; the rest of the repo loads."""

from reconciler.core.loader import load_files
from tests.support.specs import dump, release_doc

SETTINGS = b"""apiVersion: sluice.dev/v1alpha1
kind: Settings
tenancy:
  folders:
    shop: {namespaces: [shop], hosts: ["*.shop.svc.cluster.local", shop.example.com]}
    bookinfo: {hosts: ["*.bookinfo.svc.cluster.local", bookinfo.example.com]}
"""


def files(*docs, settings=SETTINGS):
    out = {"sluice.yaml": settings}
    for d in docs:
        m = d["metadata"]
        out[f"releases/{m['namespace']}/{m['name']}.yaml"] = dump(d).encode()
    return out


def test_foreign_host_and_cross_namespace_route_are_refused():
    good = release_doc(name="cart", namespace="shop", service={"name": "cart", "port": 80, "hosts": ["cart", "shop.example.com"]})
    steal = release_doc(name="ratings", namespace="bookinfo",
                        service={"name": "ratings", "port": 80, "hosts": ["ratings", "shop.example.com"]})
    cross = release_doc(name="details", namespace="bookinfo",
                        service={"name": "details", "port": 80, "hosts": ["payments.shop.svc.cluster.local"]})
    out = load_files(files(good, steal, cross))
    assert [r.key for r in out.releases] == ["shop/cart"]
    msgs = [str(p) for p in out.problems]
    assert "releases/bookinfo/ratings.yaml:12:7: host shop.example.com is outside folder 'bookinfo''s allowed hosts" \
        " ['*.bookinfo.svc.cluster.local', 'bookinfo.example.com']" in msgs
    assert any(m.startswith("releases/bookinfo/details.yaml:11:7: host payments.shop.svc.cluster.local routes to "
                            "namespace 'shop'") for m in msgs)


def test_folder_without_allowance_is_refused():
    stray = release_doc(name="x", namespace="batch")
    out = load_files(files(stray, release_doc(name="cart", namespace="shop")))
    assert [r.key for r in out.releases] == ["shop/cart"]
    assert "folder 'batch' has no tenancy allowance" in str(out.problems[0])


def test_without_tenancy_only_cross_namespace_routes_are_refused():
    cross = release_doc(name="details", namespace="bookinfo",
                        service={"name": "details", "port": 80, "hosts": ["details", "payments.shop"]})
    out = load_files(files(cross, release_doc(name="cart", namespace="shop"),
                           settings=b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"))
    assert [r.key for r in out.releases] == ["shop/cart"]
    assert "routes to namespace 'shop'" in str(out.problems[0])
