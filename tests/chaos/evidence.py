"""Device-side evidence, read into one shape whatever wrote it.

Three writers, one line format (JSON lines; see simulators/applied_log.py):

- the loopback gateway's ``--device-log PATH``: ``at, asset_id, command_id, attempt,
  command_type, power_kw, changed`` per application on the (simulated) device;
- the charge point and battery simulators' ``--applied-log PATH``: ``at, asset_id, power_kw,
  changed`` (and ``command_type``) per setpoint applied;
- any of them: ``{"at", "asset_id", "boot": true}`` when the device (re)started and forgot
  what was in force.

Where the loopback gateway has no ``--device-log`` yet (today's main), ``from_results``
stands in: every COMPLETED result the gateway published is taken as one application, with
``changed`` meaning "differs from the value this asset was last given". That is the
gateway's word, not the device's; the verdict says which evidence it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.chaos.plan import value_key


@dataclass(frozen=True, slots=True)
class Application:
    """One setpoint write on one device, in the order the device saw them."""

    asset_id: str
    power_kw: float
    changed: bool
    """The value entered force (it differs from what was in force)."""
    after_boot: bool = False
    """The first write to this asset since its device (re)booted."""
    command_id: str | None = None
    attempt: int | None = None

    @property
    def key(self) -> tuple[str, float]:
        return self.asset_id, value_key(self.power_kw)


def from_device_lines(lines: list[dict[str, Any]]) -> list[Application]:
    """Device log / applied log lines, in file order, to applications (boot lines mark the next write)."""
    rebooted: set[str] = set()
    out: list[Application] = []
    for line in lines:
        asset_id = line["asset_id"]
        if line.get("boot"):
            rebooted.add(asset_id)
            continue
        out.append(Application(asset_id, float(line["power_kw"]), bool(line["changed"]), asset_id in rebooted,
                               line.get("command_id"), line.get("attempt")))
        rebooted.discard(asset_id)
    return out


def from_results(results: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[Application]:
    """Fallback: the gateway's COMPLETED results, valued through the commands' events."""
    value_of = {e["command_id"]: e["power_kw"] for e in events if e.get("command_id") and e.get("power_kw") is not None}
    last: dict[str, float] = {}
    out: list[Application] = []
    for r in results:
        if r.get("outcome") != "completed" or r["command_id"] not in value_of:
            continue
        value = float(value_of[r["command_id"]])
        changed = last.get(r["asset_id"]) != value_key(value)
        last[r["asset_id"]] = value_key(value)
        out.append(Application(r["asset_id"], value, changed, command_id=r["command_id"]))
    return out
