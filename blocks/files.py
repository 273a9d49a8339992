"""The application's storage account, whose containers the file backups protect.

::

    storage = AzureFileStorage.load("app-files")
    account = storage.get_blob_account()        # a dr_runbooks.files.BlobAccount
    backup_files(account, catalog, storage.containers)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from blocks.azure import AzureCredentials
from blocks.fields import OptionalSecret
from dr_runbooks.redaction import register_secret

if TYPE_CHECKING:  # the Azure Blob SDK is imported when a backup needs it, not with the block
    from dr_runbooks.files import BlobAccount

__all__ = ["AzureFileStorage"]


class AzureFileStorage(Block):
    """A storage account holding application files, and the containers to back up.

    Sign in with a connection string, or an account URL with the credentials block (or, with
    neither, ``DefaultAzureCredential``: a managed identity, ``az login``).
    """

    _block_type_name = "DR Azure File Storage"
    _block_type_slug = "dr-azure-file-storage"

    account_url: str | None = Field(
        default=None, description="https://ACCOUNT.blob.core.windows.net"
    )
    connection_string: OptionalSecret = Field(
        default=None, description="Storage account connection string (instead of the URL)."
    )
    credentials: AzureCredentials | None = Field(
        default=None,
        description="How to sign in with account_url; empty: DefaultAzureCredential.",
    )
    containers: list[str] = Field(
        default=[], description="The containers backed up (empty: name them in each run)."
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> AzureFileStorage:
        if self.connection_string is not None and self.account_url:
            raise ValueError("give either a connection string or an account URL, not both")
        if self.connection_string is None and not self.account_url:
            raise ValueError("give a connection string or an account URL")
        if self.credentials is not None and not self.account_url:
            raise ValueError("credentials go with an account URL")
        return self

    def get_blob_account(self) -> BlobAccount:
        """The account (the client factory of this block)."""
        from dr_runbooks.files import BlobAccount

        if self.connection_string is not None:
            secret = self.connection_string.get_secret_value()
            register_secret(secret)
            return BlobAccount.from_connection_string(secret)
        assert self.account_url
        if self.credentials is not None:
            credential = self.credentials.get_credential()
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return BlobAccount.from_url(self.account_url, credential)
