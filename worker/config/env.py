"""The environment as the settings read it (``worker.config.settings``): environs over one
mapping, with ``<NAME>_FILE`` for a secret setting."""
from __future__ import annotations

from typing import Any, Mapping

from environs import Env

from worker.config.rules import read_secret_file


class SettingsError(ValueError):
    pass


# a secret setting's file (``MSB1_SMTP_PASSWORD_FILE``, as compose and Kubernetes secrets
# give them) is read up to this size; more is not a password


class _MappingEnv(Env):
    """environs' reader over one mapping (the process environment unless a test gives
    another); an empty value counts as unset, as a blank line in an env file means. A secret
    setting (``secrets``) may instead name a file that holds it: ``<NAME>_FILE``."""

    def __init__(self, source: Mapping[str, str], secrets: frozenset[str] = frozenset()):
        super().__init__(eager=False)
        self._source = source
        self._secrets = secrets

    def _get_value(self, env_key: str, default: Any) -> Any:
        value = self._source.get(env_key)
        if env_key in self._secrets and self._source.get(env_key + "_FILE"):
            if value:
                raise SettingsError(f"set {env_key} or {env_key}_FILE, not both")
            value = _secret_file(env_key + "_FILE", self._source[env_key + "_FILE"])
        return default if value is None or value == "" else value


def _secret_file(name: str, path: str) -> str:
    """The secret in the file ``name`` points at; one line saying why when it cannot be read."""
    text, problem = read_secret_file(path)
    if problem:
        size = "; is it the right file?" if problem.startswith("is larger") else ""
        raise SettingsError(f"{name}: {path!r} {problem}{size}")
    return text
