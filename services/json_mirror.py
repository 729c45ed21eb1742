"""JSON mirror: what SCADA reads, republished as JSON for clients without msgpack.

Opt-in, one process of its own under its own broker identity (``json-mirror``). It reads the
read-only trees SCADA reads (events, asset states, service statuses, telemetry) and
republishes each message, validated, under ``{root}/json/...`` with the same remaining topic
levels, QoS and retain flag. The JSON has the same field names as the msgpack map;
timestamps are RFC 3339 strings in UTC (``2025-01-15T08:00:00.000250Z``). Nothing is
mirrored the other way: the JSON tree is read-only, commands stay msgpack
(docs/wire-contract.md, "JSON for SCADA clients").

    qubit-json-mirror --site-config deploy/site.toml
    mosquitto_sub -t 'qubit/json/events/#' -u scada ...
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import AwareDatetime, TypeAdapter

from coordinator.contract.codec import DecodeError, decode_event
from coordinator.contract.events import RefusalReason
from coordinator.contract.messages import AssetStateMessage, ServiceStatus, Telemetry, WireModel, decode
from coordinator.contract.topics import ASSET_STATES_ALL, EVENTS_ALL, ROOT, SERVICES_ALL, TELEMETRY_ALL, json_topic
from coordinator.runtime.service import Inbound, Publish, Service, base_arguments, load_site, max_message_bytes, run
from coordinator.site import SiteConfig

log = logging.getLogger(__name__)

_MODELS: dict[str, type[WireModel]] = {"state": AssetStateMessage, "services": ServiceStatus, "telemetry": Telemetry}
_RETAINED = frozenset({"state", "services"})
"""Families whose msgpack messages are retained: their JSON copies are retained too."""
_QOS = {"telemetry": 0}


class Mirrored(NamedTuple):
    """One JSON message to publish."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def family(topic: str) -> str:
    """The tree a topic of this site belongs to: ``{root}/state/x`` -> ``state``."""
    return topic[len(ROOT) + 1:].split("/", 1)[0] if topic.startswith(ROOT + "/") else ""


def to_json(topic: str, data: bytes, *, max_bytes: int) -> Mirrored:
    """The JSON form of a msgpack message received on ``topic``; DecodeError if it is not a
    valid message of its family. An empty payload on a retained family (a cleared retained
    message) is cleared on the mirror too."""
    kind = family(topic)
    retain = kind in _RETAINED
    target = json_topic(topic)
    if not data and retain:
        return Mirrored(target, b"", 1, True)
    document: dict[str, Any]
    if kind == "events":
        event = decode_event(data, max_bytes=max_bytes)
        document = {"event_id": event.event_id, "event_type": event.event_type.value,
                    "timestamp": _rfc3339(event.timestamp), "payload": event.payload.model_dump(mode="json")}
    elif kind in _MODELS:
        document = decode(_MODELS[kind], data, max_bytes=max_bytes).model_dump(mode="json")
    else:
        raise DecodeError(f"not a mirrored topic: {topic}")
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Mirrored(target, text.encode(), _QOS.get(kind, 1), retain)


_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def _rfc3339(at: datetime) -> str:
    """pydantic's JSON form of an aware datetime: the same text as every payload's timestamps."""
    return str(_TIME.dump_python(at, mode="json"))


class JsonMirror(Service):
    """Republishes SCADA's read trees as JSON under ``{root}/json/``."""

    publishes = (json_topic(f"{ROOT}/#"),)

    def __init__(self, site: SiteConfig, publish: Publish) -> None:
        self.site = site
        self.publish = publish

    def subscriptions(self) -> list[Inbound]:
        return [Inbound(f, self.on_message) for f in (EVENTS_ALL, ASSET_STATES_ALL, SERVICES_ALL, TELEMETRY_ALL)]

    def on_message(self, topic: str, data: bytes) -> None:
        limit = max_message_bytes()
        if len(data) > limit:
            self.refuse(topic, RefusalReason.TOO_LARGE, f"mirror: {len(data)} bytes, over the limit {limit}")
            return
        try:
            out = to_json(topic, data, max_bytes=limit)
        except DecodeError as exc:
            self.refuse(topic, RefusalReason.UNREADABLE, f"mirror: {exc.reason}")
            return
        self.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)


def main(argv: list[str] | None = None) -> int:
    args = base_arguments(__doc__.splitlines()[0]).parse_args(argv)
    return run("json-mirror", JsonMirror, load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
