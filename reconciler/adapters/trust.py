"""Verify commit signatures before acting on them; sign Sluice's own commits.

Trust anchors come from the controller's configuration (mounted files named
by flags), never from the repository being verified: a commit that could
edit its own trust list would verify itself.

Which commits must be signed: every commit reachable from the branch tip
and not from the last verified commit (``refs/sluice/verified`` in Sluice's
own clone), or from ``--trust-since`` on the first run. So an unsigned
commit hidden under a signed tip is refused too. Sluice's own commits are
signed with its key, which must be among the trusted signers.

Only ``%G?`` = ``G`` (good signature by a trusted key) passes. The keyring
is rebuilt from the configured files for every verification (a fresh private
GNUPGHOME, removed afterwards) and git re-reads the allowed-signers file each
time, so a key removed from the configuration is refused at the next pass,
never trusted until a restart. The tip itself is checked on every call even
when it was verified before, so a tip signed by a key since removed is
refused too. The keyring holds only the configured OpenPGP keys, each given
full trust; an SSH signature is ``G`` only when its key is in the
allowed-signers file. ``U``
(an SSH key not in allowed_signers), ``N`` unsigned, ``B`` bad, ``E`` key
missing, ``X``/``Y`` expired and ``R`` revoked all refuse the tip.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

VERIFIED_REF = "refs/sluice/verified"
REASONS = {"U": "signed by a key that is not trusted", "N": "unsigned", "B": "bad signature", "E": "signed by an unknown key", "X": "expired signature",
           "Y": "signed by an expired key", "R": "signed by a revoked key"}


@dataclass(frozen=True)
class TrustPolicy:
    openpgp_keys: tuple[str, ...] = ()       # armored public key files
    ssh_allowed_signers: str | None = None
    since: str | None = None                 # commit from which signatures are required
    home: str | None = None                  # parent dir of the per-verification GNUPGHOMEs (default: $TMPDIR)

    @property
    def enabled(self) -> bool:
        return bool(self.openpgp_keys or self.ssh_allowed_signers)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    commit: str
    reason: str = ""
    signer: str = ""


def _import_keys(home: str, policy: TrustPolicy) -> None:
    """Fill the empty keyring at ``home`` with exactly the configured keys, fully trusted."""
    # public keys only: no agent is ever needed (its socket would not fit a long home path)
    Path(home, "gpg.conf").write_text("no-autostart\n")
    gpg = ["gpg", "--batch", "--quiet", "--homedir", home]
    for key in policy.openpgp_keys:
        subprocess.run([*gpg, "--import", key], capture_output=True, check=True)
    # the keyring holds only the configured keys: trust each fully, so good signatures read 'G'
    listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], capture_output=True, text=True).stdout
    fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    subprocess.run([*gpg, "--import-ownertrust"], input="".join(f"{f}:6:\n" for f in fprs), text=True,
                   capture_output=True, check=True)


@contextlib.contextmanager
def git_env(policy: TrustPolicy):
    """The environment for git to verify under ``policy``: a keyring built now
    from the configured files (removed on exit) and the allowed-signers file."""
    with contextlib.ExitStack() as stack:
        # only the configured anchors count: never the user's keyring, global or system git config
        env: dict[str, str] = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
        if policy.home:
            Path(policy.home).mkdir(parents=True, exist_ok=True, mode=0o700)
        home = stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-gnupg-", dir=policy.home or None))
        if policy.openpgp_keys:
            _import_keys(home, policy)
        env["GNUPGHOME"] = home   # empty when no OpenPGP key is trusted
        signers = policy.ssh_allowed_signers
        if not signers:
            signers = str(Path(home) / "no-allowed-signers")
            Path(signers).write_text("")
        configs = [("gpg.ssh.allowedSignersFile", signers)]
        for i, (k, v) in enumerate(configs):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = k, v
        if configs:
            env["GIT_CONFIG_COUNT"] = str(len(configs))
        yield env


def verify(repo_dir: str | os.PathLike, tip: str, policy: TrustPolicy) -> Verdict:
    """Are ``tip`` and every commit it adds since the last verified one signed by a trusted key?"""
    try:
        if policy.ssh_allowed_signers and re.search(r"(?i)valid-(before|after)=",
                                                    Path(policy.ssh_allowed_signers).read_text()):
            # git checks those against the committer date, which the signer writes: a retired key
            # would still sign "in the past". Remove a retired key instead.
            return Verdict(False, tip, "the allowed-signers file uses valid-before/valid-after, which a signer "
                                       "can defeat by backdating; remove retired keys from it instead")
        with git_env(policy) as trust_env:
            return _verify(repo_dir, tip, policy, {**os.environ, **trust_env, "LC_ALL": "C"})
    except (OSError, subprocess.CalledProcessError) as exc:   # a key file unreadable: refuse, never skip
        return Verdict(False, tip, f"cannot check signatures ({type(exc).__name__}: {exc})")


def _verify(repo_dir: str | os.PathLike, tip: str, policy: TrustPolicy, env: dict[str, str]) -> Verdict:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo_dir), *args], env=env, capture_output=True, text=True,
                              check=True).stdout

    base = None
    try:
        base = git("rev-parse", "--verify", "--quiet", VERIFIED_REF).strip() or None
    except subprocess.CalledProcessError:
        base = None
    base = base or policy.since
    if base:
        try:
            git("merge-base", "--is-ancestor", base, tip)
        except subprocess.CalledProcessError:
            return Verdict(False, tip, f"tip does not descend from the last verified commit {base[:12]} (history rewritten)")
    # the tip always, under today's keys; then what it adds since the last verified commit
    out = git("log", "-1", "--format=%H %G? %GS", tip)
    if base != tip:
        out += git("log", "--format=%H %G? %GS", tip, *([f"^{base}"] if base else []))
    for line in out.splitlines():
        sha, status, *signer = line.split(" ", 2)
        if status != "G":
            what = REASONS.get(status, f"signature status {status}")
            where = "tip" if sha == tip else f"ancestor {sha[:12]}"
            return Verdict(False, tip, f"{where} is {what}")
    git("update-ref", VERIFIED_REF, tip)
    signer = git("log", "-1", "--format=%GS", tip).strip()
    return Verdict(True, tip, "", signer)


def signing_config(key: str, fmt: str = "ssh") -> dict[str, str]:
    """git config for signing Sluice's commits with a mounted key (``-c`` pairs)."""
    if fmt == "ssh":
        return {"gpg.format": "ssh", "user.signingkey": key, "commit.gpgsign": "true"}
    return {"gpg.format": "openpgp", "user.signingkey": key, "commit.gpgsign": "true"}
