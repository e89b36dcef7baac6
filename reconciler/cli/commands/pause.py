"""``sluice pause RELEASE``: commit ``spec.paused: true`` (writes)."""
from reconciler.cli.steering import make

command = make("pause", "Freeze RELEASE's rollout where it is (commits spec.paused: true).", {"paused": True}, "pause")
