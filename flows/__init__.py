"""Prefect flows: one module per runbook of the disaster-recovery plan."""
