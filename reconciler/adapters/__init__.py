"""Adapters: each outside system (git, the Kubernetes API, Prometheus, HTTP
notifications, triggers) behind a small interface. Library exceptions are
translated here into ``reconciler.errors`` with the original chained."""
