"""The vault's own protection against the plan: soft delete, its retention, purge protection.

A deleted secret (or vault) can be recovered only within the vault's soft-delete retention,
and only purge protection stops someone with the rights from purging it before then. The
plan asks for both; it names no retention, so :class:`VaultRequirements` asks for 90 days,
Azure's default and its maximum. :func:`audit_protection` compares what was read
(:class:`VaultSettings`) with it: a setting that falls short makes the state ``POLICY``,
with the plan's value; one that could not be read is unverified, never compliant
(:mod:`dr_runbooks.findings`).

Two readers:

- :func:`read_vault_settings`, through Azure Resource Manager (azure-mgmt-keyvault
  ``vaults.get``): ``enable_soft_delete``, ``soft_delete_retention_in_days``,
  ``enable_purge_protection``. The identity needs ``Reader`` on the vault.
- :func:`settings_from_recovery_levels`, when the system names no subscription and
  resource group or Resource Manager refuses: soft delete and purge protection as the
  secrets' recovery levels show them (:func:`~dr_runbooks.keyvault.backup.audit_vault`);
  the retention is not readable there and stays unverified, with why.

:func:`vault_protection` picks the reader and falls back, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from dr_runbooks.azure.errors import translated
from dr_runbooks.config import KeyVaultConfig
from dr_runbooks.errors import ConfigError, DRError
from dr_runbooks.findings import Audited, Finding, days_finding, switch_finding
from dr_runbooks.keyvault.backup import Protection, audit_vault
from dr_runbooks.text import first_line

__all__ = [
    "DATA_PLANE",
    "MANAGEMENT_PLANE",
    "SecretClients",
    "VaultAudit",
    "VaultClients",
    "VaultRequirements",
    "VaultSettings",
    "audit_protection",
    "read_protection",
    "read_vault_settings",
    "settings_from_recovery_levels",
    "vault_name_of",
    "vault_protection",
]

MANAGEMENT_PLANE = "management plane"
DATA_PLANE = "secrets' recovery levels"

#: Builds a ``KeyVaultManagementClient`` for (a subscription id, a site block's name or None):
#: the blocks' factory (``blocks.azure.MANAGEMENT_CLIENTS.keyvault``).
VaultClients = Callable[[str, str | None], Any]
#: Builds a ``SecretClient`` for a vault URL (the data plane, for the fallback).
SecretClients = Callable[[str], Any]


@dataclass(frozen=True)
class VaultRequirements:
    """What the plan asks of a vault whose secrets it protects."""

    soft_delete_retention_days: int = 90
    purge_protection: bool = True


@dataclass(frozen=True)
class VaultSettings:
    """What was read of one vault; None for a setting that could not be read."""

    vault: str
    soft_delete: bool | None = None
    #: Days a deleted secret can be recovered (with soft delete on).
    retention_days: int | None = None
    purge_protection: bool | None = None
    #: Why a setting could not be read, by setting.
    notes: dict[str, str] = field(default_factory=dict)
    #: ``management plane`` or ``secrets' recovery levels``.
    source: str = ""


@dataclass(frozen=True)
class VaultAudit(Audited):
    """The vault's findings; ``state``, ``compliant`` and ``describe`` come from
    :class:`~dr_runbooks.findings.Audited`."""

    settings: VaultSettings
    findings: list[Finding]

    @property
    def vault(self) -> str:
        return self.settings.vault

    @property
    def source(self) -> str:
        return self.settings.source

    def as_dict(self) -> dict[str, Any]:
        return {
            "vault": self.vault,
            "state": self.state,
            "source": self.source,
            "soft_delete": self.settings.soft_delete,
            "soft_delete_retention_days": self.settings.retention_days,
            "purge_protection": self.settings.purge_protection,
            "findings": [
                {"setting": f.setting, "required": f.required, "actual": f.actual, "ok": f.ok}
                for f in self.findings
            ],
        }


def audit_protection(settings: VaultSettings, plan: VaultRequirements | None = None) -> VaultAudit:
    """Compare a vault's settings with the plan's requirements."""
    plan = plan or VaultRequirements()
    findings = [
        _soft_delete(settings, plan.soft_delete_retention_days),
        switch_finding(
            "purge protection",
            settings.purge_protection,
            plan.purge_protection,
            settings.notes.get("purge protection"),
        ),
    ]
    return VaultAudit(settings, findings)


def _soft_delete(settings: VaultSettings, days: int) -> Finding:
    """Soft delete and its retention as one finding (off is 0 days)."""
    note = settings.notes.get("soft delete")
    if not settings.soft_delete:  # off, or not read
        return days_finding("soft delete", None if settings.soft_delete is None else 0, days, note)
    found = days_finding("soft delete", settings.retention_days, days, note)
    if settings.retention_days is None:
        return replace(found, actual=f"on, retention not read ({note or 'unknown'})")
    return found


def read_vault_settings(client: Any, resource_group: str, vault_name: str) -> VaultSettings:
    """The vault's properties through Azure Resource Manager: ``client`` is a
    ``KeyVaultManagementClient`` (a block builds it). Purge protection that the vault does not
    state is off (Azure omits it until it is turned on); a soft delete or retention it does
    not state is not read. SDK errors are ours here (403:
    :class:`~dr_runbooks.errors.ConnectionFailed`; 404:
    :class:`~dr_runbooks.errors.AzureRequestFailed`)."""
    with translated(f"reading the properties of vault {vault_name} in {resource_group}"):
        vault = client.vaults.get(resource_group, vault_name)
    properties = vault.properties
    retention = properties.soft_delete_retention_in_days
    soft_delete = properties.enable_soft_delete
    notes = {}
    if soft_delete is None or (soft_delete and retention is None):
        notes["soft delete"] = "the vault's properties do not state it"
    return VaultSettings(
        vault=vault_name,
        soft_delete=soft_delete,
        retention_days=int(retention) if retention is not None else None,
        purge_protection=bool(properties.enable_purge_protection),
        notes=notes,
        source=MANAGEMENT_PLANE,
    )


def settings_from_recovery_levels(vault: str, found: Protection, why: str) -> VaultSettings:
    """What the secrets' recovery levels show; ``why`` Resource Manager was not read."""
    if found.soft_delete is None:
        empty = "the vault holds no secret to read it from"
        notes = {"soft delete": empty, "purge protection": empty}
    else:
        notes = {"soft delete": f"management plane not read: {why}"}
    return VaultSettings(vault, found.soft_delete, None, found.purge_protection, notes, DATA_PLANE)


def vault_name_of(keyvault: KeyVaultConfig) -> str:
    """``vault_name``, or the first label of ``vault_url``'s host."""
    return keyvault.vault_name or (urlsplit(keyvault.vault_url).hostname or "").split(".")[0]


def read_protection(
    keyvault: KeyVaultConfig,
    management: VaultClients | None,
    secrets: SecretClients | None,
) -> VaultAudit:
    """The vault's audit: through Resource Manager when ``keyvault`` names a subscription and
    resource group and ``management`` can build a client, else (or when it refuses) from the
    secrets' recovery levels, read with a ``SecretClient`` from ``secrets``, saying why
    Resource Manager was not read. Raises :class:`~dr_runbooks.errors.DRError` when neither
    can be read."""
    if not keyvault.in_resource_manager:
        why = "the system names no subscription_id and resource_group"
    elif management is None:
        why = "no Resource Manager client here"
    else:
        group, name = str(keyvault.resource_group), vault_name_of(keyvault)
        try:
            client = management(str(keyvault.subscription_id), keyvault.site)
            read = read_vault_settings(client, group, name)
        except DRError as exc:
            why = first_line(exc)
        else:
            return audit_protection(read)
    if secrets is None:
        raise ConfigError(f"no credentials for the vault here; management plane not read: {why}")
    found = audit_vault(secrets(keyvault.vault_url))
    return audit_protection(settings_from_recovery_levels(keyvault.vault_url, found, why))


def vault_protection(
    keyvault: KeyVaultConfig,
    management: VaultClients | None,
    secrets: SecretClients | None,
) -> tuple[VaultAudit | None, str | None]:
    """The vault's audit (:func:`read_protection`), or None and why it could not be read."""
    try:
        return read_protection(keyvault, management, secrets), None
    except DRError as exc:
        return None, first_line(exc)
