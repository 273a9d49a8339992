"""The file storage block: a form the UI can render, one way in, a client that works."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blocks.azure import AzureCredentials
from blocks.files import AzureFileStorage
from tests.azurite import ACCOUNT_KEY, Azurite


def test_every_field_is_described_and_the_secret_stays_out_of_repr() -> None:
    assert AzureFileStorage.get_description()
    for name, field in AzureFileStorage.model_fields.items():
        assert field.description, f"AzureFileStorage.{name} has no description"
    block = AzureFileStorage(connection_string=f"AccountKey={ACCOUNT_KEY}")
    assert ACCOUNT_KEY not in repr(block)


def test_one_way_in() -> None:
    with pytest.raises(ValidationError, match="not both"):
        AzureFileStorage(connection_string="x", account_url="https://a.blob.core.windows.net")
    with pytest.raises(ValidationError, match="give a connection string or an account URL"):
        AzureFileStorage()
    with pytest.raises(ValidationError, match="credentials go with an account URL"):
        AzureFileStorage(connection_string="x", credentials=AzureCredentials())


def test_the_block_reaches_the_account(azurite: Azurite) -> None:
    block = AzureFileStorage(connection_string=azurite.connection_string, containers=["a"])
    account = block.get_blob_account()
    assert account.location == azurite.account_url
    assert account.account_information()["sku_name"]
    assert ACCOUNT_KEY not in repr(account)
