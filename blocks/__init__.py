"""Prefect blocks: configuration and credentials, and the client factories built from them.

Register them with ``prefect block register -m blocks`` from the repository root.
"""

from blocks.azure import AzureCredentials, AzureSite
from blocks.files import AzureFileStorage
from blocks.loading import PREFECT_BLOCKS, load_block
from blocks.mongo import MongoDatabase
from blocks.postgres import PostgresDatabase
from blocks.repository import AzureBackupRepository, LocalBackupRepository

__all__ = [
    "PREFECT_BLOCKS",
    "AzureBackupRepository",
    "AzureCredentials",
    "AzureFileStorage",
    "AzureSite",
    "LocalBackupRepository",
    "MongoDatabase",
    "PostgresDatabase",
    "load_block",
]
