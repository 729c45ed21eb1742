"""The contract, machine-readable: a JSON Schema per message and an AsyncAPI 3.0 document
for the topic tree, generated from the models so that they cannot drift from the code.

    python -m coordinator.contract.schema docs/contract     # what `make contract` runs

writes ``schemas/{Name}.json`` (every wire model, the command, the schedule, the event
envelope and each event's payload), ``examples/{Name}.json`` and ``examples/events/{TYPE}.json``
(one example of each, from ``coordinator.contract.samples``, in JSON form) and
``asyncapi.json``, and the list of events and the examples in docs/wire-contract.md. A
test regenerates them in memory and compares them with the committed files.

The schemas describe the data of the msgpack maps: a ``date-time`` string is a msgpack
Timestamp (extension -1) on the wire, a ``binary`` string a msgpack bin.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AwareDatetime, BaseModel, TypeAdapter

from coordinator.base import COMMAND_ADAPTER, Command
from coordinator.contract import messages, samples
from coordinator.contract.codec import EventEnvelope, ScheduleFormat
from coordinator.contract.events import PAYLOAD_MODELS, CommandPayload, EventType
from coordinator.contract.topics import CHANNELS, DEFAULT_ROOT, ROOT, ROOT_VARIABLE, SITE, Channel

ASYNCAPI_VERSION = "3.0.0"
CONTRACT_VERSION = "1.0.0"
"""The contract's own version: raise it with any change a receiver could notice."""

SchemaType = type[BaseModel] | type[Command]

MESSAGE_MODELS: dict[str, SchemaType] = {
    "Schedule": ScheduleFormat,
    "Command": Command,
    **{
        model.__name__: model
        for model in vars(messages).values()
        if isinstance(model, type) and issubclass(model, messages.WireModel) and model is not messages.WireModel
    },
    "EventEnvelope": EventEnvelope,
}
"""Every message that crosses the bus by itself or inside another, by its schema name."""

_COMPONENTS = "#/components/schemas/{model}"
Json = dict[str, Any]


def _payload_name(event_type: EventType) -> str:
    return PAYLOAD_MODELS[event_type].__name__


def json_schemas() -> dict[str, Json]:
    """File name (under schemas/) -> a self-contained JSON Schema (draft 2020-12)."""
    out: dict[str, Json] = {}
    for name, model in MESSAGE_MODELS.items():
        out[f"{name}.json"] = _standalone(f"{name}.json", name, model)
    for event_type, model in PAYLOAD_MODELS.items():
        path = f"events/{event_type.value}.json"
        out[path] = _standalone(path, model.__name__, model)
    return out


def _standalone(path: str, name: str, model: SchemaType) -> Json:
    schema = TypeAdapter(model).json_schema()
    schema["title"] = name
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": path, **schema}


def asyncapi() -> Json:
    """The topic tree as an AsyncAPI 3.0 document: channels, one operation per publisher and
    subscriber, MQTT bindings for QoS and retain, messages with payload schemas."""
    schemas: Json = {}
    for name, model in [*MESSAGE_MODELS.items(), *((m.__name__, m) for m in PAYLOAD_MODELS.values())]:
        _collect(schemas, name, model)
    messages_: Json = {name: _message(name, name) for name in MESSAGE_MODELS if name != "EventEnvelope"}
    for event_type in EventType:
        messages_[event_type.value] = _event_message(event_type)
    for name in [m for c in CHANNELS if c.content_type == JSON_CONTENT for m in _message_names(c)]:
        messages_[name] = {**messages_[name.removeprefix(JSON_PREFIX)], "name": name, "contentType": JSON_CONTENT}
    channels: Json = {}
    operations: Json = {}
    for channel in CHANNELS:
        channels[channel.name] = _channel(channel)
        for role, action, who in [*(("send", "send", p) for p in channel.publishers),
                                  *(("receive", "receive", s) for s in channel.subscribers)]:
            operations[f"{channel.name}.{role}.{_slug(who)}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel.name}"},
                "summary": f"{who} {'publishes' if action == 'send' else 'subscribes'}",
                "messages": [{"$ref": f"#/channels/{channel.name}/messages/{m}"} for m in _message_names(channel)],
                "bindings": {"mqtt": {"qos": channel.qos, "retain": channel.retain}},
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "qubit-energy-coordinator wire contract",
            "version": CONTRACT_VERSION,
            "description": ("Layer 4 of the Qubit energy stack over MQTT. Every payload is a msgpack map; "
                            "date-time strings are msgpack Timestamps (UTC, timestamp 32, 64 or 96). The "
                            "opt-in JSON mirror republishes the read-only trees under {root}/json/ as JSON "
                            "(application/json), date-times as RFC 3339 strings. Addresses are shown under "
                            "the default topic root 'qubit' (QUBIT_TOPIC_ROOT). Generated by "
                            "coordinator.contract.schema from the models; do not edit."),
        },
        "defaultContentType": "application/msgpack",
        "servers": {"site": {"host": "localhost:1883", "protocol": "mqtt", "protocolVersion": "3.1.1"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages_, "schemas": dict(sorted(schemas.items()))},
    }


def _collect(schemas: Json, name: str, model: SchemaType) -> None:
    schema = TypeAdapter(model).json_schema(ref_template=_COMPONENTS)
    for def_name, definition in schema.pop("$defs", {}).items():
        _add(schemas, def_name, definition)
    schema["title"] = name
    _add(schemas, name, schema)


def _add(schemas: Json, name: str, schema: Json) -> None:
    if schemas.get(name, schema) != schema:
        raise ValueError(f"two different schemas are both called {name}")
    schemas[name] = schema


def _message(name: str, schema_name: str) -> Json:
    return {"name": name, "contentType": "application/msgpack",
            "payload": {"$ref": _COMPONENTS.format(model=schema_name)}}


def _event_message(event_type: EventType) -> Json:
    envelope = {
        "allOf": [
            {"$ref": _COMPONENTS.format(model="EventEnvelope")},
            {"type": "object", "properties": {
                "event_type": {"const": event_type.value},
                "payload": {"$ref": _COMPONENTS.format(model=_payload_name(event_type))},
            }},
        ]
    }
    return {"name": event_type.value, "contentType": "application/msgpack", "payload": envelope}


JSON_CONTENT = "application/json"
JSON_PREFIX = "json."
"""Message names of the JSON mirror's channels: ``json.`` + the msgpack message's name."""


def _message_names(channel: Channel) -> list[str]:
    names = [t.value for t in EventType] if channel.messages == ("event",) else list(channel.messages)
    return [JSON_PREFIX + n for n in names] if channel.content_type == JSON_CONTENT else names


def _channel(channel: Channel) -> Json:
    out: Json = {
        "address": channel.address,
        "description": channel.description,
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in _message_names(channel)},
    }
    parameters = [part[1:-1] for part in channel.address.split("/") if part.startswith("{")]
    if parameters:
        out["parameters"] = {p: _parameter(p) for p in parameters}
    return out


def _parameter(name: str) -> Json:
    if name == "event_type":
        return {"enum": [t.value for t in EventType], "description": "The event's type."}
    if name == "asset_id_or_site":
        return {"description": f"The asset the event is about, or '{SITE}'."}
    return {"description": f"The {name.replace('_', ' ')}."}


def _slug(who: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in who).strip("_")


# ------------------------------------------------------------- the events, for people

EVENTS_BEGIN = "<!-- events: generated by make contract from coordinator.contract.events -->"
EVENTS_END = "<!-- end of events -->"


def events_markdown() -> str:
    """Every event type with its fields, as the section of docs/wire-contract.md between
    EVENTS_BEGIN and EVENTS_END."""
    common = list(CommandPayload.model_fields)
    lines = [EVENTS_BEGIN, "", "Every COMMAND_* payload carries the command as it is after the change:", ""]
    lines += _field_table(CommandPayload, common)
    for event_type, model in PAYLOAD_MODELS.items():
        doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        lines += ["", f"**{event_type.value}** (`{model.__name__}`): {doc}"]
        own = [name for name in model.model_fields if not (issubclass(model, CommandPayload) and name in common)]
        if issubclass(model, CommandPayload):
            lines[-1] += " The command fields" + (", and:" if own else ".")
        if own:
            lines += ["", *_field_table(model, own)]
    return "\n".join([*lines, "", EVENTS_END])


def _field_table(model: type[BaseModel], names: list[str]) -> list[str]:
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for name in names:
        info = model.model_fields[name]
        kind = _type_text(info.annotation)
        if not info.is_required():
            kind += ", optional"
        meaning = " ".join((info.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {kind} | {meaning} |")
    return rows


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_text(get_args(annotation)[0])
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin in (Union, UnionType):
        text = " or ".join(_type_text(a) for a in args)
        return text + " or nil" if type(None) in get_args(annotation) else text
    if origin is list:
        return f"[{_type_text(args[0])}]"
    if origin is dict:
        return f"map {_type_text(args[0])} -> {_type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return f"str, a `{annotation.__name__}` value"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"map (`{annotation.__name__}`: " + ", ".join(annotation.model_fields) + ")"
    names = {str: "str", int: "int", float: "float", bool: "bool", datetime: "timestamp", AwareDatetime: "timestamp"}
    return names.get(annotation, str(annotation))


def with_events_section(markdown: str) -> str:
    """``markdown`` with its generated sections (the events; the examples, when it has that
    section) replaced by the current ones."""
    markdown = _replace_section(markdown, EVENTS_BEGIN, EVENTS_END, events_markdown)
    if EXAMPLES_BEGIN in markdown:
        markdown = _replace_section(markdown, EXAMPLES_BEGIN, EXAMPLES_END, examples_markdown)
    return markdown


def _replace_section(markdown: str, begin: str, end_marker: str, make: Callable[[], str]) -> str:
    before, found, rest = markdown.partition(begin)
    _, end, after = rest.partition(end_marker)
    if not (found and end):
        raise ValueError(f"the document has no {begin!r} ... {end_marker!r} section")
    return before + make() + after


# ------------------------------------------------------------------ example payloads

EXAMPLES_BEGIN = "<!-- examples: generated by make contract from coordinator.contract.samples -->"
EXAMPLES_END = "<!-- end of examples -->"
_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def as_json(value: Any) -> Any:
    """A message's map (as msgpack carries it) in its JSON form: timestamps as RFC 3339
    strings in UTC, bin as base64, enums as their values. The JSON mirror's form too."""
    if isinstance(value, datetime):
        return _TIME.dump_python(value.astimezone(UTC), mode="json")
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def _wire_map(sample: BaseModel | Command) -> Any:
    if isinstance(sample, Command):
        return COMMAND_ADAPTER.dump_python(sample, mode="python")
    return sample.model_dump(mode="python")


def examples() -> dict[str, Json]:
    """Path (under examples/) -> one example message, in JSON form: every message model
    (``samples.MESSAGES``) and every event, envelope and payload (``samples.envelope``)."""
    out: dict[str, Json] = {f"{name}.json": as_json(_wire_map(sample)) for name, sample in samples.MESSAGES.items()}
    for event_type in EventType:
        out[f"events/{event_type.value}.json"] = as_json(samples.envelope(event_type))
    return out


def examples_markdown() -> str:
    """The example section of docs/wire-contract.md: every message and event, as JSON."""
    lines = [EXAMPLES_BEGIN, ""]
    for path, document in examples().items():
        name = path.removesuffix(".json").removeprefix("events/")
        lines += [f"**{name}** ([contract/examples/{path}](contract/examples/{path})):", "", "```json",
                  _compact(document), "```", ""]
    return "\n".join([*lines, EXAMPLES_END])


def _compact(value: Any, indent: str = "") -> str:
    """JSON for reading: maps one key a line, lists of plain values on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_compact(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + _compact(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


def render(document: Json) -> str:
    """The committed form: stable key order as generated, two-space indent, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def files() -> dict[str, str]:
    """Path (relative to docs/contract/) -> its text."""
    out = {f"schemas/{name}": render(schema) for name, schema in json_schemas().items()}
    out |= {f"examples/{name}": render(example) for name, example in examples().items()}
    out["asyncapi.json"] = render(asyncapi())
    return out


WIRE_CONTRACT = "../wire-contract.md"
"""The people's page, relative to docs/contract/: its events section is generated too."""


def write(root: Path, generated: Mapping[str, str]) -> list[Path]:
    """Write ``generated`` under ``root``, remove stale schema files; return what changed."""
    changed = []
    for relative, text in generated.items():
        path = root / relative
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in sorted([*(root / "schemas").rglob("*.json"), *(root / "examples").rglob("*.json")]):
        if path.relative_to(root).as_posix() not in generated:
            path.unlink()
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m coordinator.contract.schema DIRECTORY", file=sys.stderr)
        return 2
    if ROOT != DEFAULT_ROOT:  # the published contract is written for the default root, as the doc says
        print(f"unset {ROOT_VARIABLE} (it is {ROOT!r}): the contract is generated under the default root",
              file=sys.stderr)
        return 2
    root = Path(args[0])
    changed = write(root, files())
    page = root / WIRE_CONTRACT
    text = page.read_text(encoding="utf-8")
    if (updated := with_events_section(text)) != text:
        page.write_text(updated, encoding="utf-8")
        changed.append(page)
    print(f"{len(changed)} file(s) changed under {args[0]}" if changed else f"{args[0]} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
