"""Key Vault secrets as the loopback endpoint speaks them (the data plane, ``/secrets/...``).

Every ``PUT /secrets/NAME`` makes a new version; ``GET /secrets/NAME[/VERSION]`` reads the
latest or one version; ``GET /secrets/NAME/versions`` lists them. Values are kept in memory
in :attr:`SecretVault.secrets`, so a test can read back what a flow wrote.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.azure_api.core import ApiError, Response

__all__ = ["SecretVault", "SecretVersion"]


@dataclass
class SecretVersion:
    version: str
    value: str
    created: int
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True


class SecretVault:
    """The secrets of one vault, by name, each with its versions oldest first."""

    def __init__(self) -> None:
        self.secrets: dict[str, list[SecretVersion]] = {}
        self._lock = threading.Lock()

    def set(
        self,
        name: str,
        value: str,
        content_type: str | None = None,
        version_id: str | None = None,
        created: int | None = None,
    ) -> SecretVersion:
        """A new version (``version_id`` and ``created`` given: one restored as it was)."""
        version = SecretVersion(
            version_id or uuid.uuid4().hex,
            value,
            int(time.time()) if created is None else created,
            content_type,
        )
        with self._lock:
            self.secrets.setdefault(name, []).append(version)
        return version

    def latest(self, name: str) -> SecretVersion | None:
        with self._lock:
            versions = self.secrets.get(name) or []
            return versions[-1] if versions else None

    def handle(
        self, base_url: str, method: str, parts: list[str], body: dict[str, Any]
    ) -> Response:
        """``parts`` is the path after ``/secrets``."""
        if not parts:
            return Response(200, {"value": [self._item(base_url, n) for n in sorted(self.secrets)]})
        name = parts[0]
        if method == "PUT" and len(parts) == 1:
            if "value" not in body:
                raise ApiError(400, "BadParameter", "a secret needs a value")
            version = self.set(name, str(body["value"]), body.get("contentType"))
            return Response(200, self._bundle(base_url, name, version))
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        with self._lock:
            versions = list(self.secrets.get(name) or [])
        if not versions:
            raise ApiError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found")
        if len(parts) == 2 and parts[1] == "versions":
            return Response(
                200,
                {
                    "value": [
                        {"id": self._id(base_url, name, v), "attributes": self._attributes(v)}
                        for v in versions
                    ],
                    "nextLink": None,
                },
            )
        if len(parts) == 1 or not parts[1]:
            return Response(200, self._bundle(base_url, name, versions[-1]))
        for version in versions:
            if version.version == parts[1]:
                return Response(200, self._bundle(base_url, name, version))
        raise ApiError(404, "SecretNotFound", f"secret {name} has no version {parts[1]}")

    @staticmethod
    def _id(base_url: str, name: str, version: SecretVersion) -> str:
        return f"{base_url}/secrets/{name}/{version.version}"

    @staticmethod
    def _attributes(version: SecretVersion) -> dict[str, Any]:
        return {
            "enabled": version.enabled,
            "created": version.created,
            "updated": version.created,
            "recoveryLevel": "Recoverable+Purgeable",
        }

    def _bundle(self, base_url: str, name: str, version: SecretVersion) -> dict[str, Any]:
        return {
            "value": version.value,
            "id": self._id(base_url, name, version),
            "contentType": version.content_type,
            "attributes": self._attributes(version),
            "tags": version.tags,
        }

    def _item(self, base_url: str, name: str) -> dict[str, Any]:
        latest = self.secrets[name][-1]
        return {"id": f"{base_url}/secrets/{name}", "attributes": self._attributes(latest)}
