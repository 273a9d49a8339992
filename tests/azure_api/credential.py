"""A ``TokenCredential`` for tests: it hands out the token the loopback endpoint accepts."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken

__all__ = ["StaticTokenCredential"]


class StaticTokenCredential:
    """Always the same bearer token, valid for an hour; records the scopes asked for."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def close(self) -> None:
        pass

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(self, *args: Any) -> None:
        pass
