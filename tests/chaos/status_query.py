"""What ``qubit status`` answers, asked over MQTT for many commands at once (one CLI process per
command would take minutes): the same Query messages on qubit/query/requests."""

from __future__ import annotations

import queue
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.codec import DecodeError
from coordinator.contract.messages import Query, QueryKind, QueryReply, decode
from coordinator.contract.topics import QUERY_REQUESTS, query_reply_topic
from coordinator.runtime.mqtt import BrokerLogin


def ask(host: str, port: int, kind: QueryKind, ids: list[str], timeout: float = 10.0,
        login: BrokerLogin | None = None) -> dict[str, QueryReply]:
    """id -> the reply; ids with no reply within ``timeout`` are absent. ``login``: an
    identity that may ask (``operator``), as `qubit status` would."""
    client_id = f"chaos-status-{uuid.uuid4().hex[:8]}"
    reply_to = query_reply_topic(client_id)
    inbox: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[int] = queue.Queue()
    client = (login or BrokerLogin()).apply(
        paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311))
    client.max_queued_messages_set(0)
    client.on_message = lambda c, u, m: inbox.put(bytes(m.payload))
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(mid)
    client.connect(host, port)
    client.loop_start()
    replies: dict[str, QueryReply] = {}
    try:
        client.subscribe(reply_to, qos=1)
        subscribed.get(timeout=5)
        asked = {f"qry_chaos_{i}": ident for i, ident in enumerate(ids)}
        for query_id, ident in asked.items():
            client.publish(QUERY_REQUESTS, Query(query_id=query_id, reply_to=reply_to, kind=kind, id=ident).encode(),
                           qos=1)
        deadline = time.monotonic() + timeout
        while len(replies) < len(asked) and time.monotonic() < deadline:
            try:
                reply = decode(QueryReply, inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except (queue.Empty, DecodeError):
                continue
            if reply.query_id in asked:
                replies[asked[reply.query_id]] = reply
    finally:
        client.disconnect()
        client.loop_stop()
    return replies


def command_statuses(host: str, port: int, command_ids: list[str], timeout: float = 10.0,
                     login: BrokerLogin | None = None) -> dict[str, str]:
    """command_id -> its status as ``qubit status cmd_...`` reports it ("?" when not known)."""
    out: dict[str, str] = {}
    for command_id, reply in ask(host, port, QueryKind.COMMAND, command_ids, timeout, login).items():
        result: Any = reply.result
        out[command_id] = str(result.get("status", "?")) if reply.ok and isinstance(result, dict) else "?"
    return out


def schedule_summary(host: str, port: int, schedule_id: str, timeout: float = 10.0,
                     login: BrokerLogin | None = None) -> str:
    """``qubit status sch_...`` in one line: the status counts, or why there is no answer."""
    reply = ask(host, port, QueryKind.SCHEDULE, [schedule_id], timeout, login).get(schedule_id)
    if reply is None:
        return "no answer"
    if not reply.ok:
        return f"error: {reply.error}"
    result: Any = reply.result
    counts = result.get("command_statuses", {}) if isinstance(result, dict) else {}
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no commands"
