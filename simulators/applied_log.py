"""Device-side evidence: one JSON line per setpoint a simulated device applies.

The fault-injection suite (tests/chaos/) judges delivery from what the devices did, not from
what the coordinator says it did. Every simulator that takes setpoints can write this log
(``--applied-log PATH``); the format is the same for all of them:

    {"at": "2025-01-15T08:00:01.234567+00:00", "asset_id": "ast_bay_1", "power_kw": 11.0,
     "changed": true, "command_type": "SET_CHARGE_RATE"}
    {"at": "...", "asset_id": "ast_bay_1", "boot": true, "pid": 4242}

``changed`` is false when the device was told the value already in force (a repeated write).
A ``boot`` line is written for every asset each time the simulator process starts, so that a
re-application after a restart (the device forgot its setpoint) can be told from a duplicate.
The file is opened for appending and every line is flushed at once: a simulator killed with
-9 loses nothing it logged, and a restarted one continues the same file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from coordinator.timeutil import utcnow


class AppliedLog:
    """Append-only JSON-lines writer of applied setpoints."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered text, flushed per line: what was logged is in the file before the next device step.
        self._file: IO[str] = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives with the process)

    def boot(self, asset_ids: Iterable[str]) -> None:
        pid = os.getpid()
        for asset_id in asset_ids:
            self._write({"at": utcnow().isoformat(), "asset_id": asset_id, "boot": True, "pid": pid})

    def applied(self, asset_id: str, power_kw: float, changed: bool, command_type: str | None = None) -> None:
        line: dict[str, Any] = {"at": utcnow().isoformat(), "asset_id": asset_id, "power_kw": power_kw,
                                "changed": changed}
        if command_type is not None:
            line["command_type"] = command_type
        self._write(line)

    def _write(self, line: dict[str, Any]) -> None:
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
