"""Where backups are kept: one store contract (:mod:`.base`), a local directory (:mod:`.local`)
and an Azure Blob Storage container (:mod:`.azure`, imported on demand: it loads the Azure SDK).
"""

from dr_runbooks.storage.base import ObjectInfo, Store
from dr_runbooks.storage.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "Store"]
