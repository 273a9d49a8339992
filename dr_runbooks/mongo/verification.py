"""The daily test restore of a MongoDB backup: fetch, restore into a temporary database,
compare, replay the oplog, drop it (also on failure), report."""

from __future__ import annotations

import contextlib
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr_runbooks.errors import (
    DRError,
    ServerUnreachable,
)
from dr_runbooks.repository import Backup, Repository
from dr_runbooks.text import first_line

from .connection import ClientFactory
from .fetch import FetchedDump, fetch_backup
from .oplog import replay_oplog
from .plan import RestorePlan, plan_restore
from .server import drop_quietly
from .side import restore_into_side
from .verify import verify_restore

__all__ = ["verify_backup"]


def verify_backup(
    client_factory: ClientFactory,
    repository: Repository,
    backup: Backup,
    *,
    workdir: Path | None = None,
    replay: bool = True,
) -> dict[str, Any]:
    """Test-restore one MongoDB backup and compare it with its manifest; never raises for a
    bad backup.

    Verifies the checksums, restores into a temporary database ``<db>__verify_<token>`` on the
    server ``client_factory`` connects to, compares every collection's document count and
    index names with the manifest (for a legacy backup: with the dump itself), replays the
    oplog when there is one, and drops the temporary database, also on failure. Returns::

        {"outcome": "ok" | "failed", "problems": [...], "collections": n, "documents": n,
         "backup_id", "engine": "mongodb", "database", "oplog": {...} | None, "seconds"}

    Only a server that cannot be reached at all raises (:class:`ServerUnreachable`): that says
    nothing about the backup.
    """
    from pymongo.errors import ConnectionFailure

    begun = time.monotonic()
    result: dict[str, Any] = {
        "backup_id": backup.id,
        "engine": "mongodb",
        "database": backup.database,
        "outcome": "failed",
        "problems": [],
        "collections": 0,
        "documents": 0,
        "oplog": None,
        "checked_at": datetime.now(UTC).isoformat(),
    }
    fetched: FetchedDump | None = None
    client: Any = None
    plan: RestorePlan | None = None
    try:
        fetched = fetch_backup(repository, backup, workdir)
        with fetched.open() as dump:
            selection = {backup.database: backup.database} if backup.manifest else None
            plan = plan_restore(
                dump,
                secrets.token_hex(3),
                selection,
                manifest=backup.manifest,
                label="verify",
            )
            client = client_factory()
            deferred = replay and dump.oplog is not None
            restore_into_side(client, dump, plan, indexes=not deferred)
            checked = verify_restore(client, plan, indexes=not deferred)
            result["problems"].extend(checked["problems"])
            result["collections"] = checked["collections"]
            result["documents"] = checked["documents"]
            if deferred and not checked["problems"]:
                result["oplog"] = replay_oplog(client, dump, plan, metadata_indexes=True)
                result["problems"].extend(verify_restore(client, plan, counts=False)["problems"])
    except ConnectionFailure as exc:
        raise ServerUnreachable(
            f"cannot reach the server for the test restore: {first_line(exc)}"
        ) from None
    except DRError as exc:
        result["problems"].append(first_line(exc))
    finally:
        if client is not None:
            if plan is not None:
                drop_quietly(client, [d.side for d in plan.databases])
            with contextlib.suppress(Exception):
                client.close()
        if fetched is not None:
            fetched.cleanup()
    result["outcome"] = "ok" if not result["problems"] else "failed"
    result["seconds"] = round(time.monotonic() - begun, 3)
    return result
