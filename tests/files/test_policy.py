"""The storage account's protection against the plan: read from Azurite's blob service (soft
delete, SKU, version ids), and judged on a compliant and a non-compliant account."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from azure.storage.blob import BlobServiceClient, RetentionPolicy

from dr_runbooks.files import AccountSettings, BlobAccount, audit, read_settings
from tests.files.conftest import Blob, State


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
    result = audit(settings)
    by_setting = {f.setting: f.ok for f in result.findings}
    assert by_setting == {
        "blob soft delete": True,
        "container soft delete": None,
        "versioning": False,
        "redundancy": True,
    }
    assert result.state == "POLICY"
    assert result.describe() == "versioning: off (no listed blob carries a version id) (plan: on)"

    soft_delete(None)
    result = audit(read_settings(account, [empty]))
    assert {f.setting: f.ok for f in result.findings}["versioning"] is None
    assert result.describe() == "blob soft delete: off (plan: on, ≥ 30 days)"


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
