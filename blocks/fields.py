"""Field types the blocks share."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, SecretStr, WithJsonSchema

from dr_runbooks import crypto
from dr_runbooks.errors import BadInput

__all__ = ["OptionalSecret", "Recipients"]


def _empty_is_none(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, SecretStr) and not value.get_secret_value():
        return None
    return value


#: A secret that may be left empty. The UI's form renders an optional field as a plain text box
#: (the secret visible while it is typed); this one renders as a masked password field, and an
#: empty answer means "not given".
OptionalSecret = Annotated[
    SecretStr | None,
    BeforeValidator(_empty_is_none),
    WithJsonSchema({"type": "string", "format": "password", "writeOnly": True}),
]


def _recipients(value: list[str]) -> list[str]:
    try:
        return list(crypto.parse_recipients(value, "encrypt_to"))
    except BadInput as exc:
        raise ValueError(str(exc)) from None


#: age recipients (``age1…``), checked when the block is saved, not at the first backup.
Recipients = Annotated[list[str], AfterValidator(_recipients)]
