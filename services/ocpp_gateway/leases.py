"""Setpoint leases on OCPP chargers: when a setpoint profile ends, and when it is renewed. Pure.

Every setpoint profile the gateway sends carries validTo = now + the site's lease, at a stack
level above the charger's fallback profile (no validTo, at the asset's fallback_kw). While the
gateway lives it sends the setpoints in force again, with a fresh validTo, every half lease;
when it dies the charger drops each profile at its validTo by itself and the fallback is in force.
"""

from __future__ import annotations

from datetime import datetime, timedelta

RENEW_FRACTION = 0.5
"""Renew after this share of the lease: one renewal may be lost or late and the lease still holds."""


def lease_end(now: datetime, lease_seconds: float) -> datetime:
    """validTo of a setpoint profile sent at ``now``."""
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
    return now + timedelta(seconds=lease_seconds)


def renew_interval(lease_seconds: float) -> float:
    """Seconds between two renewals of a charger's setpoint profiles."""
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
    return lease_seconds * RENEW_FRACTION
