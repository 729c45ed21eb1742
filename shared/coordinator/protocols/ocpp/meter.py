"""What a charger's meter values say. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ocpp.v16 import enums as v16

# The measurand and unit words are the same in both versions (tests/protocols check it).
ACTIVE_POWER = v16.Measurand.power_active_import.value
KILOWATT = v16.UnitOfMeasure.kw.value
WATT = v16.UnitOfMeasure.w.value
UNIT_WATTS = {WATT.lower(): 1.0, KILOWATT.lower(): 1000.0}
"""The units either version allows for active power, by their lower-case spelling (2.0.1's are
free text: "kw" from a careless firmware still means kW)."""
PHASES = ({v16.Phase.l1, v16.Phase.l2, v16.Phase.l3}, {v16.Phase.l1_n, v16.Phase.l2_n, v16.Phase.l3_n})
"""Per-phase samples that add up to the total: the lines (one for a single-phase charger), to
neutral or not; never N or line to line."""


def power_kw(meter_values: Iterable[Mapping[str, Any]] | None) -> float | None:
    """The active power (Power.Active.Import) of the last meter value that says it, from a
    MeterValues or TransactionEvent payload (snake_case), in kW; None when none can be read.

    Every form either version allows reads the same: 1.6 ``unit`` W or kW; 2.0.1
    ``unit_of_measure`` ``{unit, multiplier}`` (value x 10^multiplier); no unit is W. A sample
    without a phase is the total; without one, the per-phase samples (L1, L2, L3) add up to it.
    A sample that cannot be read (another unit, signed data, no value) is skipped, never guessed.
    """
    power = None
    for meter_value in meter_values or []:
        total, phases = None, {}
        for sample in meter_value.get("sampled_value") or []:
            if not isinstance(sample, Mapping) or sample.get("measurand") != ACTIVE_POWER:
                continue
            try:
                watts = _watts(sample)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a sample we cannot read is skipped; an older readable one still counts
            phase = sample.get("phase")
            if phase is None:
                total = watts
            else:
                phases[phase] = watts
        if total is None:
            total = next((sum(phases[p] for p in group & phases.keys()) for group in PHASES
                          if group & phases.keys()), None)
        if total is not None:
            power = total / 1000
    return power


def _watts(sample: Mapping[str, Any]) -> float:
    value = float(sample["value"])
    if not math.isfinite(value):
        raise ValueError(f"not a reading: {value}")
    unit, multiplier = sample.get("unit"), 0
    if (measure := sample.get("unit_of_measure")) is not None:
        unit, multiplier = measure.get("unit"), measure.get("multiplier", 0)
        if isinstance(multiplier, bool) or not isinstance(multiplier, int):
            raise ValueError(f"multiplier must be an integer, got {multiplier!r}")
    scale = UNIT_WATTS[WATT.lower() if unit is None else str(unit).lower()]  # KeyError: not a power unit
    return value * 10.0 ** multiplier * scale
