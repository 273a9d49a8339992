"""DNS A records in an Azure DNS zone: read them with their ETag, change them only if nobody
else did, put them back.

The ETag is what keeps two runs from both cutting DNS over: the rollback plan holds each
record's ETag as it was captured, and the cutover writes with ``If-Match`` on it. A record that
moved since (another run, a person) is refused with :class:`ConcurrentChange` instead of being
overwritten.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from dr_runbooks.azure.errors import translated
from dr_runbooks.errors import ConcurrentChange

__all__ = [
    "ARecordSet",
    "cut_over",
    "delete_a_record",
    "read_a_record",
    "restore_a_record",
    "write_a_record",
]


@dataclass(frozen=True)
class ARecordSet:
    """One A record set: its addresses and TTL, and its ETag (None: it does not exist)."""

    zone: str
    name: str
    addresses: tuple[str, ...] = ()
    ttl: int | None = None
    etag: str | None = None

    @property
    def exists(self) -> bool:
        return self.etag is not None

    @property
    def fqdn(self) -> str:
        return self.zone if self.name == "@" else f"{self.name}.{self.zone}"

    def points_at(self, addresses: list[str] | tuple[str, ...]) -> bool:
        return self.exists and sorted(self.addresses) == sorted(addresses)

    def describe(self) -> str:
        if not self.exists:
            return "(no record)"
        return f"{', '.join(self.addresses) or '(empty)'} TTL {self.ttl}"

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "name": self.name,
            "addresses": list(self.addresses),
            "ttl": self.ttl,
            "etag": self.etag,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ARecordSet:
        return cls(
            zone=data["zone"],
            name=data["name"],
            addresses=tuple(data.get("addresses") or ()),
            ttl=data.get("ttl"),
            etag=data.get("etag"),
        )


def _from_sdk(zone: str, name: str, record: Any) -> ARecordSet:
    addresses = tuple(a.ipv4_address for a in (record.a_records or []) if a.ipv4_address)
    return ARecordSet(zone, name, addresses, record.ttl, record.etag or "")


def read_a_record(client: Any, resource_group: str, zone: str, name: str) -> ARecordSet:
    """The record set as it is now (``exists`` False when there is none)."""
    with translated(f"reading the A record {name}.{zone}"):
        try:
            record = client.record_sets.get(resource_group, zone, name, "A")
        except ResourceNotFoundError:
            return ARecordSet(zone, name)
    return _from_sdk(zone, name, record)


def write_a_record(
    client: Any,
    resource_group: str,
    zone: str,
    name: str,
    addresses: list[str] | tuple[str, ...],
    ttl: int,
    *,
    if_match: str | None,
) -> ARecordSet:
    """Set the record's addresses and TTL, only if its ETag is still ``if_match`` (None: only
    if it does not exist)."""
    from azure.mgmt.dns.models import ARecord, RecordSet

    parameters = RecordSet(ttl=ttl, a_records=[ARecord(ipv4_address=a) for a in addresses])
    condition = {"if_match": if_match} if if_match else {"if_none_match": "*"}
    with translated(f"changing the A record {name}.{zone}"):
        record = client.record_sets.create_or_update(
            resource_group, zone, name, "A", parameters, **condition
        )
    return _from_sdk(zone, name, record)


def delete_a_record(client: Any, resource_group: str, zone: str, name: str, if_match: str) -> None:
    with (
        translated(f"deleting the A record {name}.{zone}"),
        contextlib.suppress(ResourceNotFoundError),
    ):
        client.record_sets.delete(resource_group, zone, name, "A", if_match=if_match)


def cut_over(
    client: Any,
    resource_group: str,
    planned: ARecordSet,
    addresses: list[str],
    ttl: int | None,
) -> tuple[ARecordSet, bool]:
    """Point ``planned``'s record at ``addresses`` if it is still as the plan captured it.

    Returns the record now and whether this call changed it (False: it already pointed
    there, say from a run that crashed after changing it). Raises :class:`ConcurrentChange`
    when the record moved elsewhere since the plan was captured.
    """
    current = read_a_record(client, resource_group, planned.zone, planned.name)
    if current.points_at(addresses):
        return current, False
    if current.etag != planned.etag:
        raise ConcurrentChange(
            f"{planned.fqdn} changed since the rollback plan was captured (was "
            f"{planned.describe()}, now {current.describe()}): another run or a person "
            f"changed it; it was left as it is"
        )
    new_ttl = ttl or planned.ttl or 300
    try:
        written = write_a_record(
            client,
            resource_group,
            planned.zone,
            planned.name,
            addresses,
            new_ttl,
            if_match=planned.etag,
        )
    except ConcurrentChange:
        again = read_a_record(client, resource_group, planned.zone, planned.name)
        if again.points_at(addresses):
            return again, False
        raise
    return written, True


def restore_a_record(client: Any, resource_group: str, planned: ARecordSet) -> tuple[str, bool]:
    """Put a record back as the plan captured it (removing it if it did not exist); returns
    what it holds now and whether this call changed it."""
    current = read_a_record(client, resource_group, planned.zone, planned.name)
    if not planned.exists:
        if current.exists:
            delete_a_record(client, resource_group, planned.zone, planned.name, current.etag or "*")
            return "(no record)", True
        return "(no record)", False
    if current.points_at(planned.addresses) and current.ttl == planned.ttl:
        return current.describe(), False
    written = write_a_record(
        client,
        resource_group,
        planned.zone,
        planned.name,
        planned.addresses,
        planned.ttl or 300,
        if_match=current.etag if current.exists else None,
    )
    return written.describe(), True
