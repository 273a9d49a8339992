"""Publishing results as Prefect artifacts, on the flow run they describe."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from tenacity import retry, stop_after_attempt, wait_exponential

__all__ = ["report_publish"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "report"


@retry(stop=stop_after_attempt(3), wait=wait_exponential(min=1, max=4), reraise=True)
def report_publish(
    key: str,
    description: str,
    table: list[dict[str, Any]] | None = None,
    markdown: str | None = None,
) -> None:
    """Publish a table and/or markdown artifact under a stable key (its history is kept).

    Called from the flow itself, not as a task, so the artifact belongs to the flow run (an
    artifact made in a task hangs on the task run, and the UI shows it with no flow run).
    """
    if table is not None:
        create_table_artifact(table=table, key=_slug(key), description=description)
    if markdown is not None:
        create_markdown_artifact(
            markdown=markdown, key=_slug(key) + "-report", description=description
        )
