"""New passwords and secret values, from the operating system's CSPRNG (``secrets``)."""

from __future__ import annotations

import secrets
import string

from dr_runbooks.redaction import register_secret

__all__ = ["new_password"]

# Letters and digits only: the value goes into DSNs, URIs and shell-quoted configuration
# unescaped. 32 of 62 symbols is ~190 bits.
_ALPHABET = string.ascii_letters + string.digits


def new_password(length: int = 32) -> str:
    """A random password with at least one lower-case letter, upper-case letter and digit
    (what most password policies ask), registered for redaction before it is returned."""
    if length < 16:
        raise ValueError("a password shorter than 16 characters is not generated here")
    while True:
        value = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in value)
            and any(c.isupper() for c in value)
            and any(c.isdigit() for c in value)
        ):
            register_secret(value)
            return value
