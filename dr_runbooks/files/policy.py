"""The storage account's own protection against the plan: soft delete, versioning, redundancy.

The plan ("File Storage Backups") asks for blob soft delete of 30 days, versioning, and
zone-redundant storage; the issue adds container soft delete. :func:`audit` compares what
was read (:class:`AccountSettings`) with :class:`PolicyRequirements` and returns one
:class:`Finding` per setting. A setting that falls short makes the system's state
``POLICY``; one that could not be read is reported as unverified, never as compliant.

:func:`read_settings` reads what the blob data plane exposes (azure-storage-blob): the blob
soft-delete policy (service properties), the account's SKU (account information), and
versioning as far as the blobs show it (a listed blob carries a version id only when
versioning is on). Container soft delete is a management-plane setting (azure-mgmt-storage's
``BlobServiceProperties``), not readable here: it stays unverified until a reader for the
management plane fills it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dr_runbooks.files.source import BlobAccount

__all__ = [
    "AccountSettings",
    "Finding",
    "PolicyAudit",
    "PolicyRequirements",
    "audit",
    "read_settings",
]

#: SKUs that keep copies in several zones or in a second region.
RESILIENT_REDUNDANCY = ("ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS")


@dataclass(frozen=True)
class PolicyRequirements:
    """What the plan asks of a storage account that holds application files."""

    blob_soft_delete_days: int = 30
    container_soft_delete: bool = True
    versioning: bool = True
    redundancy: tuple[str, ...] = RESILIENT_REDUNDANCY


@dataclass(frozen=True)
class AccountSettings:
    """What was read of one account; None for a setting that could not be read."""

    account: str
    #: Days blobs are kept after deletion; 0 when soft delete is off.
    blob_soft_delete_days: int | None = None
    container_soft_delete_days: int | None = None
    versioning: bool | None = None
    #: ``Standard_ZRS``, ``Standard_RAGRS``…
    sku: str | None = None
    #: Where each setting was read from, or why it could not be.
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    setting: str
    required: str
    actual: str
    #: True: meets the plan; False: falls short; None: could not be read.
    ok: bool | None

    def describe(self) -> str:
        return f"{self.setting}: {self.actual} (plan: {self.required})"


@dataclass(frozen=True)
class PolicyAudit:
    account: str
    findings: list[Finding]

    @property
    def shortfalls(self) -> list[Finding]:
        return [f for f in self.findings if f.ok is False]

    @property
    def unverified(self) -> list[Finding]:
        return [f for f in self.findings if f.ok is None]

    @property
    def compliant(self) -> bool:
        return not self.shortfalls

    @property
    def state(self) -> str:
        """``POLICY`` when a setting falls short of the plan, else ``OK``."""
        return "OK" if self.compliant else "POLICY"

    def describe(self) -> str:
        """One line: what is missing, each with the plan's value."""
        if self.compliant:
            unread = ", ".join(f.setting for f in self.unverified)
            return "meets the plan" + (f" (not verified: {unread})" if unread else "")
        return "; ".join(f.describe() for f in self.shortfalls)

    def summary(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "state": self.state,
            "findings": [
                {"setting": f.setting, "required": f.required, "actual": f.actual, "ok": f.ok}
                for f in self.findings
            ],
        }


def audit(settings: AccountSettings, plan: PolicyRequirements | None = None) -> PolicyAudit:
    """Compare an account's settings with the plan's requirements."""
    plan = plan or PolicyRequirements()
    findings = [
        _days(
            "blob soft delete",
            settings.blob_soft_delete_days,
            plan.blob_soft_delete_days,
            settings.notes.get("blob soft delete"),
        ),
        _days(
            "container soft delete",
            settings.container_soft_delete_days,
            1 if plan.container_soft_delete else 0,
            settings.notes.get("container soft delete"),
        ),
        _switch(
            "versioning",
            settings.versioning,
            plan.versioning,
            settings.notes.get("versioning"),
        ),
        _redundancy(settings.sku, plan.redundancy, settings.notes.get("redundancy")),
    ]
    return PolicyAudit(settings.account, findings)


def read_settings(account: BlobAccount, containers: Sequence[str]) -> AccountSettings:
    """Read the account's settings through the blob data plane (see the module docstring)."""
    notes = {
        "container soft delete": "a management-plane setting (azure-mgmt-storage), "
        "not readable through the blob API"
    }
    properties = account.service_properties()
    policy = properties.get("delete_retention_policy")
    soft_delete = None
    if policy is not None:
        soft_delete = int(policy.days or 0) if policy.enabled else 0
    sku = account.account_information().get("sku_name")
    seen = [account.versioning_seen(container) for container in containers]
    if any(seen):
        versioning: bool | None = True
    elif any(s is False for s in seen):
        versioning = False
        notes["versioning"] = "no listed blob carries a version id"
    else:
        versioning = None
        notes["versioning"] = "the containers are empty: no blob to show a version id"
    return AccountSettings(
        account=account.location,
        blob_soft_delete_days=soft_delete,
        container_soft_delete_days=None,
        versioning=versioning,
        sku=str(sku) if sku else None,
        notes=notes,
    )


def _days(setting: str, actual: int | None, required: int, note: str | None) -> Finding:
    wanted = f"on, ≥ {required} days" if required > 1 else "on" if required else "any"
    if actual is None:
        return Finding(setting, wanted, f"not read ({note or 'unknown'})", None)
    shown = f"on, {actual} days" if actual else "off"
    return Finding(setting, wanted, shown, actual >= required)


def _switch(setting: str, actual: bool | None, required: bool, note: str | None) -> Finding:
    wanted = "on" if required else "any"
    if actual is None:
        return Finding(setting, wanted, f"not read ({note or 'unknown'})", None)
    shown = "on" if actual else "off" + (f" ({note})" if note else "")
    return Finding(setting, wanted, shown, actual or not required)


def _redundancy(sku: str | None, allowed: tuple[str, ...], note: str | None) -> Finding:
    wanted = " or ".join(allowed)
    if not sku:
        return Finding("redundancy", wanted, f"not read ({note or 'unknown'})", None)
    kind = sku.rsplit("_", 1)[-1].upper()
    return Finding("redundancy", wanted, sku, kind in allowed)
