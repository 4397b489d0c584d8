"""The console's users: a file of ``name:role:hash`` lines (``MSB1_CONSOLE_USERS_FILE``).

The hash is werkzeug's scrypt (``scrypt:32768:8:1$salt$hex``), never a password;
``moment-sb1 console add-user`` writes it. The file is read again when it changes, so a user
removed or given another role has that effect at their next request. Lines starting with
``#`` and blank lines are ignored.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash

ROLES = ("viewer", "operator")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 12
# checked when the name is unknown, so that a wrong name costs what a wrong password costs
_DUMMY = generate_password_hash("not a password of anyone", method="scrypt")


class UsersError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def parse(text: str, path: str = "users file") -> dict[str, tuple[str, str]]:
    """name → (role, hash); a line that is not ``name:role:scrypt-hash`` is refused with its number."""
    users: dict[str, tuple[str, str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not NAME.fullmatch(parts[0]) or parts[1] not in ROLES \
                or not parts[2].startswith(("scrypt:", "pbkdf2:")):
            raise UsersError(f"{path} line {n}: expected name:role:hash (role viewer or operator, the hash from "
                             "`moment-sb1 console add-user`)")
        users[parts[0]] = (parts[1], parts[2])
    return users


class Users:
    """The users file, read again when its modification time or size changes."""

    def __init__(self, path: str):
        self.path = path
        self._stamp: tuple | None = None
        self._users: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def _current(self) -> dict[str, tuple[str, str]]:
        try:
            st = os.stat(self.path)
        except OSError as err:
            raise UsersError(f"{self.path}: {err.strerror}; add a user with `moment-sb1 console add-user`") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8") as f:
                    self._users = parse(f.read(), self.path)
                self._stamp = stamp
            return self._users

    def check(self) -> int:
        """How many users there are (raises ``UsersError`` when the file is missing or broken)."""
        return len(self._current())

    def get(self, name: str) -> User | None:
        found = self._current().get(name)
        return User(name, found[0]) if found else None

    def login(self, name: str, password: str) -> User | None:
        found = self._current().get(name)
        ok = check_password_hash(found[1] if found else _DUMMY, password)
        return User(name, found[0]) if found and ok else None


def set_user(path: str, name: str, role: str, password: str) -> bool:
    """Add the user, or replace their role and hash; True when added. Written atomically, mode 0600."""
    if not NAME.fullmatch(name):
        raise UsersError("a user name is 1 to 64 letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise UsersError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UsersError(f"the password must have at least {MIN_PASSWORD} characters")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = ["# moment-sb1 console users: name:role:scrypt hash (moment-sb1 console add-user)"]
    parse("\n".join(lines), path)
    entry = f"{name}:{role}:{generate_password_hash(password, method='scrypt')}"
    added = True
    for i, line in enumerate(lines):
        if line.split(":", 1)[0] == name and not line.startswith("#"):
            lines[i], added = entry, False
    if added:
        lines.append(entry)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".users-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return added
