"""Azure blocks: the credentials, and one ``AzureSite`` per region with the client factories of
every SDK client the Azure runbooks use.

::

    site = AzureSite.load("site-westus2")
    dns = site.get_dns_client()
    rules = site.get_network_client().network_security_groups.get(site.resource_group, "nsg")

Credentials come from azure-identity only: ``DefaultAzureCredential`` (managed identity,
workload identity, environment, Azure CLI) unless a client secret is given. The endpoint
fields (``resource_manager_url``, ``ca_bundle``) serve sovereign clouds and TLS-inspecting
proxies, and let a test point the real clients at a local endpoint; each factory also takes an
explicit ``credential``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, field_validator, model_validator

from blocks.fields import OptionalSecret
from blocks.loading import load_block
from dr_runbooks.errors import ConfigError
from dr_runbooks.redaction import register_secret

__all__ = ["MANAGEMENT_CLIENTS", "AzureCredentials", "AzureSite", "ManagementClients"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_REGION = re.compile(r"^[a-z0-9]+$")
_DNS_LABEL = re.compile(r"^(@|\*|[A-Za-z0-9_]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9_])?)$")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")


class AzureCredentials(Block):
    """How the runbooks sign in to Azure.

    Without a client secret: ``DefaultAzureCredential`` (a managed identity on the worker, a
    workload identity, ``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET`` in the environment, or ``az
    login``). With one: that service principal.
    """

    _block_type_name = "DR Azure Credentials"
    _block_type_slug = "dr-azure-credentials"
    _description = "Azure sign-in for the dr-runbooks Azure runbooks (azure-identity)."

    tenant_id: str | None = Field(
        default=None, description="Microsoft Entra tenant id (with a client secret)."
    )
    client_id: str | None = Field(
        default=None, description="Application (client) id of a service principal."
    )
    client_secret: OptionalSecret = Field(
        default=None, description="The service principal's secret; empty: DefaultAzureCredential."
    )
    managed_identity_client_id: str | None = Field(
        default=None,
        description="Client id of a user-assigned managed identity for DefaultAzureCredential.",
    )
    authority_host: str | None = Field(
        default=None,
        description="Sign-in authority for a sovereign cloud, e.g. "
        "`login.microsoftonline.us` (default: the public cloud).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AzureCredentials:
        if self.client_secret is not None and not (self.tenant_id and self.client_id):
            raise ValueError("a client secret needs the tenant id and the client id")
        if self.client_id and self.client_secret is None:
            raise ValueError(
                "a client id needs its client secret; for a user-assigned managed identity "
                "use managed_identity_client_id"
            )
        if self.client_secret is not None and self.managed_identity_client_id:
            raise ValueError("give a client secret or a managed identity, not both")
        return self

    def get_credential(self, **transport: Any) -> Any:
        """A ``TokenCredential``; ``transport`` (e.g. ``connection_verify``) goes to its HTTP
        pipeline."""
        options = dict(transport)
        if self.authority_host:
            options["authority"] = self.authority_host
        if self.client_secret is not None:
            from azure.identity import ClientSecretCredential

            secret = self.client_secret.get_secret_value()
            register_secret(secret)
            return ClientSecretCredential(
                str(self.tenant_id), str(self.client_id), secret, **options
            )
        from azure.identity import DefaultAzureCredential

        if self.managed_identity_client_id:
            options["managed_identity_client_id"] = self.managed_identity_client_id
        return DefaultAzureCredential(**options)


class AzureSite(Block):
    """One region of a system on Azure: where its resources are, what the DNS records point at
    when it serves, what isolates it, how to check it, how to deploy it.

    The primary and the DR site of a system are two of these, named in ``dr.yaml`` under the
    system's ``sites``.
    """

    _block_type_name = "DR Azure Site"
    _block_type_slug = "dr-azure-site"
    _description = "One Azure region of a system protected by dr-runbooks."

    credentials: AzureCredentials = Field(
        default_factory=AzureCredentials,
        description="How to sign in (empty: DefaultAzureCredential).",
    )
    subscription_id: str = Field(description="Subscription of this site's resources.")
    resource_group: str = Field(
        description="Resource group of this site, e.g. rg-dot-copilot-prod."
    )
    region: str = Field(description="Azure region, e.g. `eastus` or `westus2`.")
    postgres_server: str | None = Field(
        default=None,
        description="PostgreSQL flexible server of this site, e.g. dot-copilot-db-prod.",
    )
    postgres_resource_group: str | None = Field(
        default=None, description="Resource group of the flexible server (default: resource_group)."
    )
    dns_zone: str | None = Field(default=None, description="DNS zone, e.g. dotcopilot.com.")
    dns_resource_group: str | None = Field(
        default=None, description="Resource group of the DNS zone, e.g. rg-dot-copilot-dns."
    )
    dns_subscription_id: str | None = Field(
        default=None, description="Subscription of the DNS zone (default: subscription_id)."
    )
    dns_records: dict[str, list[str]] = Field(
        default_factory=dict,
        description="A records and the IPv4 addresses they hold while this site serves, e.g. "
        '`{"www": ["20.1.2.3"], "api": ["20.1.2.4"]}`.',
    )
    dns_ttl: int | None = Field(
        default=None,
        ge=1,
        description="TTL set at a cutover to this site (default: keep the record's).",
    )
    network_security_groups: list[str] = Field(
        default_factory=list, description="NSGs isolated by the security-breach runbook."
    )
    key_vault_url: str | None = Field(
        default=None,
        description="Key Vault of this site, e.g. https://kv-dot-copilot.vault.azure.net.",
    )
    health_urls: list[str] = Field(
        default_factory=list,
        description="Health endpoints of this site, e.g. https://api.dotcopilot.com/health/ready "
        "(checked before a failback to it and after a cutover).",
    )
    deploy_template: str | None = Field(
        default=None,
        description="ARM template (JSON; compile Bicep with `az bicep build`) of this site's "
        "infrastructure, deployed with a what-if first.",
    )
    deploy_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of the template."
    )
    deployment_name: str = Field(default="dr-site", description="Name of the template deployment.")
    deploy_command: list[str] | None = Field(
        default=None,
        description="Or a command that deploys the site, e.g. "
        '`["./deploy.sh", "--environment", "prod", "--region", "westus2"]`.',
    )
    deploy_directory: str | None = Field(
        default=None, description="Directory the deploy command runs in (infrastructure/azure)."
    )
    deploy_timeout_seconds: int = Field(
        default=3600, ge=1, description="How long the deployment may take."
    )
    resource_manager_url: str | None = Field(
        default=None,
        description="Azure Resource Manager endpoint for a sovereign cloud or a private "
        "endpoint, e.g. https://management.usgovcloudapi.net (default: the public cloud).",
    )
    ca_bundle: str | None = Field(
        default=None,
        description="CA certificates (PEM file) to trust, for a TLS-inspecting proxy or a "
        "private endpoint (default: the system's).",
    )
    poll_interval_seconds: float = Field(
        default=15.0, gt=0, description="Seconds between polls of a long-running operation."
    )
    retry_total: int = Field(
        default=5, ge=0, le=20, description="Retries of a throttled (429) or failed (5xx) request."
    )
    retry_backoff_seconds: float = Field(
        default=0.8, ge=0, description="First back-off between retries (it doubles each time)."
    )

    _credential: Any = PrivateAttr(default=None)

    @field_validator("subscription_id", "dns_subscription_id")
    @classmethod
    def _subscription(cls, value: str | None) -> str | None:
        if value is not None and not _UUID.match(value):
            raise ValueError(f"{value!r} is not a subscription id (a GUID)")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError(f"{value!r} is not a region name like eastus or westus2")
        return value

    @field_validator("key_vault_url", "resource_manager_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme != "https":
            raise ValueError(f"{value!r} must be an https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _consistent(self) -> AzureSite:
        if self.deploy_template and self.deploy_command:
            raise ValueError("give a deploy template or a deploy command, not both")
        if self.dns_records and not self.dns_zone:
            raise ValueError("dns_records need the dns_zone they are in")
        for name, addresses in self.dns_records.items():
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{name!r} is not a record name (www, api, @)")
            if not addresses:
                raise ValueError(f"record {name} lists no address")
            for address in addresses:
                if not _IPV4.match(address):
                    raise ValueError(f"record {name}: {address!r} is not an IPv4 address")
        if self.deploy_command is not None and not self.deploy_command:
            raise ValueError("the deploy command is empty")
        return self

    # -- where things are ---------------------------------------------------------------------

    @property
    def server_resource_group(self) -> str:
        return self.postgres_resource_group or self.resource_group

    @property
    def zone_resource_group(self) -> str:
        return self.dns_resource_group or self.resource_group

    def server_id(self, name: str | None = None) -> str:
        """The ARM id of the site's flexible server (or of ``name`` in its resource group)."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.server_resource_group}"
            f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{name or self.postgres_server}"
        )

    def describe(self) -> str:
        return f"{self.region} ({self.resource_group})"

    # -- client factories ---------------------------------------------------------------------

    def _transport(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "retry_total": self.retry_total,
            "retry_backoff_factor": self.retry_backoff_seconds,
        }
        if self.ca_bundle:
            options["connection_verify"] = self.ca_bundle
        return options

    def get_credential(self) -> Any:
        """The site's ``TokenCredential`` (one per block instance: its tokens are cached)."""
        if self._credential is None:
            verify = {"connection_verify": self.ca_bundle} if self.ca_bundle else {}
            self._credential = self.credentials.get_credential(**verify)
        return self._credential

    def _arm(self, client_type: Any, credential: Any, subscription: str | None = None) -> Any:
        options = self._transport()
        options["polling_interval"] = self.poll_interval_seconds
        if self.resource_manager_url:
            options["base_url"] = self.resource_manager_url
            options["credential_scopes"] = [self.resource_manager_url + "/.default"]
        return client_type(
            credential or self.get_credential(), subscription or self.subscription_id, **options
        )

    def get_resource_client(self, credential: Any = None) -> Any:
        """``ResourceManagementClient`` (resource groups)."""
        from azure.mgmt.resource.resources import ResourceManagementClient

        return self._arm(ResourceManagementClient, credential)

    def get_deployments_client(self, credential: Any = None) -> Any:
        """``DeploymentsMgmtClient`` (template deployments and what-if)."""
        from azure.mgmt.resource.deployments import DeploymentsMgmtClient

        return self._arm(DeploymentsMgmtClient, credential)

    def get_dns_client(self, credential: Any = None) -> Any:
        """``DnsManagementClient`` for the subscription of the site's DNS zone."""
        from azure.mgmt.dns import DnsManagementClient

        return self._arm(DnsManagementClient, credential, self.dns_subscription_id)

    def get_network_client(self, credential: Any = None) -> Any:
        """``NetworkManagementClient`` (network security groups and their rules)."""
        from azure.mgmt.network import NetworkManagementClient

        return self._arm(NetworkManagementClient, credential)

    def get_postgres_client(self, credential: Any = None) -> Any:
        """``PostgreSQLManagementClient`` of azure-mgmt-postgresqlflexibleservers (GeoRestore,
        PointInTimeRestore)."""
        from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

        return self._arm(PostgreSQLManagementClient, credential)

    def get_storage_client(self, credential: Any = None, subscription: str | None = None) -> Any:
        """``StorageManagementClient`` of azure-mgmt-storage (a storage account's SKU and its
        blob service's soft delete and versioning), for the site's subscription or
        ``subscription``."""
        from azure.mgmt.storage import StorageManagementClient

        return self._arm(StorageManagementClient, credential, subscription)

    def get_keyvault_management_client(
        self, credential: Any = None, subscription: str | None = None
    ) -> Any:
        """``KeyVaultManagementClient`` of azure-mgmt-keyvault (a vault's soft delete, its
        retention and purge protection), for the site's subscription or ``subscription``."""
        from azure.mgmt.keyvault import KeyVaultManagementClient

        return self._arm(KeyVaultManagementClient, credential, subscription)

    def get_secret_client(self, credential: Any = None) -> Any:
        """Key Vault ``SecretClient`` of the site's vault."""
        from azure.keyvault.secrets import SecretClient

        if not self.key_vault_url:
            raise ConfigError(f"site {self.describe()} names no key_vault_url")
        return SecretClient(
            self.key_vault_url, credential or self.get_credential(), **self._transport()
        )


class ManagementClients:
    """Resource Manager clients for the protection audits of the storage account and Key Vault
    systems in dr.yaml (``files:``/``keyvault:`` with ``subscription_id``, ``resource_group``
    and an optional ``site``); :class:`dr_runbooks.status.ManagementClients`.

    With a site: that saved ``AzureSite`` block's credentials, Resource Manager endpoint and CA
    bundle. Without: ``AzureCredentials()`` (``DefaultAzureCredential``) on the public cloud.
    A block that cannot be loaded is one :class:`~dr_runbooks.errors.ConfigError` line.
    """

    def storage(self, subscription_id: str, site: str | None = None) -> Any:
        from azure.mgmt.storage import StorageManagementClient

        if site:
            return _site(site).get_storage_client(subscription=subscription_id)
        return StorageManagementClient(AzureCredentials().get_credential(), subscription_id)

    def keyvault(self, subscription_id: str, site: str | None = None) -> Any:
        from azure.mgmt.keyvault import KeyVaultManagementClient

        if site:
            return _site(site).get_keyvault_management_client(subscription=subscription_id)
        return KeyVaultManagementClient(AzureCredentials().get_credential(), subscription_id)


def _site(name: str) -> AzureSite:
    block = load_block(name, AzureSite, "Azure site block")
    if not isinstance(block, AzureSite):
        raise ConfigError(f"block {name!r} is not an Azure site block")
    return block


MANAGEMENT_CLIENTS = ManagementClients()
