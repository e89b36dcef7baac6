"""Sluice: a GitOps progressive-delivery controller for Kubernetes and Istio.

Layout (dependencies point down only):

- ``reconciler.core``: pure logic: load and validate release specs, render
  desired objects, diff, decide rollout steps, build plans and commit
  messages. Imports no git, kubernetes, clock or network.
- ``reconciler.adapters``: the outside world behind small interfaces: the git
  repo, the cluster, Prometheus, notifications, triggers.
- ``reconciler.controller``: the reconcile pass wiring adapters to the core.
- ``reconciler.cli``: the thin ``sluice`` command line.
"""

__version__ = "0.1.0"
