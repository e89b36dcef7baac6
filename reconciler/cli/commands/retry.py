"""``sluice retry RELEASE``: bump ``spec.retry`` and clear ``spec.abort`` (writes)."""
from reconciler.cli.steering import make

command = make("retry", "Retry RELEASE's rolled-back target (bumps spec.retry, clears spec.abort).",
               lambda rel: {"retry": int(rel.spec.get("retry", 0)) + 1, "abort": False}, "retry")
