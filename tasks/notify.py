"""Notifications: one concise message to the channel named in dr.yaml."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import load_block
from dr_runbooks.config import load_config
from dr_runbooks.errors import ConfigError
from dr_runbooks.redaction import redact
from tasks._runtime import logger, transient_only

__all__ = ["notify_send", "run_reference"]


def run_reference() -> str:
    """The current flow run's id and, when known, its link in the Prefect UI."""
    try:
        from prefect.runtime import flow_run

        run_id, url = flow_run.get_id(), flow_run.get_flow_run_ui_url()
    except Exception:  # outside a flow run
        return "no flow run"
    return f"flow run {run_id}" + (f" ({url})" if url else "")


@task(
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def notify_send(subject: str, lines: list[str], config_path: str | None = None) -> bool:
    """Send one message to the notification block named in dr.yaml; return whether one was sent.

    No block configured is not an error: the run's own failure state still shows in Prefect.
    """
    config = load_config(config_path)
    name = config.notifications.block
    if not name:
        logger().warning("no notification channel in dr.yaml; not sent: %s", subject)
        return False
    if "/" not in name:
        raise ConfigError(
            f"notification block {name!r}: give it as TYPE/NAME, e.g. slack-webhook/{name}"
        )
    block: Any = load_block(name, what="notification block")
    body = redact("\n".join([*lines, run_reference()]))
    block.notify(body=body, subject=redact(subject))
    logger().info("notified %s: %s", name, subject)
    return True
