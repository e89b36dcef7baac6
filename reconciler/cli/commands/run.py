"""``sluice run``: the controller. Every flag is also a ``SLUICE_*`` variable
(docs/operations.md lists them with units and defaults).

    sluice run --repo URL|PATH [--branch main] [--target kubernetes|git] [--once]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import click

from reconciler import logs
from reconciler.adapters.applier import Appliers, ref_of as applier_ref
from reconciler.adapters.commitstatus import configure as configure_commit_status
from reconciler.adapters.gitrepo import Credentials, GitRepo, Identity
from reconciler.adapters.metrics.prometheus import Prometheus
from reconciler.adapters.notify import Notifications, Notifier, close_all
from reconciler.adapters.trust import TrustPolicy, signing_config
from reconciler.cli.policyfile import read_policy
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
from reconciler.core.durations import parse_duration
from reconciler.runtime import Metrics, Runner, Server, WebhookConfig, watch_path


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _opt(*names, env, **kw):
    return click.option(*names, envvar=f"SLUICE_{env}", show_envvar=True, show_default=True, **kw)


def _secret(value: str | None, file: str | None) -> str | None:
    if file:
        return Path(file).read_text().strip()
    return value or None


def build_target(target: str, kubeconfig: str | None, context: str | None, *, instance: str = "sluice",
                 inventory_namespace: str = "sluice-system", repo: GitRepo | None = None,
                 appliers: Appliers | None = None, notes: list[str] | None = None):
    """The controller's target. ``notes`` collects what ``sluice run`` says at start-up."""
    if target == "git":
        return build_git_target(kubeconfig, context, repo=repo, appliers=appliers or Appliers(), notes=notes)
    from reconciler.adapters.cluster import Cluster, KubernetesTarget
    return KubernetesTarget(Cluster.connect(kubeconfig=kubeconfig, context=context), instance=instance,
                            inventory_namespace=inventory_namespace)


def build_git_target(kubeconfig: str | None, context: str | None, *, repo: GitRepo | None, appliers: Appliers,
                     notes: list[str] | None = None) -> GitTarget:
    """The git target with read-only cluster access where there is some: ``--kubeconfig``/
    ``--context``, or in-cluster. Asked for, it is used for the life of the process:
    a cluster that does not answer fails the pass (nothing is decided blind) until
    it does, never turns readiness off; a kubeconfig that cannot be loaded refuses
    to start. Not asked for: readiness is not protected (said at start-up and in
    every rollout commit, ``readinessChecked: false``)."""
    from reconciler.adapters.cluster import Cluster
    from reconciler.errors import ClusterError, ClusterForbidden
    notes = notes if notes is not None else []
    cluster, why = None, "no --kubeconfig or --context, and not running in a cluster"
    if kubeconfig or context:
        try:
            cluster = Cluster.connect(kubeconfig=kubeconfig, context=context)
        except ClusterError as exc:
            raise click.UsageError(f"--target git: cannot use the cluster asked for: {exc}") from None
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):   # set in every pod: a cluster only if its config loads
        try:
            cluster = Cluster.connect()
        except ClusterError as exc:
            why = f"in a pod without a usable service account ({exc})"
    if cluster is None and appliers.default is not None:
        raise click.UsageError(f"--applier {appliers.default.kind} needs read access to the cluster that runs it "
                               f"(--kubeconfig, --context or in-cluster)")
    if cluster is not None:
        try:   # one quick look, no retries: say so at once when it does not answer
            Cluster(cluster.api, attempts=1)._call("get", "version", "-", "GET", "/version")
        except (ClusterError, ClusterForbidden) as exc:
            notes.append(f"target git: the cluster does not answer yet ({exc}); passes fail until it does")
    else:
        notes.append(f"target git without cluster access: {why}")
    target = GitTarget(cluster, repo=repo, appliers=appliers)
    notes.append(f"target git: {target.describe()}")
    return target


def _sharder(n: int, leader_election: bool, kubeconfig: str | None, context: str | None, namespace: str,
             name: str, duration: str, identity: str):
    """``--shards N``: the Leases of this replica's shards (docs/operations.md "Shards")."""
    from reconciler.adapters.cluster import Cluster
    from reconciler.adapters.shards import Sharder
    from reconciler.errors import ClusterError
    if n < 1:
        raise click.BadParameter(f"must be at least 1, not {n}", param_hint="--shards")
    if leader_election:
        raise click.UsageError("--shards and --leader-election: each shard has its own Lease already; "
                               "drop --leader-election")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lease-duration") from None
    if seconds < 1:
        raise click.BadParameter("must be at least 1s (Lease durations are whole seconds)", param_hint="--lease-duration")
    try:
        api = Cluster.connect(kubeconfig=kubeconfig, context=context).api
    except ClusterError as exc:
        raise click.UsageError(f"--shards needs cluster access for its Leases (--kubeconfig, --context or "
                               f"in-cluster): {exc}") from None
    return Sharder(api, namespace, name, identity, n, lease_duration=seconds)


def _appliers(target: str, applier: str, applier_object: str | None, deadline: str, nudge: bool) -> Appliers:
    if target != "git":
        if applier != "none" or applier_object:
            raise click.UsageError("--applier and --applier-object go with --target git (the kubernetes "
                                   "target applies itself)")
        return Appliers()
    try:
        ref = applier_ref(applier, applier_object)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--applier-object") from None
    if ref is None and applier_object:
        raise click.UsageError("--applier-object without --applier argocd|flux")
    try:
        seconds = parse_duration(deadline)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--applier-deadline") from None
    if seconds <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--applier-deadline")
    return Appliers(ref, deadline=float(seconds), nudge=nudge)


@click.command()
@_opt("--repo", env="REPO", required=True, help="Config repo: URL (https://, ssh://, git://, file://) or local path.")
@_opt("--branch", env="BRANCH", default="main", help="Branch to follow and write to.")
@_opt("--target", env="TARGET", type=click.Choice(["kubernetes", "git"]), default="kubernetes",
      help="Apply to the cluster, or write rendered manifests to git for Argo CD/Flux.")
@_opt("--workdir", env="WORKDIR", default=None, help="Where Sluice keeps its own clone (default: a dir under $TMPDIR).")
@_opt("--interval", env="INTERVAL", default="30s", help="Poll interval; webhooks and the watchdog trigger sooner.")
@_opt("--once", env="ONCE", is_flag=True, help="Run one pass and exit (CI, cron). Exit 1 if it failed.")
@_opt("--prometheus", env="PROMETHEUS", default=None, help="Prometheus URL (overrides sluice.yaml providers).")
@_opt("--listen", env="LISTEN", default="127.0.0.1:8080", help="host:port for /healthz, /readyz, /metrics, /webhook and the dashboard /ui.")
@_opt("--webhook-secret", env="WEBHOOK_SECRET", default=None, help="HMAC secret for webhooks (prefer the _FILE form).")
@_opt("--webhook-secret-file", env="WEBHOOK_SECRET_FILE", default=None, help="File holding the webhook secret.")
@_opt("--webhook-allow-unsigned", env="WEBHOOK_ALLOW_UNSIGNED", is_flag=True, help="Accept unsigned webhooks (never in production).")
@_opt("--watch/--no-watch", env="WATCH", default=True, help="Watch a local-path repo with watchdog.")
@_opt("--author-name", env="AUTHOR_NAME", default="Sluice", help="Author of Sluice's commits.")
@_opt("--author-email", env="AUTHOR_EMAIL", default="sluice@localhost", help="Author email of Sluice's commits.")
@_opt("--kubeconfig", env="KUBECONFIG_PATH", default=None,
      help="kubeconfig file (default: in-cluster, then ~/.kube/config). With --target git: read-only access "
           "for readiness and the applier, used only when given or in-cluster.")
@_opt("--context", env="CONTEXT", default=None, help="kubeconfig context.")
@_opt("--applier", env="APPLIER", type=click.Choice(["argocd", "flux", "none"]), default="none",
      help="With --target git: what applies rendered/. A step's analysis waits until it applied the step's commit.")
@_opt("--applier-object", env="APPLIER_OBJECT", default=None,
      help="NAMESPACE/NAME of the Argo CD Application or Flux Kustomization that deploys rendered/.")
@_opt("--applier-deadline", env="APPLIER_DEADLINE", default="10m",
      help="How long a step waits for the applier before the rollout is held (a rollback never waits).")
@_opt("--applier-nudge/--no-applier-nudge", env="APPLIER_NUDGE", default=True,
      help="After each push, ask the applier to look at git now (Argo CD refresh annotation, Flux requestedAt).")
@_opt("--instance", env="INSTANCE", default="sluice",
      help="This installation's name: labels every object it applies; it lists and prunes only its own.")
@_opt("--inventory-namespace", env="INVENTORY_NAMESPACE", default="sluice-system",
      help="Namespace of the ConfigMap sluice-inventory-<instance> recording where this instance applied objects.")
@_opt("--leader-election/--no-leader-election", env="LEADER_ELECTION", default=False,
      help="Run several replicas; only the holder of a coordination.k8s.io Lease writes.")
@_opt("--lease-namespace", env="LEASE_NAMESPACE", default="sluice-system", help="Namespace of the leader Lease.")
@_opt("--lease-name", env="LEASE_NAME", default="sluice", help="Name of the leader Lease.")
@_opt("--lease-duration", env="LEASE_DURATION", default="15s", help="A standby takes over this long after the leader's last renewal.")
@_opt("--identity", env="POD_NAME", default=None, help="This replica's name in the Lease (default: hostname).")
@_opt("--shards", env="SHARDS", type=int, default=None,
      help="Split the releases into N shards across replicas, one Lease per shard (needs cluster access; "
           "replaces --leader-election). Every replica must be given the same N.")
@_opt("--trust-ssh-allowed-signers", env="TRUST_SSH_ALLOWED_SIGNERS", default=None,
      help="Act only on commits signed by a key in this allowed_signers file (a mounted file, not the repo's).")
@_opt("--trust-openpgp-key", env="TRUST_OPENPGP_KEYS", multiple=True, default=(),
      help="Armored OpenPGP public key file of a trusted signer (repeatable).")
@_opt("--trust-since", env="TRUST_SINCE", default=None, help="Require signatures only on commits after this one.")
@_opt("--policy-file", env="POLICY_FILE", default=None,
      help="The controller's policy (tenancy, trust, pod-security exceptions): a mounted file the repo cannot "
           "edit; sluice.yaml may only narrow it. Invalid: Sluice refuses to start.")
@_opt("--signing-key", env="SIGNING_KEY", default=None, help="Sign Sluice's commits with this SSH key file (or GPG key id).")
@_opt("--signing-format", env="SIGNING_FORMAT", type=click.Choice(["ssh", "openpgp"]), default="ssh", help="Format of --signing-key.")
@_opt("--commit-status", env="COMMIT_STATUS", type=click.Choice(["github", "gitlab", "none"]), default="none",
      help="Mark the commit that started each rollout with a commit status (pending, then success or failure).")
@_opt("--commit-status-token-file", env="COMMIT_STATUS_TOKEN_FILE", default=None,
      help="File holding the forge token (GitHub: repo:status or fine-grained Commit statuses: write; GitLab: api).")
@_opt("--commit-status-api", env="COMMIT_STATUS_API", default=None,
      help="API base URL (default: https://api.github.com, or https://<host>/api/v3 or https://<gitlab host> from --repo).")
@_opt("--commit-status-repo", env="COMMIT_STATUS_REPO", default=None,
      help="GitHub owner/name or GitLab project path or id (default: from --repo).")
@_opt("--dashboard-url", env="DASHBOARD_URL", default=None,
      help="Link of each commit status (target_url); {release} is replaced by namespace/name.")
@_opt("--log-format", env="LOG_FORMAT", type=click.Choice(["kv", "json"]), default="kv", help="Log line format.")
@_opt("--log-level", env="LOG_LEVEL", default="info", help="debug, info, warning, error.")
def command(repo, branch, target, workdir, interval, once, prometheus, listen, webhook_secret,
            webhook_secret_file, webhook_allow_unsigned, watch, author_name, author_email, kubeconfig,
            context, applier, applier_object, applier_deadline, applier_nudge, instance, inventory_namespace,
            leader_election, lease_namespace, lease_name, lease_duration, identity, shards,
            trust_ssh_allowed_signers, trust_openpgp_key, trust_since, policy_file, signing_key, signing_format,
            commit_status, commit_status_token_file, commit_status_api, commit_status_repo, dashboard_url,
            log_format, log_level) -> int:
    """Run the controller: sync, decide, commit, apply, repeat."""
    creds = Credentials.from_env()
    secret = _secret(webhook_secret, webhook_secret_file)
    logs.setup(log_format, log_level, secrets=[*creds.secrets(), secret or ""])
    local = os.path.isdir(repo)
    url = os.path.abspath(repo) if local else repo
    if workdir is None:
        workdir = os.path.join(tempfile.gettempdir(), "sluice-" + hashlib.sha1(f"{url}@{branch}".encode()).hexdigest()[:12])
    git = GitRepo(url, workdir, branch, credentials=creds, author=Identity(author_name, author_email),
                  sign_config=signing_config(signing_key, signing_format) if signing_key else None)
    policy = read_policy(policy_file)
    anchors = (policy or {}).get("trust") or {}
    if trust_ssh_allowed_signers and anchors.get("sshAllowedSigners") not in (None, trust_ssh_allowed_signers):
        raise click.ClickException("--trust-ssh-allowed-signers and the policy file's trust.sshAllowedSigners "
                                   "name different files: keep one")
    trust = TrustPolicy(tuple(dict.fromkeys([*trust_openpgp_key, *(anchors.get("openpgpKeys") or [])])),
                        trust_ssh_allowed_signers or anchors.get("sshAllowedSigners"),
                        trust_since or anchors.get("since"), home=os.path.join(workdir + "-gnupg"))
    if trust.enabled and not signing_key:
        # its own unsigned commit would be refused by the next pass, for good (it stays in history)
        raise click.UsageError("signature checks are on (--trust-* or the policy's trust) but Sluice's own commits "
                               "would be unsigned: give --signing-key with a key the trust anchors accept")
    metrics = Metrics()
    elector = sharder = None
    identity = identity or socket.gethostname()
    if shards is not None:
        sharder = _sharder(shards, leader_election, kubeconfig, context, lease_namespace, lease_name,
                           lease_duration, identity)
        metrics.set_shards(shards, frozenset())
        kick: list = []   # the runner's kick, once there is a runner (none with --once)

        def shards_changed(owned) -> None:
            metrics.set_shards(shards, owned)
            if owned and kick:
                kick[0]()   # a shard taken over: its releases are looked at now, not at the next poll

        sharder.on_change = shards_changed
    elif leader_election:
        from reconciler.adapters.cluster import Cluster
        from reconciler.adapters.leader import LeaderElector
        elector = LeaderElector(Cluster.connect(kubeconfig=kubeconfig, context=context).api, lease_namespace,
                                lease_name, identity, lease_duration=parse_duration(lease_duration))
        elector.on_change = lambda leading: metrics.leader.set(1 if leading else 0)
    else:
        metrics.leader.set(1)   # the only replica writes: "no leader" alerts must not fire on it
    if not DNS_LABEL.match(instance or ""):
        raise click.BadParameter(f"{instance!r} is not a DNS label (a-z, 0-9, '-', at most 63)", param_hint="--instance")
    notes: list[str] = []
    appliers = _appliers(target, applier, applier_object, applier_deadline, applier_nudge)
    built = build_target(target, kubeconfig, context, instance=instance, inventory_namespace=inventory_namespace,
                         repo=git, appliers=appliers, notes=notes)
    for note in notes:
        click.echo(f"sluice: {note}", err=True)
    try:
        statuses = configure_commit_status(commit_status, token_file=commit_status_token_file, api=commit_status_api,
                                           repository=commit_status_repo, repo_url=url, target_url=dashboard_url,
                                           git=git)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    notifications = Notifications(Notifier(count=lambda receiver, result: metrics.notifications.labels(
        receiver, result).inc()), commit_status=statuses)
    controller = Controller(git, built,
                            prometheus=Prometheus(prometheus) if prometheus else None,
                            can_write=(sharder.holds_any if sharder else elector.is_leader if elector
                                       else (lambda: True)), trust=trust, notify=notifications,
                            owns=sharder.owns if sharder else None,
                            replica=identity if (sharder or elector) else None)
    controller.policy = policy
    controller.full_every = parse_duration(interval)   # a pass on a new commit may look at what it changed only
    if once:
        t0 = time.monotonic()
        if sharder:
            sharder.tick()   # one round: the shards free now are this pass's
        with sharder.passing() if sharder else contextlib.nullcontext():
            report = controller.run_pass()
        if sharder:
            sharder.stop(release=True)
        metrics.observe_pass(report, time.monotonic() - t0)
        for key, out in sorted(report.outcomes.items()):
            if out.event:
                click.echo(f"{out.event.release}: {out.event.summary}")
        for problem in report.problems:
            click.echo(f"invalid: {problem}", err=True)
        if report.error:
            click.echo(f"error: {report.error}", err=True)
        notifications.close(timeout=30)   # deliver this pass's notifications before exiting
        close_all(10)                      # and its fire-and-record hooks
        return 1 if report.error else 0

    runner: Runner

    def one_pass() -> float | None:
        t0 = time.monotonic()
        with sharder.passing() if sharder else contextlib.nullcontext():   # shards are handed back between passes
            report = controller.run_pass()
        metrics.observe_pass(report, time.monotonic() - t0)
        if not report.error:
            runner.first_sync_ok = True
            runner.last_ok = time.monotonic()
        return report.next_pass_in   # the earliest moment a release asked to be looked at again

    poll = parse_duration(interval)
    runner = Runner(one_pass, poll_interval=poll, min_gap=0.5)
    if sharder:
        kick.append(runner.kick)
    host, _, port = listen.rpartition(":")
    webhook = WebhookConfig(secret.encode() if secret else None, webhook_allow_unsigned, branch)
    from reconciler.ui.server import controller_dashboard   # the read-only dashboard under /ui (docs/dashboard.md)
    ui = controller_dashboard(workdir, branch, git.url, lambda: runner.passes + runner.crashes)
    server = Server(host or "127.0.0.1", int(port), runner, metrics, webhook=webhook, stale_after=max(3 * poll, 60),
                    ui=ui)
    server.start()
    observer = watch_path(url, runner.kick) if local and watch else None
    done = threading.Event()

    def stop(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if elector:
        elector.start()
    if sharder:
        sharder.start()
    runner.start()
    click.echo(f"sluice: following {git.url if not creds.token else '(redacted)'} {branch}, target {target}, "
               f"listening on {host}:{server.port}", err=True)
    done.wait()
    runner.stop(timeout=120)   # finish the pass in flight
    if elector:
        elector.stop(release=True)   # a standby takes over at once
    if sharder:
        sharder.stop(release=True)   # the other replicas take its shards at once
    if observer:
        observer.stop()
    server.stop()
    notifications.close(timeout=10)   # what is still queued then is counted as dropped
    close_all(5)                       # the fire-and-record hooks' sender (docs/hooks.md: unrecorded answers are lost)
    return 0
