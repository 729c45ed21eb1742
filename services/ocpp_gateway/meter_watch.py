"""After a setpoint was proven in force, do the charger's meter values keep to it? Pure.

A composite schedule is the charger's word for the limit it enforces; its meter is what the
vehicle draws. For ``window`` seconds after the proof, every active-power sample is held
against the limit: one above it by more than the tolerance is reported once per command
(SETPOINT_NOT_FOLLOWED). Drawing less is never a fault: the vehicle decides below the limit.

    >>> watch = MeterWatch()
    >>> watch.proven("ast_1", "cmd_1", limit_kw=7.0, window=60.0, now=0.0)
    >>> watch.sample("ast_1", measured_kw=7.3, tolerance_kw=0.7, now=5.0) is None
    True
    >>> watch.sample("ast_1", measured_kw=11.0, tolerance_kw=0.7, now=6.0).command_id
    'cmd_1'
    >>> watch.sample("ast_1", measured_kw=11.0, tolerance_kw=0.7, now=7.0) is None   # once per command
    True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Watched:
    command_id: str
    limit_kw: float
    until: float
    """The end of the window, on the caller's monotonic clock."""


class MeterWatch:
    """Per asset, the setpoint last proven and how long its meter values are checked."""

    def __init__(self) -> None:
        self._watched: dict[str, Watched] = {}

    def proven(self, asset_id: str, command_id: str, *, limit_kw: float, window: float, now: float) -> None:
        """``command_id`` was proven in force at ``limit_kw``; a newer proof replaces it."""
        if window > 0:
            self._watched[asset_id] = Watched(command_id, limit_kw, now + window)
        else:
            self._watched.pop(asset_id, None)

    def forget(self, asset_id: str) -> None:
        """The setpoint is no longer ours to hold the meter to (an emergency stop, a new session)."""
        self._watched.pop(asset_id, None)

    def sample(self, asset_id: str, *, measured_kw: float, tolerance_kw: float, now: float) -> Watched | None:
        """The watched setpoint ``measured_kw`` exceeds (reported once), else None."""
        watched = self._watched.get(asset_id)
        if watched is None:
            return None
        if now > watched.until:
            del self._watched[asset_id]
            return None
        if measured_kw > watched.limit_kw + tolerance_kw:
            del self._watched[asset_id]
            return watched
        return None
