"""Sluice's exception tree, split by what the caller can do next.

    SluiceError
    ├── PermanentError        a human must act (bad spec, 403, bad credential); do not retry
    │   ├── SpecError         a release or settings file is invalid
    │   ├── TrustError        a commit is not signed by a trusted key
    │   └── ConfigError       controller settings are wrong
    └── TemporaryError        retry later with backoff (network, 5xx, 429, push rejected)
        ├── GitError
        ├── ClusterError
        └── MetricsError

Adapters translate library exceptions into these at their boundary and chain
the original (``raise GitError(...) from exc``). Messages never carry secrets.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""


class PermanentError(SluiceError):
    """Retrying will not help: a human must change something."""


class TemporaryError(SluiceError):
    """May succeed later: retry with backoff."""


class SpecError(PermanentError):
    """A release or settings file is invalid."""


class TrustError(PermanentError):
    """The branch tip (or a commit under it) is not signed by a trusted key."""


class ConfigError(PermanentError):
    """The controller's own settings are wrong."""


class GitError(TemporaryError):
    """A git operation failed (fetch, push, clone)."""


class GitAuthError(PermanentError):
    """The git remote refused our credentials, or the branch does not exist."""


class ClusterError(TemporaryError):
    """The Kubernetes API failed in a way worth retrying."""


class ClusterForbidden(PermanentError):
    """The Kubernetes API answered 403: RBAC lacks a verb on a resource."""


class MetricsError(TemporaryError):
    """The metrics provider is unreachable or the query failed."""
