"""A system on Azure as the runbook tests see it: a primary site in eastus and a DR site in
westus2 (two saved ``AzureSite`` blocks pointed at the loopback endpoint), a flexible server
with geo-redundant backups, a DNS zone with the plan's ``www`` and ``api`` records, an NSG,
a Key Vault, health endpoints, and a dr.yaml naming them."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocks.azure import AzureSite
from tests.azure.health import HealthServer
from tests.azure_api import AzureApi

SUBSCRIPTION = "0f3c2a51-7d4e-4b1a-9c2e-5a6b7c8d9e01"
PRIMARY_RG = "rg-dot-copilot-prod"
DR_RG = "rg-dot-copilot-prod-dr"
DNS_RG = "rg-dot-copilot-dns"
ZONE = "dotcopilot.com"
PRIMARY_SERVER = "dot-copilot-db-prod"
DR_SERVER = "dot-copilot-db-prod-dr"
NSG = "nsg-dot-copilot"
PRIMARY_ADDRESSES = {"www": ["20.50.1.10"], "api": ["20.50.1.11"]}
DR_ADDRESSES = {"www": ["20.60.2.10"], "api": ["20.60.2.11"]}
TTLS = {"www": 300, "api": 60}
EARLIEST = "2026-11-01T00:00:00Z"
LATEST_BACKUP = "2026-11-28T05:00:00Z"

TEMPLATE = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {"location": {"type": "string"}},
    "resources": [
        {
            "type": "Microsoft.Network/publicIPAddresses",
            "apiVersion": "2024-05-01",
            "name": "pip-dot-copilot-dr",
            "location": "[parameters('location')]",
            "properties": {"publicIPAllocationMethod": "Static"},
        },
        {
            "type": "Microsoft.Web/sites",
            "apiVersion": "2024-04-01",
            "name": "app-dot-copilot-dr",
            "location": "[parameters('location')]",
            "properties": {"httpsOnly": True},
        },
    ],
}


def rid(group: str, provider: str = "") -> str:
    base = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"
    return f"{base}/providers/{provider}" if provider else base


def record_id(name: str) -> str:
    return rid(DNS_RG, f"Microsoft.Network/dnszones/{ZONE}/A/{name}")


def server_id(group: str, name: str) -> str:
    return rid(group, f"Microsoft.DBforPostgreSQL/flexibleServers/{name}")


@dataclass
class Landscape:
    api: AzureApi
    health: HealthServer
    system: str
    config: str
    records: Path
    primary: str
    dr: str
    tmp: Path
    blocks: list[str] = field(default_factory=list)

    def a_record(self, name: str) -> tuple[list[str], int]:
        resource = self.api.resource(record_id(name))
        assert resource is not None
        properties = resource["properties"]
        return [a["ipv4Address"] for a in properties["ARecords"]], properties["TTL"]

    def addresses(self) -> dict[str, list[str]]:
        return {name: self.a_record(name)[0] for name in ("www", "api")}

    def dr_server(self) -> dict[str, Any] | None:
        return self.api.resource(server_id(DR_RG, DR_SERVER))

    def nsg_rules(self) -> dict[str, dict[str, Any]]:
        nsg = self.api.resource(rid(PRIMARY_RG, f"Microsoft.Network/networkSecurityGroups/{NSG}"))
        assert nsg is not None
        return {r["name"]: r["properties"] for r in nsg["properties"]["securityRules"]}

    def record_file(self) -> Path:
        return self.records / "failover" / self.system / "active.json"


def seed(api: AzureApi) -> None:
    """The primary as it runs: its group, its server and backups, DNS pointing at it, an NSG."""
    api.seed(rid(PRIMARY_RG), {"location": "eastus"})
    api.seed(rid(DNS_RG), {"location": "global"})
    api.seed(
        server_id(PRIMARY_RG, PRIMARY_SERVER),
        {
            "location": "eastus",
            "properties": {
                "version": "16",
                "backup": {"geoRedundantBackup": "Enabled", "earliestRestoreDate": EARLIEST},
            },
        },
    )
    for n, completed in enumerate(("2026-11-27T05:00:00Z", LATEST_BACKUP)):
        api.seed(
            server_id(PRIMARY_RG, PRIMARY_SERVER) + f"/backups/backup-{n}",
            {"properties": {"backupType": "Full", "completedTime": completed}},
        )
    api.seed(rid(DNS_RG, f"Microsoft.Network/dnszones/{ZONE}"), {"location": "global"})
    for name, addresses in PRIMARY_ADDRESSES.items():
        api.seed(
            record_id(name),
            {
                "properties": {
                    "TTL": TTLS[name],
                    "ARecords": [{"ipv4Address": a} for a in addresses],
                }
            },
        )
    nsg = rid(PRIMARY_RG, f"Microsoft.Network/networkSecurityGroups/{NSG}")
    api.seed(nsg, {"location": "eastus"})
    api.seed(
        nsg + "/securityRules/AllowHTTPS",
        {
            "properties": {
                "priority": 100,
                "direction": "Inbound",
                "access": "Allow",
                "protocol": "Tcp",
                "sourceAddressPrefix": "*",
                "destinationAddressPrefix": "*",
                "sourcePortRange": "*",
                "destinationPortRange": "443",
            }
        },
    )


def site(api: AzureApi, **fields: Any) -> AzureSite:
    return AzureSite(
        subscription_id=SUBSCRIPTION,
        resource_manager_url=api.url,
        ca_bundle=api.ca_file,
        key_vault_url=api.url,
        poll_interval_seconds=0.05,
        retry_backoff_seconds=0.01,
        dns_zone=ZONE,
        dns_resource_group=DNS_RG,
        **fields,
    )


def build(
    api: AzureApi,
    health: HealthServer,
    tmp: Path,
    *,
    dr_fields: dict[str, Any] | None = None,
    system_yaml: str = "",
) -> Landscape:
    """Seed the endpoint, save both site blocks, write dr.yaml; returns the landscape."""
    seed(api)
    template = tmp / "dr-site.json"
    template.write_text(json.dumps(TEMPLATE))
    token = secrets.token_hex(4)
    primary, dr = f"site-eastus-{token}", f"site-westus2-{token}"
    site(
        api,
        resource_group=PRIMARY_RG,
        region="eastus",
        postgres_server=PRIMARY_SERVER,
        dns_records=PRIMARY_ADDRESSES,
        network_security_groups=[NSG],
        health_urls=health.urls,
    ).save(primary, overwrite=True)
    site(
        api,
        **{
            "resource_group": DR_RG,
            "region": "westus2",
            "postgres_server": DR_SERVER,
            "dns_records": DR_ADDRESSES,
            "health_urls": health.urls,
            "deploy_template": str(template),
            "deploy_parameters": {"location": "westus2"},
            **(dr_fields or {}),
        },
    ).save(dr, overwrite=True)
    system = f"shop-{token}"
    records = tmp / "records"
    config = tmp / "dr.yaml"
    config.write_text(
        f"""
objectives:
  rto: {{critical: 4h}}
repositories:
  records: {{type: local, path: {records}}}
systems:
  {system}:
    engine: postgres
    tier: critical
    repositories: [records]
    sites: {{primary: {primary}, dr: {dr}}}
{system_yaml}
"""
    )
    return Landscape(api, health, system, str(config), records, primary, dr, tmp, [primary, dr])
