"""The planner's durable ledger: schedules, commands, every lifecycle transition and the
messages that announce them, in one SQLite file (WAL), so that a planner killed at any moment
resumes exactly where its last committed unit of work left it.

    >>> from coordinator.ledger import Ledger
    >>> ledger = Ledger.open(":memory:")
    >>> with ledger.unit() as unit:
    ...     unit.publish("qubit/events/X/site", b"...")
    >>> [m.topic for m in ledger.unsent()]
    ['qubit/events/X/site']

docs/durability.md says what is stored, when it is written and what a restart does.
"""

from coordinator.ledger.outbox import OutboxSender, Transport
from coordinator.ledger.store import Ledger, LedgerError, OutgoingMessage, Unit

__all__ = ["Ledger", "LedgerError", "OutboxSender", "OutgoingMessage", "Transport", "Unit"]
