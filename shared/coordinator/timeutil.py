"""Timezone rules shared by every model: all instants are timezone-aware, stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


class NaiveDatetimeError(ValueError):
    """A datetime without tzinfo was given where an instant is required."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def require_aware(value: datetime, name: str) -> datetime:
    """Return ``value`` unchanged if it is timezone-aware, else raise NaiveDatetimeError.

    A naive datetime is ambiguous on a site that crosses a DST change, so it is
    refused instead of being guessed as UTC or local time.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise NaiveDatetimeError(
            f"{name} must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), got naive {value.isoformat()}"
        )
    return value
