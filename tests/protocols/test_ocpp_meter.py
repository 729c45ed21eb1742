import pytest
from ocpp.v16 import enums as v16
from ocpp.v201 import enums as v201

from coordinator.protocols.ocpp.meter import ACTIVE_POWER, KILOWATT, power_kw


def test_the_last_active_power_sample_in_kw():
    samples = [{"sampled_value": [{"value": "11", "measurand": "Power.Active.Import", "unit": "kW"},
                                  {"value": "5000", "measurand": "Energy.Active.Import.Register"}]},
               {"sampled_value": [{"value": "7400", "measurand": "Power.Active.Import"}]}]
    assert power_kw(samples[:1]) == 11.0
    assert power_kw(samples) == 7.4


@pytest.mark.parametrize("sample", [
    {"value": "x", "measurand": "Power.Active.Import"},
    {"measurand": "Power.Active.Import"},
    {"value": "16", "measurand": "Current.Import"},
    {"value": "16"},  # no measurand: Energy.Active.Import.Register by default
])
def test_no_readable_power(sample):
    assert power_kw([{"sampled_value": [sample]}]) is None
    assert power_kw(None) is None and power_kw([]) is None


def test_2_0_1_unit_of_measure_and_multiplier():
    def sample(value, **measure):
        return [{"sampled_value": [{"value": value, "measurand": "Power.Active.Import", "unit_of_measure": measure}]}]

    assert power_kw(sample(11, unit="kW")) == 11.0
    assert power_kw(sample(7.4, unit="W", multiplier=3)) == pytest.approx(7.4)
    assert power_kw(sample(3000)) == 3.0


def test_the_words_are_the_packages_in_both_versions():
    assert ACTIVE_POWER == v201.MeasurandEnumType.power_active_import == v16.Measurand.power_active_import
    assert KILOWATT == v16.UnitOfMeasure.kw == "kW"
