"""``dr backup mongodb``, ``dr restore mongodb`` and ``dr backups inspect`` (registered on the
sub-apps of :mod:`dr_runbooks.cli`)."""

from __future__ import annotations
