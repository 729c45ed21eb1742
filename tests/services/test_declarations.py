"""Each process declares what it receives (topic filter -> wire model -> handler) and what it publishes."""

from __future__ import annotations

import pytest

from coordinator.contract.messages import (
    AssetStateMessage,
    CommandBatch,
    OperatorCommand,
    Query,
    ReceivedResultBatch,
    StatusReport,
)
from coordinator.runtime.service import Inbound, Service
from services.ingester import ScheduleIngester
from services.loopback_gateway import LoopbackGateway
from services.planner import Planner
from services.tracker import StateTracker


@pytest.mark.parametrize(("make", "declared"), [
    (ScheduleIngester, {"qubit/schedules/in": None}),
    (Planner, {"qubit/state/+": AssetStateMessage, "qubit/schedules/accepted": None,
               "qubit/results/+": ReceivedResultBatch, "qubit/events/SCHEDULE_REJECTED/+": None,
               "qubit/query/requests": Query, "qubit/operator/commands": OperatorCommand}),
    (StateTracker, {"qubit/state/+": AssetStateMessage, "qubit/status/+/+": StatusReport,
                    "qubit/query/requests": Query}),
    (LoopbackGateway, {"qubit/commands/loopback": CommandBatch, "qubit/sim/loopback": None}),
])
def test_every_process_declares_its_routes_and_what_it_publishes(site, recorder, make, declared):
    service = make(site, recorder)
    assert isinstance(service, Service)
    routes = service.subscriptions()
    assert all(isinstance(r, Inbound) for r in routes)
    assert {r.topic_filter: r.model for r in routes} == declared  # None: the handler reads the bytes itself
    assert service.publishes and all(p.startswith("qubit/") or p.startswith("{") for p in service.publishes)
