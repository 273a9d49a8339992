"""Timelines and reports of runbook runs: step durations, RTO and RPO against the objectives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Step", "Timeline", "human_duration", "markdown_table"]


def human_duration(value: timedelta | float | None) -> str:
    if value is None:
        return "n/a"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class Step:
    name: str
    started: datetime
    seconds: float = 0.0
    outcome: str = "running"
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "started": self.started.isoformat(),
            "seconds": round(self.seconds, 3),
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass
class Timeline:
    """The steps of one run, as they happened."""

    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    steps: list[Step] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        entry = Step(name, datetime.now(UTC), detail=detail)
        self.steps.append(entry)
        begun = time.perf_counter()
        try:
            yield entry
        except BaseException as exc:
            entry.outcome = "failed"
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            entry.detail = entry.detail or message
            raise
        finally:
            entry.seconds = time.perf_counter() - begun
        if entry.outcome == "running":
            entry.outcome = "ok"

    def elapsed(self) -> timedelta:
        return datetime.now(UTC) - self.started

    def rows(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.steps]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(row.get(h, "")).replace("|", "\\|") for h in headers) + " |"
        )
    return "\n".join(lines) + "\n"
