"""Real signing keys for tests: ssh-keygen and gpg in temp dirs (no passphrase)."""

from __future__ import annotations

import pathlib
import subprocess


def ssh_key(root: pathlib.Path, name: str) -> pathlib.Path:
    key = root / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def allowed_signers(root: pathlib.Path, keys: dict[str, pathlib.Path]) -> pathlib.Path:
    path = root / "allowed_signers"
    path.write_text("".join(f'{email} namespaces="git" {(key.parent / (key.name + ".pub")).read_text()}'
                            for email, key in keys.items()))
    return path


def gpg_key(root: pathlib.Path, name: str, email: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(GNUPGHOME holding the secret key, exported public key file)."""
    home = root / f"gnupg-{name}"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", f"{name} <{email}>", "ed25519", "sign", "never"], check=True,
                   capture_output=True)
    pub = root / f"{name}.asc"
    pub.write_bytes(subprocess.run([*gpg, "--armor", "--export", email], check=True, capture_output=True).stdout)
    return home, pub
