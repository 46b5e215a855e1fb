"""A cell's identity, derived in one place from the fields of its specification.

Three things identify what a cell computes, and all three are read off the dataclass
fields of :class:`bench.suites.Cell` (and of the :class:`bench.suites.MethodSpec` it
holds, whose fields are flattened into the cell's) by :func:`configuration`, never
listed by hand, so a field added to the specification is part of the identity at once:

- the **configuration**: every field, in declaration order, except those marked
  :data:`OUTSIDE`. It is what a ledger record stores and MLflow shows.
- the **key**: the hash of the configuration and of the code version
  (:func:`bench.ledger.import_closure.code_version`), :func:`cell_key`.
- the **tuning fingerprint**: the configuration less the fields marked :data:`VARIED`;
  a resumed study must agree with it (:func:`fingerprint`).

A field's role is its ``metadata`` (``field(metadata=OUTSIDE)``); the exclusions are:

- :data:`OUTSIDE` (in neither): where a result is filed, not what it is. The suite name
  names the ledger folder and MLflow experiment; the same run in two suites is the same.
- :data:`VARIED` (in the configuration, not in the fingerprint): what differs between
  the trials of one study or is checked beside it: the hyperparameters (what a study
  searches), the label (a study attribute of its own) and ``tuned_from``.

``field(metadata=renamed("method"))`` stores a field under another name in the
configuration (``MethodSpec.name`` is the configuration's ``method``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from types import MappingProxyType
from typing import Any

from bench.ledger.import_closure import code_version

ROLE = "identity"
NAME = "identity_name"
#: Not part of the identity: where the result is filed.
OUTSIDE: Mapping[str, str] = MappingProxyType({ROLE: "outside"})
#: In the configuration and the key, not in the tuning fingerprint.
VARIED: Mapping[str, str] = MappingProxyType({ROLE: "varied"})
KEY_LENGTH = 20


def renamed(name: str, role: Mapping[str, str] = MappingProxyType({})) -> Mapping[str, str]:
    """Field metadata: the field appears as ``name`` in the configuration."""
    return MappingProxyType({**role, NAME: name})


def _items(spec: Any, skip: frozenset[str]) -> Iterator[tuple[str, Any]]:
    for spec_field in fields(spec):
        if spec_field.metadata.get(ROLE) in skip:
            continue
        value = getattr(spec, spec_field.name)
        if is_dataclass(value) and not isinstance(value, type):
            yield from _items(value, skip)
        else:
            yield spec_field.metadata.get(NAME, spec_field.name), value


def _derive(spec: Any, skip: frozenset[str]) -> dict[str, Any]:
    derived: dict[str, Any] = {}
    for name, value in _items(spec, skip):
        if name in derived:  # a nested specification may not shadow an outer field
            raise TypeError(f"{type(spec).__name__}: two fields are named {name!r}")
        derived[name] = value
    return derived


def configuration(spec: Any) -> dict[str, Any]:
    """Everything that determines the result of ``spec`` (a cell), by field."""
    return _derive(spec, frozenset({"outside"}))


def fingerprint(spec: Any) -> dict[str, Any]:
    """What a resumed study must agree with: the configuration less the varied fields,
    as JSON reads it back (so it compares equal to a stored copy)."""
    derived = _derive(spec, frozenset({"outside", "varied"}))
    return json.loads(json.dumps(derived, sort_keys=True, default=jsonable))


def config_key(config: dict[str, Any], code: str) -> str:
    """A cell's key: the hash of its configuration and of the code version that ran it."""
    payload = json.dumps({"config": config, "code": code}, sort_keys=True, default=jsonable)
    return hashlib.sha256(payload.encode()).hexdigest()[:KEY_LENGTH]


def cell_key(spec: Any) -> str:
    """The key of ``spec`` under this checkout's code."""
    return config_key(configuration(spec), code_version())


def jsonable(value: Any) -> Any:
    """A tensor or numpy scalar as its number; anything else JSON lacks as its text."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
