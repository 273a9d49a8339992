"""File storage: the application's blob containers, backed up into a backup repository.

- :mod:`.source` — the storage account (list, read pinned to an ETag, write), SDK errors
  translated at the edge;
- :mod:`.catalog` — the format in the repository: content stored once under its sha256, a
  manifest per backup listing every blob; listing, verification, retention;
- :mod:`.backup` — the incremental backup (by ETag and MD5 against the previous manifest);
- :mod:`.restore` — a container, a prefix or one blob to a backup's state, verified;
- :mod:`.policy` — the account's soft delete, container soft delete, versioning and
  redundancy against the plan, read through Azure Resource Manager or the blob data plane.

No Prefect here: the tasks in ``tasks/files.py`` call these.
"""

from dr_runbooks.files.backup import backup_files
from dr_runbooks.files.catalog import (
    ENGINE,
    BlobEntry,
    ContainerRecord,
    FileBackup,
    FileCatalog,
    FileManifest,
    FileRetentionPlan,
    StoredContent,
)
from dr_runbooks.files.policy import (
    AccountSettings,
    Finding,
    PolicyAudit,
    PolicyRequirements,
    audit,
    read_management_settings,
    read_settings,
)
from dr_runbooks.files.restore import (
    FileRestorePlan,
    FileRestoreResult,
    default_target,
    plan_restore,
    restore_files,
    verify_restore,
)
from dr_runbooks.files.source import BlobAccount, BlobChanged, SourceBlob

__all__ = [
    "ENGINE",
    "AccountSettings",
    "BlobAccount",
    "BlobChanged",
    "BlobEntry",
    "ContainerRecord",
    "FileBackup",
    "FileCatalog",
    "FileManifest",
    "FileRestorePlan",
    "FileRestoreResult",
    "FileRetentionPlan",
    "Finding",
    "PolicyAudit",
    "PolicyRequirements",
    "SourceBlob",
    "StoredContent",
    "audit",
    "backup_files",
    "default_target",
    "plan_restore",
    "read_management_settings",
    "read_settings",
    "restore_files",
    "verify_restore",
]
