"""The timeline of one run: its steps with their UTC start, duration, outcome and detail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Step", "Timeline"]


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
