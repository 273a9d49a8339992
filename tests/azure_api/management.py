"""The Resource Manager side of the protection audits, against the loopback endpoint: a storage
account and a key vault as Azure would hold them, and the real management clients from an
``AzureSite`` block pointed at the endpoint (not saved: no Prefect server needed)."""

from __future__ import annotations

from typing import Any

from blocks.azure import AzureSite
from tests.azure_api.server import TENANT, AzureApi

__all__ = [
    "GROUP",
    "SUBSCRIPTION",
    "SiteClients",
    "account_id",
    "seed_account",
    "seed_vault",
    "site_block",
    "vault_id",
]

SUBSCRIPTION = "5c1f9e2a-3b4d-4e6f-8a9b-0c1d2e3f4a5b"
GROUP = "rg-dot-copilot-data"


def group_id(group: str = GROUP) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"


def account_id(name: str, group: str = GROUP) -> str:
    return f"{group_id(group)}/providers/Microsoft.Storage/storageAccounts/{name}"


def vault_id(name: str, group: str = GROUP) -> str:
    return f"{group_id(group)}/providers/Microsoft.KeyVault/vaults/{name}"


def site_block(api: AzureApi) -> AzureSite:
    """A site whose Resource Manager is the endpoint; its credentials are the default
    (``DefaultAzureCredential``), so a saved copy signs in as the endpoint's managed identity."""
    return AzureSite(
        subscription_id=SUBSCRIPTION,
        resource_group=GROUP,
        region="eastus",
        resource_manager_url=api.url,
        ca_bundle=api.ca_file,
        retry_total=0,
    )


class SiteClients:
    """``dr_runbooks.status.ManagementClients`` from :func:`site_block`'s factories, signed in
    with the endpoint's token: what ``blocks.azure.MANAGEMENT_CLIENTS`` gives for a saved site,
    without the Prefect server."""

    def __init__(self, api: AzureApi) -> None:
        self.api = api

    def storage(self, subscription_id: str, site: str | None = None) -> Any:
        block = site_block(self.api)
        return block.get_storage_client(self.api.credential(), subscription_id)

    def keyvault(self, subscription_id: str, site: str | None = None) -> Any:
        block = site_block(self.api)
        return block.get_keyvault_management_client(self.api.credential(), subscription_id)


def seed_account(
    api: AzureApi,
    name: str,
    *,
    sku: str = "Standard_ZRS",
    kind: str = "StorageV2",
    blob_days: int | None = 30,
    container_days: int | None = 7,
    versioning: bool = True,
) -> None:
    """A storage account and its blob service; ``None`` days: that soft delete is off."""
    api.seed(group_id(), {"location": "eastus"})
    api.seed(account_id(name), {"location": "eastus", "kind": kind, "sku": {"name": sku}})
    api.seed(
        account_id(name) + "/blobServices/default",
        {
            "properties": {
                "deleteRetentionPolicy": _retention(blob_days),
                "containerDeleteRetentionPolicy": _retention(container_days),
                "isVersioningEnabled": versioning,
            }
        },
    )


def seed_vault(
    api: AzureApi,
    name: str,
    *,
    soft_delete: bool = True,
    retention_days: int = 90,
    purge_protection: bool = True,
) -> None:
    """A key vault with these protection settings."""
    api.seed(group_id(), {"location": "eastus"})
    api.seed(
        vault_id(name),
        {
            "location": "eastus",
            "properties": {
                "tenantId": TENANT,
                "sku": {"family": "A", "name": "standard"},
                "enableSoftDelete": soft_delete,
                "softDeleteRetentionInDays": retention_days,
                "enablePurgeProtection": purge_protection,
            },
        },
    )


def _retention(days: int | None) -> dict[str, Any]:
    return {"enabled": True, "days": days} if days else {"enabled": False}
