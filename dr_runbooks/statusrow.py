"""One row of ``dr status``: a protected thing (a database, a cluster, file storage, a
configuration repository, a vault) against its objective. Its own module so that every kind of
protected system can make rows without importing the others (:mod:`dr_runbooks.status`
assembles them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["DatabaseStatus"]


@dataclass
class DatabaseStatus:
    system: str
    engine: str
    database: str
    repository: str
    state: str
    detail: str
    newest_backup: str | None = None
    newest_point: datetime | None = None
    age_seconds: float | None = None
    rpo_seconds: float = 0.0
    verified_backup: str | None = None
    verified_point: datetime | None = None
    verified_at: datetime | None = None
    legacy: bool = False
    damaged: list[str] = field(default_factory=list)
    skewed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("newest_point", "verified_point", "verified_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data
