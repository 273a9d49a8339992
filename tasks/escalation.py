"""The escalation path as Prefect automations on the server, and the in-flow fallback's
notifications (see :mod:`dr_runbooks.escalation`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dr_runbooks.config import Config
from dr_runbooks.errors import ConfigError
from dr_runbooks.escalation import AUTOMATION_PREFIX, Level, levels, message
from dr_runbooks.redaction import redact
from tasks._runtime import logger

__all__ = [
    "escalation_apply",
    "escalation_automations",
    "escalation_send",
    "escalation_served",
]

#: A run enters Running when it starts, and again after each pause or retry.
_STARTED = "prefect.flow-run.Running"
_FINAL = {
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Cancelled",
}
_TAG = "dr-escalation"


def _block_id(name: str) -> Any:
    from blocks import load_block

    block = load_block(name, what="notification block")
    block_id = getattr(block, "_block_document_id", None)
    if block_id is None:
        raise ConfigError(f"notification block {name!r} is not saved on this Prefect server")
    return block_id


def escalation_automations(config: Config) -> list[Any]:
    """One automation per level of dr.yaml's escalation path (nothing saved yet)."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    made = []
    for level in levels(config):
        related = {"prefect.resource.role": "flow", "prefect.resource.name": list(level.flows)}
        trigger: EventTrigger
        if level.immediate:
            trigger = EventTrigger(
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related=related,  # type: ignore[arg-type]
                expect={_STARTED},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            )
        else:
            trigger = EventTrigger(
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related=related,  # type: ignore[arg-type]
                after={_STARTED},
                expect=set(_FINAL),
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=level.after,
            )
        subject, body = message(
            level,
            "{{ flow.name }}",
            "flow run {{ flow_run.name }}, {{ flow_run.id }}",
            "{{ flow_run|ui_url }}",
        )
        made.append(
            AutomationCore(
                name=level.automation_name,
                description=f"Escalation level {level.number}: {level.who} "
                f"({'at once' if level.immediate else f'after {level.after}'}), from dr.yaml",
                enabled=True,
                tags=[_TAG, *level.flows],
                trigger=trigger,
                actions=[
                    SendNotification(
                        block_document_id=_block_id(level.block), subject=subject, body=body
                    )
                ],
            )
        )
    return made


def escalation_apply(config: Config) -> list[dict[str, Any]]:
    """Replace this project's escalation automations on the Prefect server by those of
    dr.yaml (none when it declares no path); return what is now there."""
    from prefect.client.orchestration import get_client

    automations = escalation_automations(config)
    applied = []
    with get_client(sync_client=True) as client:
        for existing in client.read_automations():
            if existing.name.startswith(AUTOMATION_PREFIX):
                client.delete_automation(existing.id)
        for automation in automations:
            automation_id = client.create_automation(automation)
            applied.append(
                {"name": automation.name, "id": str(automation_id), "what": automation.description}
            )
    logger().info("escalation: %d automation(s) on the Prefect server", len(applied))
    return applied


def escalation_served(flow: str) -> bool:
    """Whether the Prefect server holds an enabled escalation automation for ``flow``."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return any(
            a.enabled and a.name.startswith(AUTOMATION_PREFIX) and flow in (a.tags or [])
            for a in client.read_automations()
        )


def escalation_send(level: Level, flow: str, run: str, link: str) -> None:
    """Notify ``level`` from inside the run (the fallback where no server escalates)."""
    from blocks import load_block

    subject, body = message(level, flow, run, link)
    block: Any = load_block(level.block, what="notification block")
    block.notify(body=redact(body), subject=redact(subject))
    logger().warning("escalated to level %d (%s): %s", level.number, level.who, subject)
