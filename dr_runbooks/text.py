"""Text for people: durations, sizes, markdown tables, the first line of an error."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dr_runbooks.redaction import redact

__all__ = ["first_line", "human_duration", "human_size", "markdown_table"]


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


def human_size(n: float) -> str:
    """Bytes as ``12 B``, ``3.4 MiB``..."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text, redacted."""
    for line in str(exc).splitlines():
        if line.strip():
            return redact(line.strip())
    return type(exc).__name__


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
