"""The vault's own protection against the plan (soft delete kept ≥ 90 days, purge protection):
read through Azure Resource Manager with the real azure-mgmt-keyvault client against the
loopback endpoint, or, when Resource Manager is not named or refuses, from the secrets'
recovery levels, which cannot show the retention; and the ``(secrets)`` row it makes."""

from __future__ import annotations

from typing import Any

import pytest
from azure.keyvault.secrets import SecretClient
from pydantic import ValidationError

from dr_runbooks.config import Config, KeyVaultConfig
from dr_runbooks.keyvault import (
    LIMIT,
    VaultCatalog,
    backup_vault,
    read_protection,
    vault_protection,
    verify_vault_backup,
)
from dr_runbooks.keyvault.protection import vault_name_of
from dr_runbooks.keyvault.status import vault_status
from dr_runbooks.repository import Repository
from dr_runbooks.status import system_status
from tests.azure_api import AzureApi
from tests.azure_api.management import GROUP, SUBSCRIPTION, SiteClients, seed_vault, vault_id
from tests.keyvault.conftest import SYSTEM, BackupActions

VAULT = "kv-dot-copilot"


def placed(api: AzureApi, **given: Any) -> KeyVaultConfig:
    """A keyvault: section that places the vault in Resource Manager (its data plane is the
    endpoint too, at another URL than the vault's name says)."""
    fields = {
        "vault_url": api.url,
        "subscription_id": SUBSCRIPTION,
        "resource_group": GROUP,
        "vault_name": VAULT,
    }
    return KeyVaultConfig.model_validate({**fields, **given})


def secrets_of(client: SecretClient) -> Any:
    return lambda _url: client


def test_a_compliant_vault_is_read_through_resource_manager(api: AzureApi) -> None:
    seed_vault(api, VAULT, retention_days=90, purge_protection=True)

    # No secret client: the data plane is not what answers.
    found = read_protection(placed(api), SiteClients(api).keyvault, None)

    assert found.source == "management plane" and found.vault == VAULT
    assert found.state == "OK" and found.compliant and found.describe() == "meets the plan"
    assert found.as_dict()["soft_delete_retention_days"] == 90
    assert found.as_dict()["purge_protection"] is True
    [call] = api.calls
    assert call.path.endswith(f"/providers/Microsoft.KeyVault/vaults/{VAULT}")


def test_a_non_compliant_vault_names_each_shortfall_with_the_plans_value(
    api: AzureApi,
) -> None:
    seed_vault(api, VAULT, retention_days=7, purge_protection=False)

    found = read_protection(placed(api), SiteClients(api).keyvault, None)

    assert found.state == "POLICY" and not found.compliant and found.unverified == []
    assert found.describe() == (
        "soft delete: on, 7 days (plan: on, ≥ 90 days); purge protection: off (plan: on)"
    )
    # Azure leaves purge protection out of a vault that does not have it.
    shown = api.resource(vault_id(VAULT))
    assert shown is not None and "enablePurgeProtection" not in shown["properties"]


def test_soft_delete_off_is_a_shortfall(api: AzureApi) -> None:
    seed_vault(api, VAULT, soft_delete=False)

    found = read_protection(placed(api), SiteClients(api).keyvault, None)

    assert found.describe() == "soft delete: off (plan: on, ≥ 90 days)"
    assert found.state == "POLICY"


def test_refused_by_resource_manager_the_recovery_levels_answer_unverified(
    api: AzureApi, client: SecretClient, actions: BackupActions
) -> None:
    seed_vault(api, VAULT)  # compliant, but this identity may not read it
    api.fail("GET", f"/vaults/{VAULT}$", 403, code="AuthorizationFailed")
    client.set_secret("db-password", "Pa55-word")

    found, problem = vault_protection(placed(api), SiteClients(api).keyvault, secrets_of(client))

    assert problem is None and found is not None
    assert found.source == "secrets' recovery levels"
    assert found.state == "UNVERIFIED" and not found.compliant and found.shortfalls == []
    [soft_delete] = found.unverified
    assert soft_delete.setting == "soft delete"
    assert soft_delete.actual.startswith(
        f"on, retention not read (management plane not read: reading the properties of vault "
        f"{VAULT} in {GROUP}: AuthorizationFailed: "
    )
    assert "meets the plan" not in found.describe()
    assert api.calls_to("GET", "/vaults/")[0].status == 403

    # The recovery levels still show a shortfall they can see.
    actions.recovery_level = "Recoverable+Purgeable"
    api.fail("GET", f"/vaults/{VAULT}$", 403, code="AuthorizationFailed")
    found, _ = vault_protection(placed(api), SiteClients(api).keyvault, secrets_of(client))
    assert found is not None and found.state == "POLICY"
    assert [f.describe() for f in found.shortfalls] == ["purge protection: off (plan: on)"]


def test_without_a_subscription_nothing_is_asked_of_resource_manager(
    api: AzureApi, client: SecretClient, actions: BackupActions
) -> None:
    client.set_secret("api-key", "k-123456")
    api.calls.clear()
    settings = placed(api, subscription_id=None, resource_group=None)

    found, _ = vault_protection(settings, SiteClients(api).keyvault, secrets_of(client))

    assert found is not None and not api.calls_to("GET", "/providers/")
    assert "the system names no subscription_id and resource_group" in found.describe()
    found, problem = vault_protection(settings, SiteClients(api).keyvault, None)
    assert found is None and problem is not None and "no credentials for the vault" in problem


def test_the_status_row_is_policy_when_the_vault_falls_short(
    api: AzureApi,
    client: SecretClient,
    actions: BackupActions,
    catalog: VaultCatalog,
    repository: Repository,
) -> None:
    seed_vault(api, VAULT, retention_days=30)
    client.set_secret("db-password", "Pa55-word")
    verify_vault_backup(catalog, catalog.find(backup_vault(client, catalog).id))
    config = Config.model_validate(
        {
            "repositories": {"local": {"type": "local", "path": "/nonexistent"}},
            "systems": {
                SYSTEM: {
                    "engine": "keyvault",
                    "keyvault": placed(api).model_dump(),
                    "repositories": ["local"],
                }
            },
        }
    )
    declared = config.system(SYSTEM)

    [row] = system_status(config, SYSTEM, declared, repository, management=SiteClients(api))

    assert (row.database, row.state) == ("(secrets)", "POLICY")
    assert row.detail.startswith(
        "the vault falls short of the plan: soft delete: on, 30 days (plan: on, ≥ 90 days)"
    )
    assert LIMIT in row.detail

    seed_vault(api, "kv-dot-copilot-2", retention_days=90)
    compliant = placed(api, vault_name="kv-dot-copilot-2")
    row = vault_status(
        config, SYSTEM, repository, read_protection(compliant, SiteClients(api).keyvault, None)
    )
    assert row.state == "OK" and "vault: meets the plan" in row.detail


def test_resource_manager_settings_are_checked_in_dr_yaml(api: AzureApi) -> None:
    with pytest.raises(ValidationError, match="subscription_id and resource_group go together"):
        placed(api, subscription_id=None)
    with pytest.raises(ValidationError, match="is not a vault name"):
        placed(api, vault_name="kv_dot_copilot")
    assert vault_name_of(KeyVaultConfig(vault_url="https://kv-app.vault.azure.net")) == "kv-app"
