"""Key Vault secrets: a new version of a secret, and reading a version back.

A value read or written here is registered for redaction at once, so no log line, message or
report can show it.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from dr_runbooks.azure.errors import translated
from dr_runbooks.redaction import register_secret

__all__ = ["read_secret", "set_secret"]


def set_secret(client: Any, name: str, value: str) -> str:
    """Store ``value`` as a new version of the secret ``name``; returns the version."""
    register_secret(value)
    with translated(f"setting a new version of Key Vault secret {name}"):
        secret = client.set_secret(name, value, content_type="dr-runbooks rotation")
    return str(secret.properties.version)


def read_secret(client: Any, name: str, version: str | None = None) -> tuple[str, str] | None:
    """The secret's value and version (the latest, or ``version``); None when there is none."""
    what = f"reading Key Vault secret {name}" + (f" version {version}" if version else "")
    with translated(what):
        try:
            secret = client.get_secret(name, version)
        except ResourceNotFoundError:
            return None
    value = str(secret.value or "")
    register_secret(value)
    return value, str(secret.properties.version)
