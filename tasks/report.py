"""Publishing results as Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

__all__ = ["report_publish"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "report"


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def report_publish(
    key: str,
    description: str,
    table: list[dict[str, Any]] | None = None,
    markdown: str | None = None,
) -> None:
    """Publish a table and/or markdown artifact under a stable key (its history is kept)."""
    if table is not None:
        create_table_artifact(table=table, key=_slug(key), description=description)
    if markdown is not None:
        create_markdown_artifact(
            markdown=markdown, key=_slug(key) + "-report", description=description
        )
