"""Shared by the gateway benchmarks: publish one command batch, time each command's end."""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as paho
from results import median, p99

from coordinator.base import Command
from coordinator.contract.messages import CommandBatch, Outcome, ResultBatch, decode
from coordinator.contract.topics import ROOT, commands_topic


def percentiles(samples: list[float]) -> str:
    """p50, p99 (results.p99, the figure every benchmark records) and the last, in ms."""
    return (f"p50 {median(samples) * 1e3:7.1f} ms   p99 {p99(samples) * 1e3:7.1f} ms   "
            f"last {max(samples) * 1e3:7.1f} ms")


def time_batch(inbox: queue.Queue[paho.MQTTMessage], client: paho.Client, gateway_id: str,
               commands: list[Command], limit: float = 60.0) -> list[float]:
    """Seconds from publishing ``commands`` as one batch (as the planner does when they fall
    due) to each one's COMPLETED result; any other final outcome aborts the benchmark."""
    payload = CommandBatch.of(gateway_id, commands).encode()
    pending = {c.command_id for c in commands}
    latencies = []
    start = time.perf_counter()
    client.publish(commands_topic(gateway_id), payload, qos=1)
    while pending and time.perf_counter() < start + limit:
        try:
            message = inbox.get(timeout=1)
        except queue.Empty:
            continue
        if not message.topic.startswith(f"{ROOT}/results/"):
            continue
        for r in decode(ResultBatch, bytes(message.payload)).results:
            if r.command_id in pending and r.outcome is not Outcome.ACKNOWLEDGED:
                if r.outcome is not Outcome.COMPLETED:
                    raise SystemExit(f"{r.asset_id}: {r.outcome} {r.error}")
                pending.discard(r.command_id)
                latencies.append(time.perf_counter() - start)
    if pending:
        raise SystemExit(f"{len(pending)} commands unanswered")
    return latencies
