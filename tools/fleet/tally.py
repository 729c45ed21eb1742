"""What the fleet check counts, as pure functions of what its subscribers received: which
site an event came from, and whether the central broker got every event a site emitted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coordinator.contract.codec import DecodeError, decode_event
from coordinator.contract.topics import ROOT
from coordinator.events import Event
from tools.bus_access import FLEET_ROOT
from tools.fleet.observer import Seen


@dataclass(frozen=True)
class Received:
    """One event as a subscriber got it: from which site (None on a site's own broker)."""

    site_id: str | None
    event: Event
    at: float


def site_of(topic: str) -> str | None:
    """``fleet/<site>/...`` -> ``<site>``; None for a topic outside the fleet's tree."""
    levels = topic.split("/")
    return levels[1] if len(levels) > 2 and levels[0] == FLEET_ROOT else None


def is_event_topic(topic: str) -> bool:
    """A site event (``{root}/events/...``), on a site broker or under a site's central prefix."""
    rest = topic.split("/", 2)[2] if site_of(topic) is not None else topic
    return rest.startswith(f"{ROOT}/events/")


def events(seen: Iterable[Seen]) -> list[Received]:
    """The decodable events among ``seen``, in arrival order (anything else is skipped: the
    check's other assertions look at it)."""
    out = []
    for s in seen:
        if not is_event_topic(s.topic):
            continue
        try:
            out.append(Received(site_of(s.topic), decode_event(s.payload), s.at))
        except DecodeError:
            continue
    return out


@dataclass(frozen=True)
class Comparison:
    """Event ids a site's own broker saw, against the ids the central broker delivered for it."""

    expected: int
    lost: tuple[str, ...]
    """Seen on the site, never centrally: must be empty."""
    duplicated: tuple[str, ...]
    """Delivered centrally more than once (QoS 1 is at least once; each copy is the same event)."""

    @property
    def complete(self) -> bool:
        return not self.lost


def compare(local_ids: Sequence[str], central_ids: Sequence[str]) -> Comparison:
    counts = Counter(central_ids)
    return Comparison(len(set(local_ids)), tuple(i for i in dict.fromkeys(local_ids) if i not in counts),
                      tuple(i for i in dict.fromkeys(local_ids) if counts[i] > 1))
