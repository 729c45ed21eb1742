"""What a charger's meter values say. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ocpp.v16 import enums as v16

# The measurand and unit words are the same in both versions (tests/protocols check it).
ACTIVE_POWER = v16.Measurand.power_active_import.value
KILOWATT = v16.UnitOfMeasure.kw.value


def power_kw(meter_values: Iterable[Mapping[str, Any]] | None) -> float | None:
    """The last active-power sample (Power.Active.Import) of a MeterValues or TransactionEvent
    payload (snake_case), in kW; None when there is none or none can be read.

    The unit is W unless the sample says kW: 1.6 ``unit``, 2.0.1 ``unit_of_measure``
    ``{unit, multiplier}`` (value x 10^multiplier).
    """
    power = None
    for meter_value in meter_values or []:
        for sample in meter_value.get("sampled_value", []):
            if sample.get("measurand") != ACTIVE_POWER:
                continue
            try:
                watts = _watts(sample)
            except (KeyError, TypeError, ValueError):
                continue  # a sample we cannot read is skipped; an older readable one still counts
            power = watts / 1000
    return power


def _watts(sample: Mapping[str, Any]) -> float:
    value = float(sample["value"])
    unit, multiplier = sample.get("unit"), 0
    if (measure := sample.get("unit_of_measure")) is not None:
        unit, multiplier = measure.get("unit"), int(measure.get("multiplier", 0))
    value *= 10.0 ** multiplier
    return value * 1000 if unit == KILOWATT else value
