"""prefect.yaml as the single list of deployments, for ``dr serve`` and the schedule tests.

``prefect deploy`` reads prefect.yaml for installations with a server and workers; ``dr serve``
reads the same file and serves every deployment from one process (Prefect's ``serve``), so a
single-machine installation runs exactly the schedules a full one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dr_runbooks.errors import ConfigError

__all__ = ["deployment_specs", "load_deployments", "schedule_from_spec"]


def deployment_specs(path: str | Path = "prefect.yaml") -> list[dict[str, Any]]:
    """The deployments of a prefect.yaml, YAML anchors resolved."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {file}: {str(exc).splitlines()[0]}") from None
    deployments = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(deployments, list):
        raise ConfigError(f"{file} has no deployments")
    return deployments


def schedule_from_spec(spec: dict[str, Any]) -> Any:
    """A Prefect schedule object from a prefect.yaml schedule entry."""
    from prefect.schedules import Cron, Interval, RRule

    timezone = spec.get("timezone")
    active = spec.get("active", True)
    if "cron" in spec:
        return Cron(spec["cron"], timezone=timezone, day_or=spec.get("day_or", True), active=active)
    if "rrule" in spec:
        return RRule(spec["rrule"], timezone=timezone, active=active)
    if "interval" in spec:
        return Interval(spec["interval"], timezone=timezone, active=active)
    raise ConfigError(f"unsupported schedule {spec!r}")


def load_deployments(path: str | Path = "prefect.yaml") -> list[Any]:
    """Every deployment of prefect.yaml as a ``RunnerDeployment``, its flow really imported."""
    from prefect.flows import load_flow_from_entrypoint

    base = Path(path).resolve().parent
    runner_deployments = []
    for spec in deployment_specs(path):
        entrypoint = spec["entrypoint"]
        file, _, func = entrypoint.partition(":")
        flow: Any = load_flow_from_entrypoint(f"{base / file}:{func}", use_placeholder_flow=False)
        deployment: Any = flow.to_deployment(
            name=spec["name"],
            description=spec.get("description"),
            parameters=spec.get("parameters") or {},
            tags=spec.get("tags") or [],
            schedules=[schedule_from_spec(s) for s in spec.get("schedules") or []],
        )
        deployment.entrypoint = entrypoint
        runner_deployments.append(deployment)
    return runner_deployments
