"""The storage account's protection against the plan: read through Azure Resource Manager
(the real azure-mgmt-storage client against the loopback endpoint: SKU, blob and container
soft delete, versioning), or from Azurite's blob service when Resource Manager is not named or
refuses (soft delete, SKU, version ids); judged on a compliant and a non-compliant account."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobServiceClient, RetentionPolicy
from pydantic import ValidationError

from dr_runbooks.config import Config, FilesConfig
from dr_runbooks.files import (
    AccountSettings,
    BlobAccount,
    FileCatalog,
    audit,
    backup_files,
    read_settings,
)
from dr_runbooks.files.status import policy_of, read_policy
from dr_runbooks.status import system_status
from dr_runbooks.targets import repository_from_config
from tests.azure_api import AzureApi
from tests.azure_api.management import GROUP, SUBSCRIPTION, SiteClients, seed_account
from tests.azurite import Azurite
from tests.files.conftest import Blob, State, generated_state

ACCOUNT = "dotcopilotfiles"


@pytest.fixture
def soft_delete(service: BlobServiceClient) -> Iterator[Callable[[int | None], None]]:
    """Set the account's blob soft delete (days, None: off); put it back afterwards (the
    Azurite account is the session's)."""
    original = service.get_service_properties()["delete_retention_policy"]

    def set_days(days: int | None) -> None:
        policy = RetentionPolicy(enabled=days is not None, days=days)
        service.set_service_properties(delete_retention_policy=policy)

    yield set_days
    service.set_service_properties(delete_retention_policy=original)


def test_settings_are_read_through_the_blob_api(
    account: BlobAccount,
    source: Callable[[State], str],
    soft_delete: Callable[[int | None], None],
) -> None:
    container = source({"a.txt": Blob(b"a", {}, "text/plain")})
    empty = source({})
    soft_delete(30)

    settings = read_settings(account, [container, empty])

    assert settings.blob_soft_delete_days == 30
    assert settings.sku == "Standard_RAGRS"  # what Azurite reports
    # Azurite keeps no blob versions: no listed blob carries a version id.
    assert settings.versioning is False
    assert settings.container_soft_delete_days is None  # management plane only
    assert settings.source == "blob data plane"
    result = audit(settings)
    by_setting = {f.setting: f.ok for f in result.findings}
    assert by_setting == {
        "blob soft delete": True,
        "container soft delete": None,
        "versioning": False,
        "redundancy": True,
    }
    assert result.state == "POLICY" and not result.compliant
    assert result.describe() == (
        "versioning: off (no listed blob carries a version id) (plan: on); "
        "container soft delete: not read (management plane not read: a management-plane "
        "setting, not readable through the blob API) (plan: on)"
    )

    soft_delete(None)
    result = audit(read_settings(account, [empty], management="no subscription here"))
    assert {f.setting: f.ok for f in result.findings}["versioning"] is None
    assert result.describe().startswith(
        "blob soft delete: off (plan: on, ≥ 30 days); container soft delete: not read "
        "(management plane not read: no subscription here) (plan: on); versioning: not read"
    )


def test_a_compliant_account_meets_the_plan() -> None:
    settings = AccountSettings(
        account="https://files.blob.core.windows.net",
        blob_soft_delete_days=30,
        container_soft_delete_days=7,
        versioning=True,
        sku="Standard_ZRS",
    )

    result = audit(settings)

    assert result.state == "OK" and result.shortfalls == [] and result.unverified == []
    assert result.describe() == "meets the plan"


def test_a_non_compliant_account_says_what_is_missing_with_the_plans_value() -> None:
    settings = AccountSettings(
        account="https://files.blob.core.windows.net",
        blob_soft_delete_days=7,
        container_soft_delete_days=0,
        versioning=False,
        sku="Standard_LRS",
    )

    result = audit(settings)

    assert result.state == "POLICY"
    assert [f.describe() for f in result.shortfalls] == [
        "blob soft delete: on, 7 days (plan: on, ≥ 30 days)",
        "container soft delete: off (plan: on)",
        "versioning: off (plan: on)",
        "redundancy: Standard_LRS (plan: ZRS or GRS or RAGRS or GZRS or RAGZRS)",
    ]
    assert result.summary()["state"] == "POLICY"


# -- through Azure Resource Manager -----------------------------------------------------------


@pytest.fixture
def arm() -> Iterator[AzureApi]:
    with AzureApi() as api:
        yield api


def placed(**given: object) -> FilesConfig:
    """A files: section that places the account in Resource Manager. Its connection string's
    variable is never set: the data plane is not what answers unless a test sets it."""
    fields: dict[str, object] = {
        "connection_string_env": "DR_TEST_FILES_NOT_SET",
        "containers": ["uploads"],
        "subscription_id": SUBSCRIPTION,
        "resource_group": GROUP,
        "account_name": ACCOUNT,
    }
    return FilesConfig.model_validate({**fields, **given})


def test_a_compliant_account_is_read_whole_through_resource_manager(arm: AzureApi) -> None:
    seed_account(arm, ACCOUNT, sku="Standard_RAGZRS", blob_days=30, container_days=7)

    result = read_policy(placed(), SiteClients(arm).storage)

    assert result.source == "management plane"
    assert result.state == "OK" and result.compliant and result.describe() == "meets the plan"
    assert {f.setting: f.actual for f in result.findings} == {
        "blob soft delete": "on, 30 days",
        "container soft delete": "on, 7 days",
        "versioning": "on",
        "redundancy": "Standard_RAGZRS",
    }
    assert [c.path.rsplit("/", 2)[-1] for c in arm.calls] == [ACCOUNT, "default"]


def test_a_non_compliant_account_names_each_shortfall_with_the_plans_value(
    arm: AzureApi,
) -> None:
    seed_account(
        arm, ACCOUNT, sku="Standard_LRS", blob_days=7, container_days=None, versioning=False
    )

    result = read_policy(placed(), SiteClients(arm).storage)

    assert result.state == "POLICY" and result.unverified == []
    assert result.describe() == (
        "blob soft delete: on, 7 days (plan: on, ≥ 30 days); "
        "container soft delete: off (plan: on); "
        "versioning: off (plan: on); "
        "redundancy: Standard_LRS (plan: ZRS or GRS or RAGRS or GZRS or RAGZRS)"
    )
    assert result.summary()["findings"][1] == {
        "setting": "container soft delete",
        "required": "on",
        "actual": "off",
        "ok": False,
    }


def test_the_account_name_comes_from_the_account_url(arm: AzureApi) -> None:
    seed_account(arm, ACCOUNT, versioning=False)
    files = placed(
        connection_string_env=None,
        account_name=None,
        account_url=f"https://{ACCOUNT}.blob.core.windows.net",
    )

    result = read_policy(files, SiteClients(arm).storage)

    assert result.account == ACCOUNT and result.describe() == "versioning: off (plan: on)"


@pytest.mark.parametrize(
    ("status", "code", "name"),
    [(403, "AuthorizationFailed", ACCOUNT), (404, "ResourceNotFound", "othername")],
)
def test_refused_by_resource_manager_the_data_plane_answers_unverified(
    arm: AzureApi,
    azurite: Azurite,
    source: Callable[[State], str],
    soft_delete: Callable[[int | None], None],
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    code: str,
    name: str,
) -> None:
    seed_account(arm, ACCOUNT)  # compliant, but not readable by this identity (or name)
    if status == 403:
        arm.fail("GET", f"/storageAccounts/{ACCOUNT}$", 403, code=code)
    monkeypatch.setenv("DR_TEST_FILES", azurite.connection_string)
    empty = source({})  # no blob to show versioning either way
    soft_delete(30)
    files = placed(connection_string_env="DR_TEST_FILES", containers=[empty], account_name=name)

    result, problem = policy_of(files, management=SiteClients(arm).storage)

    assert problem is None and result is not None
    assert result.source == "blob data plane"
    assert result.state == "UNVERIFIED" and not result.compliant and result.shortfalls == []
    unread = {f.setting: f.actual for f in result.unverified}
    assert set(unread) == {"container soft delete", "versioning"}
    assert (
        f"management plane not read: reading the properties of storage account {name}"
        in (unread["container soft delete"])
    )
    assert f"{code}: " in unread["container soft delete"]
    assert "meets the plan" not in result.describe()
    assert arm.calls_to("GET", "/storageAccounts/")[0].status == status


def test_without_a_subscription_only_the_data_plane_is_read(
    arm: AzureApi, account: BlobAccount, source: Callable[[State], str]
) -> None:
    seed_account(arm, ACCOUNT)
    files = placed(subscription_id=None, resource_group=None)
    container = source({"a.txt": Blob(b"a", {}, "text/plain")})

    result = read_policy(files, SiteClients(arm).storage, account, containers=[container])

    assert result.source == "blob data plane" and arm.calls == []
    [container_finding] = [f for f in result.findings if f.setting == "container soft delete"]
    assert container_finding.ok is None
    assert "the system names no subscription_id and resource_group" in container_finding.actual


def test_the_status_row_is_policy_when_the_account_falls_short(
    arm: AzureApi,
    azurite: Azurite,
    account: BlobAccount,
    source: Callable[[State], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_account(arm, ACCOUNT, container_days=None)
    monkeypatch.setenv("DR_TEST_FILES", azurite.connection_string)
    container = source(generated_state(6))
    config = Config.model_validate(
        {
            **yaml.safe_load(f"""
repositories:
  files: {{type: local, path: {tmp_path / "repo"}}}
systems:
  app-files:
    engine: blob
    files:
      connection_string_env: DR_TEST_FILES
      containers: [{container}]
      subscription_id: {SUBSCRIPTION}
      resource_group: {GROUP}
      account_name: {ACCOUNT}
    repositories: [files]
"""),
            "base_dir": tmp_path,
        }
    )
    system = config.system("app-files")
    repository = repository_from_config(config, "files")
    backup_files(account, FileCatalog(repository, "app-files"), [container])

    [row] = system_status(config, "app-files", system, repository, management=SiteClients(arm))

    assert row.state == "POLICY"
    assert row.detail == (
        "the account falls short of the plan: container soft delete: off (plan: on)"
    )

    # Without Resource Manager clients the same system is read through the data plane, which
    # cannot read container soft delete: Azurite's missing versions are what fall short.
    [row] = system_status(config, "app-files", system, repository)
    assert row.state == "POLICY" and "versioning: off" in row.detail
    assert "no Resource Manager client here" in row.detail


def test_resource_manager_settings_are_checked_in_dr_yaml() -> None:
    with pytest.raises(ValidationError, match="subscription_id and resource_group go together"):
        placed(resource_group=None)
    with pytest.raises(ValidationError, match="is not a subscription id"):
        placed(subscription_id="prod")
    with pytest.raises(ValidationError, match="is not a storage account name"):
        placed(account_name="Dot-Copilot")
    assert not placed(subscription_id=None, resource_group=None).in_resource_manager
