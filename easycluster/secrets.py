"""The Erlang cookie: full remote code execution on the cluster for whoever has it; and
cluster.database's password, kept the same way.

Each lives in a local secrets file (0600, its directory 0700, git-ignored) or in an
environment variable; it reaches hosts only by file transfer. `Secret` keeps it
out of reprs, tracebacks and f-strings by accident: only `.reveal()` gives it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import string
from pathlib import Path

from .errors import EasyClusterError
from .inventory import Cluster

COOKIE_ALPHABET = string.ascii_letters + string.digits
COOKIE_LENGTH = 48
MIN_COOKIE_LENGTH = 20
# What Erlang accepts in a cookie file without quoting surprises: an unquoted atom's characters.
COOKIE_CHARS = re.compile(r"^[A-Za-z0-9_@.-]+$")
# cluster.database's password, when easycluster makes one (a database it provisions)
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 40


class Secret:
    """A value that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def sha256(self) -> str:
        return hashlib.sha256(self._value.encode()).hexdigest()

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "<redacted>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self.sha256())


def check_cookie(value: str, where: str) -> None:
    if len(value) < MIN_COOKIE_LENGTH:
        raise EasyClusterError(f"{where}: the cookie is shorter than {MIN_COOKIE_LENGTH} characters")
    if not COOKIE_CHARS.fullmatch(value):   # (match's $ would let a trailing newline in)
        raise EasyClusterError(f"{where}: the cookie has characters Erlang rejects "
                               "(use letters, digits, '_', '@', '.', '-')")


def load_cookie(cluster: Cluster, create: bool = False) -> Secret:
    """The cluster's cookie; with `create`, a new random one if the secrets file does not exist yet."""
    if cluster.cookie_env:
        value = os.environ.get(cluster.cookie_env)
        if not value:
            raise EasyClusterError(f"cluster.cookie.env: environment variable {cluster.cookie_env} is not set")
        check_cookie(value, f"environment variable {cluster.cookie_env}")
        return Secret(value)
    path = cluster.cookie_file
    assert path is not None
    if not path.exists():
        if not create:
            raise EasyClusterError(f"cookie file {path} does not exist (the first `fab deploy` creates it)")
        return create_cookie_file(path)
    return read_cookie_file(path)


def read_cookie_file(path: Path) -> Secret:
    """A cookie kept in a local file, which only its owner may read."""
    value = _read_private_file(path, "cookie file")
    check_cookie(value, f"cookie file {path}")
    return Secret(value)


def generate_cookie() -> Secret:
    """COOKIE_LENGTH characters from the OS's cryptographic RNG (the `secrets` module)."""
    return Secret(_random_text(COOKIE_ALPHABET, COOKIE_LENGTH))


def create_cookie_file(path: Path) -> Secret:
    """A new random cookie in a new file (0600, its directory 0700; never overwrites one)."""
    return _create_private_file(path, generate_cookie())


def load_password(cluster: Cluster, create: bool = False, dry: bool = False) -> Secret | None:
    """cluster.database's role password (None without a cluster.database): from password_env,
    or the local secrets file (0600). For a database easycluster provisions, a file that does
    not exist yet is made with a random password when `create`; in a `dry` run, which creates
    nothing, the password is then a random one that no role has (the plan shows it to be set)."""
    db = cluster.database
    if db is None:
        return None
    if db.password_env:
        value = os.environ.get(db.password_env)
        if not value:
            raise EasyClusterError(f"cluster.database password_env: environment variable {db.password_env} is not set")
        return Secret(value)
    path = db.password_file
    assert path is not None
    if not path.exists():
        if dry and db.provisioned:
            return Secret(secrets.token_hex(20))
        if create and db.provisioned:
            return _create_private_file(path, Secret(_random_text(PASSWORD_ALPHABET, PASSWORD_LENGTH)))
        made = " (the first `fab deploy` creates it)" if db.provisioned else " (the existing server's role password)"
        raise EasyClusterError(f"cluster.database password_file {path} does not exist{made}")
    value = _read_private_file(path, "cluster.database password_file")
    if not value:
        raise EasyClusterError(f"cluster.database password_file {path} is empty")
    return Secret(value)


def load_replication_password(cluster: Cluster, create: bool = False, dry: bool = False) -> Secret | None:
    """A replicated database's replication role password (None without one): its local secrets
    file (0600), made with a random password by the first deploy (`create`; a random one that no
    member has in a `dry` run)."""
    db = cluster.database
    if db is None or not db.replicated:
        return None
    path = db.replication_file
    assert path is not None
    if not path.exists():
        if dry:
            return Secret(secrets.token_hex(20))
        if create:
            return _create_private_file(path, Secret(_random_text(PASSWORD_ALPHABET, PASSWORD_LENGTH)))
        raise EasyClusterError(f"the replication password file {path} does not exist (the first `fab deploy` "
                               "creates it)")
    value = _read_private_file(path, "the replication password file")
    if not value:
        raise EasyClusterError(f"the replication password file {path} is empty")
    return Secret(value)


def _random_text(alphabet: str, length: int) -> str:
    """From the OS's cryptographic RNG (the `secrets` module)."""
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _read_private_file(path: Path, what: str) -> str:
    """A secrets file's content (stripped), refused when others may read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text()
    except OSError as exc:
        raise EasyClusterError(f"{what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise EasyClusterError(f"{what} {path} is readable by others (mode {mode:04o}): chmod 600 {path}")
    return text.strip()


def _create_private_file(path: Path, value: Secret) -> Secret:
    """`value` in a new file (0600, its directory 0700; never overwrites one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value.reveal() + "\n")
    return value
