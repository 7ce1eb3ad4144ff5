"""Secret files (MQTT passwords, private keys) must be readable by their owner only.

A password or key that every user of the gateway can read is not a secret, so such a
file is refused with the command that fixes it.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "mqtt.pass")
>>> _ = open(path, "w").write("s3cret\\n")
>>> os.chmod(path, 0o644)
>>> loose_permissions(path) == f"{path} is open to other users (mode 0644): run chmod 600 {path}"
True
>>> os.chmod(path, 0o600)
>>> loose_permissions(path), read_secret_file(path)
(None, 's3cret')
"""

from __future__ import annotations

import os
import stat

# Any permission for group or others: read is the leak, write would let them swap the secret.
GROUP_OR_OTHERS = stat.S_IRWXG | stat.S_IRWXO


class SecretFileError(ValueError):
    """A secret file is missing, unreadable, empty, or readable by others."""


def loose_permissions(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not private enough, or None if it is private (or does not exist)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    if mode & GROUP_OR_OTHERS:
        return (
            f"{os.fspath(path)} is open to other users (mode {stat.S_IMODE(mode):04o}): run chmod 600 {os.fspath(path)}"
        )
    return None


def check_private_file(path: str | os.PathLike) -> None:
    """Raise SecretFileError unless ``path`` exists and only its owner may use it."""
    if not os.path.isfile(path):
        raise SecretFileError(f"secret file {os.fspath(path)} does not exist (or is not a file)")
    problem = loose_permissions(path)
    if problem:
        raise SecretFileError(problem)


def read_secret_file(path: str | os.PathLike) -> str:
    """The secret in ``path`` (first line, without its newline), after the permission check."""
    check_private_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"cannot read secret file {os.fspath(path)}: {exc}") from None
    if not secret:
        raise SecretFileError(f"secret file {os.fspath(path)} is empty")
    return secret


def write_private_file(path: str | os.PathLike, data: bytes | str) -> None:
    """Create or replace ``path`` with mode 0600 from the start (never briefly readable by others)."""
    if isinstance(data, str):
        data = data.encode()
    tmp = f"{os.fspath(path)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing tmp file would keep its old mode
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
