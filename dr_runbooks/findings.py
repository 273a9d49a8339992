"""One setting of a resource's own protection against the plan: what the plan asks, what was
read, and whether it meets the plan, falls short, or could not be read.

The storage account's audit (:mod:`dr_runbooks.files.policy`) and the Key Vault's
(:mod:`dr_runbooks.keyvault.protection`) are lists of :class:`Finding`; :class:`Audited`
gives both the same verdict:

- ``POLICY``: a setting falls short of the plan (each named with the plan's value);
- ``UNVERIFIED``: nothing falls short, but a setting could not be read (and why): never
  taken as meeting the plan;
- ``OK``: every setting was read and meets the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Audited", "Finding", "days_finding", "switch_finding"]


@dataclass(frozen=True)
class Finding:
    setting: str
    required: str
    actual: str
    #: True: meets the plan; False: falls short; None: could not be read.
    ok: bool | None

    def describe(self) -> str:
        return f"{self.setting}: {self.actual} (plan: {self.required})"


class Audited:
    """The verdict over ``findings`` (a mixin of the audits' dataclasses)."""

    findings: list[Finding]

    @property
    def shortfalls(self) -> list[Finding]:
        return [f for f in self.findings if f.ok is False]

    @property
    def unverified(self) -> list[Finding]:
        return [f for f in self.findings if f.ok is None]

    @property
    def compliant(self) -> bool:
        """Every setting read and meeting the plan; one not read is not compliance."""
        return all(f.ok is True for f in self.findings)

    @property
    def state(self) -> str:
        """``POLICY``, ``UNVERIFIED`` or ``OK`` (see the module docstring)."""
        if self.shortfalls:
            return "POLICY"
        return "UNVERIFIED" if self.unverified else "OK"

    def describe(self) -> str:
        """One line: what falls short, then what could not be read, each with the plan's
        value; "meets the plan" when nothing does."""
        missing = self.shortfalls + self.unverified
        return "; ".join(f.describe() for f in missing) if missing else "meets the plan"

    def rows(self) -> list[dict[str, str]]:
        """The findings as a table (an artifact): the setting, the plan's value, what was
        read, and the verdict."""
        verdicts = {True: "meets the plan", False: "FALLS SHORT", None: "not verified"}
        return [
            {"setting": f.setting, "plan": f.required, "read": f.actual, "verdict": verdicts[f.ok]}
            for f in self.findings
        ]


def days_finding(setting: str, actual: int | None, required: int, note: str | None) -> Finding:
    """A retention (soft delete kept ``actual`` days, 0: off) against ``required`` days; a
    ``required`` of 1 means "on", 0 "any"."""
    wanted = f"on, ≥ {required} days" if required > 1 else "on" if required else "any"
    if actual is None:
        return Finding(setting, wanted, f"not read ({note or 'unknown'})", None)
    shown = f"on, {actual} days" if actual else "off"
    return Finding(setting, wanted, shown, actual >= required)


def switch_finding(setting: str, actual: bool | None, required: bool, note: str | None) -> Finding:
    """A setting that is on or off; ``note`` says why it is off, or why it was not read."""
    wanted = "on" if required else "any"
    if actual is None:
        return Finding(setting, wanted, f"not read ({note or 'unknown'})", None)
    shown = "on" if actual else "off" + (f" ({note})" if note else "")
    return Finding(setting, wanted, shown, actual or not required)
