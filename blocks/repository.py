"""Backup repository blocks: a local directory and an Azure Blob Storage container.

Both produce a :class:`~dr_runbooks.repository.Repository` over a
:class:`~dr_runbooks.storage.Store`, with the repository's own retention.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from blocks.fields import OptionalSecret, Recipients
from dr_runbooks.redaction import register_secret
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from dr_runbooks.targets import azure_container_client

__all__ = ["AzureBackupRepository", "LocalBackupRepository"]


class LocalBackupRepository(Block):
    """Backups in a directory on this machine (the plan keeps a local copy 7 days)."""

    _block_type_name = "DR Local Backup Repository"
    _block_type_slug = "dr-local-backup-repository"

    path: str = Field(description="Directory that holds the backups.")
    retention_days: int = Field(default=7, ge=0, description="Delete backups older than this.")
    min_keep: int = Field(default=3, ge=1, description="Never keep fewer complete backups.")
    encrypt_to: Recipients = Field(
        default=[],
        description="age recipients (age1…) new backups are encrypted to; empty: stored in clear. "
        "Restores need one matching identity (`dr keys`).",
    )

    def get_repository(self, name: str = "") -> Repository:
        return Repository(
            LocalStore(self.path),
            name or self.path,
            self.retention_days,
            self.min_keep,
            encrypt_to=self.encrypt_to,
        )


class AzureBackupRepository(Block):
    """Backups in an Azure Blob Storage container (the plan keeps the Azure copy 30 days).

    Authenticate with exactly one of: a connection string; an account URL and a SAS token; an
    account URL alone, which uses ``DefaultAzureCredential`` (managed identity, az login…).
    """

    _block_type_name = "DR Azure Backup Repository"
    _block_type_slug = "dr-azure-backup-repository"

    container: str = Field(description="Blob container name, e.g. postgres-backups.")
    connection_string: OptionalSecret = Field(
        default=None, description="Storage account connection string."
    )
    account_url: str | None = Field(
        default=None, description="https://ACCOUNT.blob.core.windows.net"
    )
    sas_token: OptionalSecret = Field(default=None, description="SAS token for account_url.")
    retention_days: int = Field(default=30, ge=0, description="Delete backups older than this.")
    min_keep: int = Field(default=3, ge=1, description="Never keep fewer complete backups.")
    encrypt_to: Recipients = Field(
        default=[],
        description="age recipients (age1…) new backups are encrypted to; empty: stored in clear. "
        "Restores need one matching identity (`dr keys`).",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> AzureBackupRepository:
        if self.connection_string is not None and self.account_url:
            raise ValueError("give either a connection string or an account URL, not both")
        if self.connection_string is None and not self.account_url:
            raise ValueError("give a connection string or an account URL")
        if self.sas_token is not None and not self.account_url:
            raise ValueError("a SAS token goes with an account URL")
        return self

    def get_container_client(self):  # type: ignore[no-untyped-def]
        """The ``ContainerClient`` (the client factory of this block)."""
        secret_cs = self.connection_string.get_secret_value() if self.connection_string else None
        sas = self.sas_token.get_secret_value() if self.sas_token else None
        register_secret(secret_cs)
        register_secret(sas)
        return azure_container_client(
            container=self.container,
            connection_string=secret_cs,
            account_url=self.account_url,
            sas_token=sas,
        )

    def get_repository(self, name: str = "") -> Repository:
        from dr_runbooks.storage.azure import AzureBlobStore

        store = AzureBlobStore(self.get_container_client())
        return Repository(
            store,
            name or store.location,
            self.retention_days,
            self.min_keep,
            encrypt_to=self.encrypt_to,
        )
