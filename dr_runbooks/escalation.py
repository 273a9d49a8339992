"""The plan's escalation path while a scenario runs: level 1 (on-call) when it starts, level 2
after 30 minutes, level 3 after 1 hour, level 4 after 2 hours, each to its own channel.

A hung or killed run cannot escalate itself, so the path lives on the Prefect server as one
automation per level (``dr escalation apply`` makes them from dr.yaml): level 1 reacts to a
run of an escalated flow entering Running; each later level is a *proactive* trigger that
fires when such a run has not reached a final state within the level's time. The server
evaluates them whatever the run's own process does. Only where no server runs them (a
temporary local server) does the runbook escalate from inside its own process.

This module describes the levels and their messages; ``tasks.escalation`` turns them into
Prefect automations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from dr_runbooks.config import Config
from dr_runbooks.errors import ConfigError
from dr_runbooks.text import human_duration

__all__ = ["AUTOMATION_PREFIX", "Level", "levels", "message"]

#: Every automation this project manages is named with this prefix (and only those are
#: replaced by ``dr escalation apply``).
AUTOMATION_PREFIX = "dr-escalation-level-"


@dataclass(frozen=True)
class Level:
    number: int
    after: timedelta
    who: str
    block: str
    flows: tuple[str, ...]

    @property
    def automation_name(self) -> str:
        return f"{AUTOMATION_PREFIX}{self.number}"

    @property
    def immediate(self) -> bool:
        return self.after == timedelta(0)


def levels(config: Config) -> list[Level]:
    """The escalation levels of dr.yaml, each with the block it notifies; [] when dr.yaml
    has no ``escalation:``."""
    if config.escalation is None:
        return []
    found = []
    for number, level in enumerate(config.escalation.levels, 1):
        block = level.block or config.notifications.block
        if not block or "/" not in block:
            raise ConfigError(
                f"escalation level {number} ({level.who}) needs a notification block as TYPE/NAME"
            )
        found.append(Level(number, level.after, level.who, block, tuple(config.escalation.flows)))
    return found


def message(level: Level, flow: str, run: str, link: str) -> tuple[str, str]:
    """Subject and body of ``level``'s notification about ``run`` of ``flow``; the arguments
    may be the server's template expressions (``{{ flow.name }}``) or plain values."""
    if level.immediate:
        subject = f"DR escalation level {level.number} ({level.who}): {flow} started"
        body = (
            f"Level {level.number} of the escalation path: {level.who}.\n"
            f"{flow} is running ({run}). Follow it: {link}\n"
            "If it is still running later, the next level is called."
        )
    else:
        waited = human_duration(level.after)
        subject = (
            f"DR escalation level {level.number} ({level.who}): {flow} still not finished "
            f"after {waited}"
        )
        body = (
            f"Level {level.number} of the escalation path: {level.who}.\n"
            f"{flow} ({run}) started more than {waited} ago and has not finished: it may be "
            "waiting for an approval, hung, or its process may have died.\n"
            f"Open it: {link}"
        )
    return subject, body
