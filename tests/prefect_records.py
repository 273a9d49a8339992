"""Everything the Prefect API recorded since a moment: logs and artifacts, as one text.

Tests that promise a secret never reaches Prefect search this text. The server is shared by the
whole test session, so reading "the first 200 logs" would read other tests' runs: read every log
written since the test began, page by page, and the newest artifacts.
"""

from __future__ import annotations

import json
from datetime import datetime

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
from prefect.client.schemas.sorting import ArtifactSort, LogSort
from prefect.logging.handlers import APILogHandler

PAGE = 200


def logs_and_artifacts_since(start: datetime) -> str:
    APILogHandler().flush()
    parts: list[str] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=start)),
                limit=PAGE,
                offset=offset,
                sort=LogSort.TIMESTAMP_ASC,
            )
            parts += [log.message for log in logs]
            if len(logs) < PAGE:
                break
            offset += PAGE
        for artifact in client.read_artifacts(limit=PAGE, sort=ArtifactSort.CREATED_DESC):
            if artifact.created is None or artifact.created >= start:
                parts.append(json.dumps(artifact.data, default=str) + str(artifact.description))
    return "\n".join(parts)
