"""``sluice resume RELEASE``: commit ``spec.paused: false`` (writes)."""
from reconciler.cli.steering import make

command = make("resume", "Resume RELEASE's rollout (commits spec.paused: false).", {"paused": False}, "resume")
