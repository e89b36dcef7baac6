"""The old import path of the single-Prometheus API, for callers outside this
repository (scripts, plugins): the providers live in ``reconciler.adapters.metrics``
and nothing in Sluice itself imports from here."""

from reconciler.adapters.metrics import run_checks
from reconciler.adapters.metrics.prometheus import Prometheus, from_settings

__all__ = ["Prometheus", "from_settings", "run_checks"]
