"""``sluice abort RELEASE``: commit ``spec.abort: true`` (writes)."""
from reconciler.cli.steering import make

command = make("abort", "Roll RELEASE's rollout back (commits spec.abort: true).", {"abort": True}, "abort")
