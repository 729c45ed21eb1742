"""Schedule ingester: validates what Layer 3 publishes on qubit/schedules/in.

A schedule is accepted whole or refused whole. Refusals are published as
SCHEDULE_REJECTED events with a specific reason (and the schedule_id when one could be
read); an accepted schedule gets an id and a version, goes to the planner on
qubit/schedules/accepted and is announced with SCHEDULE_RECEIVED.

    qubit-ingester --site-config deploy/site.toml
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from coordinator.contract.events import ScheduleReceived, ScheduleRejected
from coordinator.contract.messages import AcceptedSchedule
from coordinator.contract.topics import SCHEDULES_ACCEPTED, SCHEDULES_IN
from coordinator.events import EventBus, EventType
from coordinator.runtime.service import Inbound, Publish, Service, base_arguments, forward_events, load_site, run
from coordinator.schedule import schedule_span
from coordinator.schedule_review import Accepted as Accepted  # re-exported: the ingester's outcomes
from coordinator.schedule_review import Rejected, review_schedule
from coordinator.site import SiteConfig
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)


class ScheduleIngester(Service):
    bus: EventBus
    publishes = (SCHEDULES_ACCEPTED,)
    warm_imports = ("numpy", "pandas")

    def __init__(self, site: SiteConfig, publish: Publish, clock: Callable[[], datetime] = utcnow) -> None:
        self.site = site
        self.publish = publish
        self.clock = clock
        self.bus = EventBus()
        forward_events(self.bus, publish)
        self._last_version = 0

    def subscriptions(self) -> list[Inbound]:
        return [Inbound(SCHEDULES_IN, self.on_schedule)]  # the bytes as published: review_schedule reads them

    def _next_version(self) -> int:
        # Microseconds since the epoch: increases across restarts too, and is readable.
        self._last_version = max(self._last_version + 1, time.time_ns() // 1000)
        return self._last_version

    def on_schedule(self, topic: str, data: bytes) -> None:
        outcome = review_schedule(data, self.site)
        if isinstance(outcome, Rejected):
            log.warning("schedule %s rejected: %s: %s", outcome.schedule_id, outcome.reason, outcome.message)
            self.bus.emit(
                EventType.SCHEDULE_REJECTED,
                ScheduleRejected(schedule_id=outcome.schedule_id, reason=outcome.reason, message=outcome.message,
                                 site_id=self.site.site_id, columns=outcome.columns),
            )
            return
        received_at = self.clock()
        version = self._next_version()
        accepted = AcceptedSchedule(
            schedule_id=outcome.schedule_id, version=version, received_at=received_at,
            command_count=outcome.command_count, schedule=data,
        )
        self.publish(SCHEDULES_ACCEPTED, accepted.encode(), qos=1)
        index = outcome.schedule.frame.index
        starts_at, ends_at = schedule_span(index)
        self.bus.emit(
            EventType.SCHEDULE_RECEIVED,
            ScheduleReceived(
                schedule_id=outcome.schedule_id,
                version=version,
                site_id=self.site.site_id,
                command_count=outcome.command_count,
                asset_count=len(outcome.asset_ids),
                slot_count=len(index),
                starts_at=starts_at,
                ends_at=ends_at,
            ),
        )
        log.info("schedule %s v%s accepted: %s commands", outcome.schedule_id, version, outcome.command_count)


def main(argv: list[str] | None = None) -> int:
    args = base_arguments(__doc__.splitlines()[0]).parse_args(argv)
    return run("ingester", ScheduleIngester, load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
