"""A config-only change through the kubernetes target (emulator): the new
revision runs beside the old with its own ConfigMap; the old revision's
ConfigMap stays until it is scaled down, then it is pruned with it."""

import pytest
import yaml

from tests.support.gitserver import human_edit, run
from tests.support.kube_emulator import Emulator
from tests.test_cluster import Env, spec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def emu():
    with Emulator() as e:
        yield e


def status(env):
    return yaml.safe_load(run("show", "main:releases/bookinfo/reviews.yaml", cwd=env.bare))["status"]


def configmaps(emu):
    return {v["metadata"]["name"]: v.get("data") for v in emu.objects("configmaps").values()
            if v["metadata"]["name"].startswith("reviews-config-")}


def test_config_change_rolls_out_with_its_own_configmap_and_the_old_one_is_pruned_after(tmp_path, emu):
    doc = spec(target={"version": "v1", "image": "example.com/reviews:v1"}, config={"data": {"MODE": "safe"}})
    env = Env(tmp_path, emu, [doc])
    env.tick()                                   # adopt v1 (status written before revisions)
    (old_cm,) = configmaps(emu)

    def edit(w):
        p = w / "releases/bookinfo/reviews.yaml"
        p.write_text(p.read_text().replace("MODE: safe", "MODE: fast", 1))
    human_edit(env.human, edit, "reviews: MODE=fast")
    seen = []
    for _ in range(10):
        env.tick()
        st = status(env)
        if st["phase"] == "Progressing" and st["weight"]:
            new = st["canary"]["revision"]
            cms = configmaps(emu)
            assert old_cm in cms and len(cms) == 2 and cms[old_cm] == {"MODE": "safe"}
            seen.append(env.weights())
        if st["phase"] == "Promoted" and not st.get("retiring"):
            break
    assert new.startswith("v1-") and seen == [{"v1": 90, new: 10}, {"v1": 80, new: 20}, {"v1": 50, new: 50}]
    assert env.weights() == {new: 100}
    (cm,) = configmaps(emu)                      # the old revision is gone, and its ConfigMap with it
    assert cm != old_cm and configmaps(emu)[cm] == {"MODE": "fast"}
    deps = {v["metadata"]["name"] for v in emu.objects("deployments").values()}
    assert deps == {f"reviews-{new}"}
    emu.reset_counts()
    env.tick(seconds=3600)                       # nothing changed: no write, no drift
    assert emu.writes() == 0
