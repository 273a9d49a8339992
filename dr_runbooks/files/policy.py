"""The storage account's own protection against the plan: soft delete, versioning, redundancy.

The plan ("File Storage Backups") asks for blob soft delete of 30 days, versioning, and
zone-redundant storage; the issue adds container soft delete. :func:`audit` compares what
was read (:class:`AccountSettings`) with :class:`PolicyRequirements` and returns one
:class:`Finding` per setting. A setting that falls short makes the system's state
``POLICY``; one that could not be read is reported as unverified, never as compliant
(:mod:`dr_runbooks.findings`).

Two readers:

- :func:`read_management_settings`, through Azure Resource Manager (azure-mgmt-storage):
  the account's SKU and kind (``storage_accounts.get_properties``) and its blob service
  (``blob_services.get_service_properties``: blob and container soft delete, versioning).
  It reads every setting; the identity needs ``Reader`` on the account.
- :func:`read_settings`, through the blob data plane (azure-storage-blob), when the system
  names no subscription and resource group or the management plane refuses: the blob
  soft-delete policy (service properties), the SKU (account information), and versioning as
  far as the blobs show it (a listed blob carries a version id only when versioning is on).
  Container soft delete is not readable there: it stays unverified, with why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dr_runbooks.azure.errors import translated
from dr_runbooks.files.source import BlobAccount
from dr_runbooks.findings import Audited, Finding, days_finding, switch_finding

__all__ = [
    "MANAGEMENT_PLANE",
    "AccountSettings",
    "Finding",
    "PolicyAudit",
    "PolicyRequirements",
    "audit",
    "read_management_settings",
    "read_settings",
]

#: SKUs that keep copies in several zones or in a second region.
RESILIENT_REDUNDANCY = ("ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS")

#: Where :func:`read_management_settings` read from (``AccountSettings.source``).
MANAGEMENT_PLANE = "management plane"
DATA_PLANE = "blob data plane"


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
    #: ``StorageV2``, ``BlockBlobStorage``… (management plane only).
    kind: str | None = None
    #: Where each setting was read from, or why it could not be.
    notes: dict[str, str] = field(default_factory=dict)
    #: ``management plane`` or ``blob data plane``.
    source: str = ""


@dataclass(frozen=True)
class PolicyAudit(Audited):
    """The account's findings; ``state``, ``compliant`` and ``describe`` come from
    :class:`~dr_runbooks.findings.Audited`."""

    account: str
    findings: list[Finding]
    source: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "state": self.state,
            "source": self.source,
            "findings": [
                {"setting": f.setting, "required": f.required, "actual": f.actual, "ok": f.ok}
                for f in self.findings
            ],
        }


def audit(settings: AccountSettings, plan: PolicyRequirements | None = None) -> PolicyAudit:
    """Compare an account's settings with the plan's requirements."""
    plan = plan or PolicyRequirements()
    notes = settings.notes
    findings = [
        days_finding(
            "blob soft delete",
            settings.blob_soft_delete_days,
            plan.blob_soft_delete_days,
            notes.get("blob soft delete"),
        ),
        days_finding(
            "container soft delete",
            settings.container_soft_delete_days,
            1 if plan.container_soft_delete else 0,
            notes.get("container soft delete"),
        ),
        switch_finding("versioning", settings.versioning, plan.versioning, notes.get("versioning")),
        _redundancy(settings.sku, plan.redundancy, notes.get("redundancy")),
    ]
    return PolicyAudit(settings.account, findings, settings.source)


def read_management_settings(
    client: Any, resource_group: str, account_name: str
) -> AccountSettings:
    """Every setting the plan asks about, through Azure Resource Manager: ``client`` is a
    ``StorageManagementClient`` (a block builds it). A retention policy or versioning that
    the blob service does not state is off, as Azure treats it. SDK errors are ours here
    (403: :class:`~dr_runbooks.errors.ConnectionFailed`; 404:
    :class:`~dr_runbooks.errors.AzureRequestFailed`)."""
    where = f"storage account {account_name} in resource group {resource_group}"
    with translated(f"reading the properties of {where}"):
        account = client.storage_accounts.get_properties(resource_group, account_name)
    with translated(f"reading the blob service properties of {where}"):
        blob = client.blob_services.get_service_properties(resource_group, account_name)
    kind = _text(account.kind)
    notes = {}
    versioning = bool(blob.is_versioning_enabled)
    if not versioning and kind == "Storage":
        notes["versioning"] = "a general-purpose v1 account has none: upgrade it to StorageV2"
    return AccountSettings(
        account=account_name,
        blob_soft_delete_days=_retention(blob.delete_retention_policy),
        container_soft_delete_days=_retention(blob.container_delete_retention_policy),
        versioning=versioning,
        sku=_text(account.sku.name) if account.sku is not None else None,
        kind=kind,
        notes=notes,
        source=MANAGEMENT_PLANE,
    )


def read_settings(
    account: BlobAccount, containers: Sequence[str], management: str | None = None
) -> AccountSettings:
    """Read the account's settings through the blob data plane (see the module docstring);
    ``management`` says why the management plane was not read."""
    why = management or "a management-plane setting, not readable through the blob API"
    notes = {"container soft delete": f"management plane not read: {why}"}
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
        source=DATA_PLANE,
    )


def _retention(policy: Any) -> int:
    """Days a soft-delete policy keeps what was deleted; 0 when it is off or absent."""
    if policy is None or not policy.enabled:
        return 0
    return int(policy.days or 0)


def _text(value: Any) -> str | None:
    """An SDK enum's value (``Standard_ZRS``), or the string the service sent."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _redundancy(sku: str | None, allowed: tuple[str, ...], note: str | None) -> Finding:
    wanted = " or ".join(allowed)
    if not sku:
        return Finding("redundancy", wanted, f"not read ({note or 'unknown'})", None)
    kind = sku.rsplit("_", 1)[-1].upper()
    return Finding("redundancy", wanted, sku, kind in allowed)
