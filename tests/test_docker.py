"""Build the image and run ``sluice --version`` in it with a read-only root
filesystem, where a Docker daemon can be started (CI may start one on a
private socket with a locally made base image: debootstrap a Debian rootfs and
`docker import` it, since no registry is reachable).
Opt in with SLUICE_DOCKER_TEST=1 and SLUICE_DOCKER_BASE=<local image>;
otherwise skipped, saying why."""

import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

reason = None
if os.environ.get("SLUICE_DOCKER_TEST") != "1":
    reason = "set SLUICE_DOCKER_TEST=1 (and SLUICE_DOCKER_BASE to a local base image) to build the Docker image"
elif not shutil.which("dockerd") or not shutil.which("docker"):
    reason = "no dockerd on this machine (apt-get install docker.io)"


@pytest.mark.skipif(reason is not None, reason=reason or "")
@pytest.mark.timeout(1800)
def test_image_builds_and_runs_read_only():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="sluice-docker-"))
    sock = f"unix://{tmp}/docker.sock"
    daemon = subprocess.Popen(["dockerd", f"--host={sock}", f"--data-root={tmp}/data", f"--exec-root={tmp}/exec",
                               f"--pidfile={tmp}/docker.pid", "--bridge=none", "--iptables=false", "--ip6tables=false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "DOCKER_HOST": sock}
    try:
        for _ in range(100):
            if subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        base = os.environ.get("SLUICE_DOCKER_BASE", "python:3.11-slim")
        subprocess.run(["docker", "build", "--network=host", "--build-arg", f"BASE_IMAGE={base}", "-t", "sluice:test",
                        str(REPO)], env=env, check=True, timeout=1500)
        out = subprocess.run(["docker", "run", "--rm", "--read-only", "--network=none", "sluice:test", "--version"],
                             env=env, capture_output=True, text=True, check=True, timeout=120)
        assert out.stdout.startswith("sluice, version")
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
