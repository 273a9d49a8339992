"""Parameters the Azure runbooks (region failover and failback, security breach) share, so
their run forms in the Prefect UI describe them alike; the common ones (dry run, approval…)
come from :mod:`flows.parameters`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

__all__ = ["RESTORE_TIMEOUT", "SYSTEM", "TARGET_SERVER"]

SYSTEM: Any = Field(description="Protected system from dr.yaml (with its Azure `sites`).")
RESTORE_TIMEOUT: Any = Field(
    6 * 3600, ge=60, description="How long a flexible-server restore may take, in seconds."
)
TARGET_SERVER: Any = Field(
    "",
    description="Name of the restored flexible server (default: the receiving site's "
    "`postgres_server`).",
)
