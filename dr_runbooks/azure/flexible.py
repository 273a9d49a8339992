"""Azure Database for PostgreSQL flexible servers: what their backups allow, and restoring one
into a new server.

Two restores, both a new server made from the source's backups (``az postgres flexible-server
restore`` and ``geo-restore``):

- ``PointInTimeRestore``: in the source's region, to any time between the earliest restore
  point and now.
- ``GeoRestore``: into another region, from the geo-redundant backup (the source needs
  ``geoRedundantBackup: Enabled``), at the latest geo-replicated backup or a chosen time.

A restore is safe to start again: a server of the target name that was restored from the same
source is waited for (or taken as done when Ready), never created twice; one restored from
something else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from dr_runbooks.azure.errors import translated
from dr_runbooks.azure.lro import Progress, wait_for
from dr_runbooks.errors import AzureRequestFailed, ConfigError, OperationFailed
from dr_runbooks.text import human_duration

__all__ = [
    "FlexibleServer",
    "RestoreMode",
    "latest_backup_time",
    "read_server",
    "restore_server",
    "wait_until_ready",
]

RestoreMode = Literal["GeoRestore", "PointInTimeRestore"]


@dataclass(frozen=True)
class FlexibleServer:
    """What the runbooks need to know about one server."""

    id: str
    name: str
    location: str
    state: str
    version: str | None = None
    fqdn: str | None = None
    create_mode: str | None = None
    source_server_id: str | None = None
    geo_redundant_backup: bool = False
    earliest_restore: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.state.lower() == "ready"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "location": self.location,
            "state": self.state,
            "version": self.version,
            "fqdn": self.fqdn,
            "create_mode": self.create_mode,
            "source_server_id": self.source_server_id,
            "geo_redundant_backup": self.geo_redundant_backup,
            "earliest_restore": self.earliest_restore.isoformat()
            if self.earliest_restore
            else None,
        }


def _text(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _server(model: Any) -> FlexibleServer:
    backup = model.backup
    return FlexibleServer(
        id=model.id,
        name=model.name,
        location=model.location,
        state=_text(model.state) or "Unknown",
        version=_text(model.version),
        fqdn=model.fully_qualified_domain_name,
        create_mode=_text(model.create_mode),
        source_server_id=model.source_server_resource_id,
        geo_redundant_backup=bool(backup and _text(backup.geo_redundant_backup) == "Enabled"),
        earliest_restore=backup.earliest_restore_date if backup else None,
    )


def read_server(client: Any, resource_group: str, name: str) -> FlexibleServer | None:
    """The server, or None when there is none of that name."""
    with translated(f"reading flexible server {name} in {resource_group}"):
        try:
            return _server(client.servers.get(resource_group, name))
        except ResourceNotFoundError:
            return None


def latest_backup_time(client: Any, resource_group: str, name: str) -> datetime | None:
    """When the newest completed backup of the server finished (the latest point a geo-restore
    can reach), or None when it lists none."""
    with translated(f"listing the backups of flexible server {name}"):
        times = [
            backup.completed_time
            for backup in client.backups_automatic_and_on_demand.list_by_server(
                resource_group, name
            )
            if backup.completed_time is not None
        ]
    return max(times) if times else None


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").rstrip("/").lower() == (b or "").rstrip("/").lower()


def wait_until_ready(
    client: Any,
    resource_group: str,
    name: str,
    timeout: float,
    poll_seconds: float,
    on_progress: Progress | None = None,
) -> FlexibleServer:
    """Poll the server until it is Ready (a restore that an earlier attempt started)."""
    begun = datetime.now(UTC)

    def poll() -> FlexibleServer | None:
        server = read_server(client, resource_group, name)
        if server is not None and server.state.lower() in ("disabled", "dropping"):
            raise OperationFailed(f"flexible server {name} is {server.state}")
        return server

    def report(state: Any) -> None:
        if on_progress is None or state.outcome is None or state.outcome.failed:
            return
        server = state.outcome.result()
        elapsed = (datetime.now(UTC) - begun).total_seconds()
        status = server.state if server else "not there yet"
        on_progress(f"flexible server {name}: {status} after {human_duration(elapsed)}")

    retrying = Retrying(
        retry=retry_if_result(lambda server: server is None or not server.ready),
        wait=wait_fixed(poll_seconds),
        stop=stop_after_delay(timeout),
        before_sleep=report,
    )
    try:
        server: FlexibleServer | None = retrying(poll)
    except RetryError:
        raise OperationFailed(
            f"flexible server {name} was not Ready within {human_duration(timeout)}; it goes "
            f"on in Azure: run again to pick it up"
        ) from None
    assert server is not None  # the retry ends only on a Ready server
    return server


def restore_server(
    client: Any,
    resource_group: str,
    name: str,
    mode: RestoreMode,
    source: FlexibleServer,
    location: str,
    point: datetime,
    *,
    timeout: float,
    poll_seconds: float,
    on_progress: Progress | None = None,
) -> tuple[FlexibleServer, bool]:
    """Restore ``source`` into the new server ``name``; returns it (Ready) and whether this
    call created it (False: an earlier attempt had)."""
    if mode == "PointInTimeRestore" and location.lower() != source.location.lower():
        raise ConfigError(
            f"a point-in-time restore stays in {source.location}; {location} needs a geo-restore"
        )
    if mode == "GeoRestore" and not source.geo_redundant_backup:
        raise ConfigError(
            f"flexible server {source.name} has no geo-redundant backup: it cannot be "
            f"geo-restored into {location}"
        )
    existing = read_server(client, resource_group, name)
    if existing is not None:
        _check_ours(existing, source)
        if existing.ready:
            return existing, False
        return wait_until_ready(
            client, resource_group, name, timeout, poll_seconds, on_progress
        ), False
    parameters = {
        "location": location,
        "properties": {
            "createMode": mode,
            "sourceServerResourceId": source.id,
            "pointInTimeUTC": point.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            # Kept as the source had it, so the restored server can itself be geo-restored
            # (a failback) later.
            "backup": {
                "geoRedundantBackup": "Enabled" if source.geo_redundant_backup else "Disabled"
            },
        },
    }
    what = f"{mode} of {source.name} into {name} ({location})"
    with translated(what):
        try:
            poller = client.servers.begin_create_or_update(resource_group, name, parameters)
        except ResourceExistsError:
            # An attempt whose answer was lost (the SDK retried a 5xx) created it already.
            existing = read_server(client, resource_group, name)
            if existing is None:
                raise
            _check_ours(existing, source)
            return wait_until_ready(
                client, resource_group, name, timeout, poll_seconds, on_progress
            ), False
        wait_for(
            poller, what, on_progress, report_every=max(poll_seconds * 4, 30.0), timeout=timeout
        )
    restored = read_server(client, resource_group, name)
    if restored is None or not restored.ready:
        raise AzureRequestFailed(f"{what} finished, but the server is not Ready")
    return restored, True


def _check_ours(existing: FlexibleServer, source: FlexibleServer) -> None:
    if not _same(existing.source_server_id, source.id):
        raise ConfigError(
            f"flexible server {existing.name} already exists and was not restored from "
            f"{source.name}: name another target server, or remove it"
        )
