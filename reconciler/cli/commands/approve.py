"""``sluice approve RELEASE``: commit ``spec.approve: <target version>`` (writes)."""
from reconciler.cli.steering import make

command = make("approve", "Approve RELEASE's waiting gates for its target version (commits spec.approve).",
               lambda rel: {"approve": rel.target["version"]}, "approve")
