"""``ocpp`` call dataclasses -> the JSON payload sent on the wire, and an answer's payload
back to snake_case. Pure.

The same keys and values ``ocpp.ChargePoint.call`` sends (camelCase, the package's own
spelling with its special cases, no None values), without the package's repeated copying;
answers get the package's own snake_case spelling (``camel_to_snake_case``), one key at a time.
"""

from __future__ import annotations

import functools
import json
from dataclasses import fields, is_dataclass
from typing import Any

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case


def call_payload(call: Any) -> dict[str, Any]:
    """An ``ocpp`` call dataclass -> the JSON payload ``ChargePoint.call`` would send for it:
    camelCase keys (the package's own spelling, special cases included), no None values.

    The package's ``serialize_as_dict`` deep-copies every nested dataclass once per level;
    at a slot boundary with a thousand chargers that alone cost ~160 us a call here, this
    about a tenth. The tests check both give the same payload for every call we build.
    """
    plain = _plain(call)
    if not isinstance(plain, dict):
        raise TypeError(f"expected an ocpp call dataclass, got {type(call).__name__}")
    return plain


def json_payload(call: Any) -> dict[str, Any]:
    """``call_payload`` with plain str/int/float only (no enum members), so any codec
    (msgpack, JSON) carries it unchanged."""
    payload: dict[str, Any] = json.loads(json.dumps(call_payload(call)))
    return payload


def _plain(value: object) -> Any:
    names = _field_names(type(value))
    if names is not None:
        return {camel: _plain(v) for name, camel in names if (v := getattr(value, name)) is not None}
    if isinstance(value, dict):
        return {_camel(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_FIELD_NAMES: dict[type, tuple[tuple[str, str], ...] | None] = {}


def _field_names(cls: type) -> tuple[tuple[str, str], ...] | None:
    """(attribute, JSON key) of a dataclass's fields; None for any other type. Cached per type:
    it runs for every value of every payload."""
    try:
        return _FIELD_NAMES[cls]
    except KeyError:
        names = tuple((f.name, _camel(f.name)) for f in fields(cls)) if is_dataclass(cls) else None
        return _FIELD_NAMES.setdefault(cls, names)


@functools.cache
def _camel(name: str) -> str:
    camel: dict[str, Any] = snake_to_camel_case({name: None})  # type: ignore[no-untyped-call]  # ocpp: unannotated
    return next(iter(camel))


def answer_payload(payload: Any) -> Any:
    """An answer's JSON payload with snake_case keys, as the package's ``camel_to_snake_case``
    gives them. The package runs two regular expressions on every key of every answer; at a
    slot boundary with a thousand chargers that was a sixth of the gateway's time per command.
    Here each distinct key is converted once (the tests check both agree)."""
    if isinstance(payload, dict):
        return {_snake(k) if isinstance(k, str) else k: answer_payload(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [answer_payload(v) for v in payload]
    return payload


@functools.lru_cache(maxsize=4096)  # bounded: the keys come from chargers, which may send anything
def _snake(key: str) -> str:
    snake: dict[str, Any] = camel_to_snake_case({key: None})  # type: ignore[no-untyped-call]  # ocpp: unannotated
    return next(iter(snake))
