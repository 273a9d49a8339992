"""Prefect tasks: one runbook step each, named service first, then verb."""
