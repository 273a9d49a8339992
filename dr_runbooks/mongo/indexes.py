"""Turn the index specs a dump recorded into what a restore sends to ``createIndexes``.

Dumps carry index specs as the source server listed them, and old servers accepted specs a
current one refuses. The decisions, following mongorestore where it has one:

- ``ns`` and ``v`` are dropped. ``ns`` names the source namespace (wrong after a rename, and
  refused in specs by recent servers); without ``v`` the target builds its current index
  version, as mongorestore does unless ``--keepIndexVersion``.
- Legacy key values are converted as ``mongorestore --convertLegacyIndexes`` does, always:
  before 3.4 any key value that was not a negative number or a known string meant ascending,
  so ``0`` (any numeric type), ``""``, ``true``, ``null`` and other non-numbers become ``1``.
  Other numbers are kept (``2`` is still ascending, ``-1`` descending) and so are strings
  (``"2dsphere"``, ``"text"``, ``"hashed"``, ``"2d"``). A DR restore must not fail on an index
  the source server was happy with, so this is not optional.
- An index whose converted key, collation, partial filter and wildcard projection equal an
  earlier one's is a duplicate the server would refuse ("index already exists with a different
  name"); it is dropped and the first one kept, as mongorestore does.
- Options the server does not know (2.x's ``safe``, ``dropDups``; ``background``, ignored since
  4.2) are dropped; everything that shapes the index is kept untouched: ``unique``,
  ``sparse``, ``expireAfterSeconds`` (TTL), ``partialFilterExpression``, ``collation``, text
  ``weights``/``default_language``/``language_override``/``textIndexVersion``, 2d ``bits``/
  ``min``/``max``, ``2dsphereIndexVersion``, ``wildcardProjection``, ``hidden`` and the key
  order of compound indexes. Dotted ``hashed`` keys are kept (mongorestore changes them only
  on request, ``--fixDottedHashedIndexes``).
- ``geoHaystack`` indexes were removed in MongoDB 5.0 and cannot be rebuilt: like mongorestore
  we refuse them (:class:`UnrestorableIndex`) rather than restore without them silently.
- The ``_id_`` index is returned apart (:attr:`IndexPlan.id_index`): the server builds it
  when the collection is created, so it does not belong in ``createIndexes``.

Every change is listed in :attr:`IndexPlan.notes` so the restore can log it.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.son import SON

from dr_runbooks.errors import InvalidArchive, RestoreFailed

__all__ = ["IndexPlan", "UnrestorableIndex", "create_indexes_command", "normalize_indexes"]

# The index options current servers accept (mongo-tools' list from index_descriptor.h, plus
# options added since). ``key`` and ``name`` are handled separately.
KNOWN_OPTIONS = frozenset(
    {
        "unique",
        "sparse",
        "expireAfterSeconds",
        "partialFilterExpression",
        "collation",
        "weights",
        "default_language",
        "language_override",
        "textIndexVersion",
        "2dsphereIndexVersion",
        "bits",
        "min",
        "max",
        "wildcardProjection",
        "hidden",
        "storageEngine",
        "prepareUnique",
        "coarsestIndexedLevel",
        "finestIndexedLevel",
    }
)
_DROPPED_QUIETLY = frozenset({"ns", "v"})
_IDENTITY_OPTIONS = ("collation", "partialFilterExpression", "wildcardProjection")


class UnrestorableIndex(RestoreFailed):
    """An index spec that no current server can build (a geoHaystack index)."""


@dataclass(frozen=True)
class IndexPlan:
    """Index specs ready for ``createIndexes``, the ``_id`` index, and what was changed."""

    indexes: list[dict[str, Any]]
    id_index: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [index["name"] for index in self.indexes]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, bson.Decimal128):
        try:
            return float(value.to_decimal())
        except (decimal.InvalidOperation, ValueError):
            return None
    return None


def _convert_key_value(value: Any) -> tuple[Any, bool]:
    """mongorestore's ``ConvertLegacyIndexKeyValue``: the value a 3.4+ server accepts."""
    if isinstance(value, str):
        return (1, True) if value == "" else (value, False)
    number = _number(value)
    if number is None:  # booleans, null, documents...: pre-3.4 servers read them as 1
        return 1, True
    if math.isnan(number) or number == 0:
        return 1, True
    return value, False


def _same_key(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Key patterns as the server compares them: same fields in order, numerically equal."""
    if list(a) != list(b):
        return False
    for field_name in a:
        left, right = a[field_name], b[field_name]
        if isinstance(left, str) or isinstance(right, str):
            if left != right:
                return False
            continue
        x, y = _number(left), _number(right)
        if x is None or y is None or abs(x - y) >= 1e-9:
            return False
    return True


def normalize_indexes(indexes: Sequence[Mapping[str, Any]], *, namespace: str) -> IndexPlan:
    """Normalise a collection's dumped index specs (see the module docstring).

    ``namespace`` only names the collection in notes and errors. A spec without a ``key``
    document or a ``name`` is malformed input (:class:`InvalidArchive`); a geoHaystack index
    raises :class:`UnrestorableIndex`.
    """
    kept: list[dict[str, Any]] = []
    id_index: dict[str, Any] | None = None
    notes: list[str] = []
    for spec in indexes:
        name, key = spec.get("name"), spec.get("key")
        if not isinstance(name, str) or not isinstance(key, Mapping) or not key:
            raise InvalidArchive(f"{namespace}: an index spec has no name or no key: {spec!r}")
        if any(value == "geoHaystack" for value in key.values()):
            raise UnrestorableIndex(
                f"{namespace}: found a geoHaystack index {name!r}; MongoDB 5.0 removed them, "
                "drop or replace it on the source before restoring"
            )
        converted: dict[str, Any] = {}
        for field_name, value in key.items():
            new_value, changed = _convert_key_value(value)
            converted[field_name] = new_value
            if changed:
                notes.append(
                    f"{namespace}: index {name!r}: legacy key value {value!r} for "
                    f"{field_name!r} converted to {new_value!r}"
                )
        clean: dict[str, Any] = {"key": converted, "name": name}
        for option, value in spec.items():
            if option in ("key", "name") or option in _DROPPED_QUIETLY:
                continue
            if option in KNOWN_OPTIONS:
                clean[option] = value
            else:
                notes.append(f"{namespace}: index {name!r}: unknown option {option!r} dropped")
        if name == "_id_":
            id_index = clean
            continue
        duplicate = next(
            (
                other
                for other in kept
                if _same_key(other["key"], converted)
                and all(other.get(o) == clean.get(o) for o in _IDENTITY_OPTIONS)
            ),
            None,
        )
        if duplicate is not None:
            notes.append(
                f"{namespace}: index {name!r} dropped: same key as index {duplicate['name']!r}"
            )
            continue
        kept.append(clean)
    return IndexPlan(indexes=kept, id_index=id_index, notes=notes)


def create_indexes_command(collection: str, plan: IndexPlan) -> SON[str, Any]:
    """The ``createIndexes`` command for ``plan`` (run it on the target database)."""
    return SON([("createIndexes", collection), ("indexes", plan.indexes)])
