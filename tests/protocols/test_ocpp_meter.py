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


def one(*samples):
    return [{"sampled_value": list(samples)}]


def power(value, **more):
    return {"value": value, "measurand": "Power.Active.Import", **more}


@pytest.mark.parametrize("sample", [
    power("7400", unit="W"), power("7.4", unit="kW"), power("7400"),  # 1.6
    power(7400, unit_of_measure={"unit": "W"}), power(7.4, unit_of_measure={"unit": "kW"}),  # 2.0.1
    power(7.4, unit_of_measure={"unit": "W", "multiplier": 3}),
    power(0.0074, unit_of_measure={"unit": "kW", "multiplier": 3}),
    power(7400000, unit_of_measure={"unit": "kW", "multiplier": -6}),
    power(74, unit_of_measure={"unit": "W", "multiplier": 2}), power(7400, unit_of_measure={}),
    power(7.4, unit_of_measure={"unit": "kw"}),  # 2.0.1 units are free text
])
def test_every_unit_and_multiplier_reads_the_same(sample):
    assert power_kw(one(sample)) == pytest.approx(7.4)


def test_the_issue_s_2_0_1_sample_in_kw_is_not_read_1000_times_too_small():
    # camel_to_snake_case of {"value": 7.4, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}}
    from ocpp.charge_point import camel_to_snake_case

    wire = {"meterValue": [{"sampledValue": [{"value": 7.4, "measurand": "Power.Active.Import",
                                              "unitOfMeasure": {"unit": "kW"}}]}]}
    assert power_kw(camel_to_snake_case(wire)["meter_value"]) == pytest.approx(7.4)


@pytest.mark.parametrize("sample", [
    power("16", unit="A"), power("7400", unit="Wh"), power("7.4", unit="kvar"),
    power(7.4, unit_of_measure={"unit": "kW", "multiplier": 1.5}),
    power(7.4, unit_of_measure={"unit": "kW", "multiplier": True}),
    power("nan"), power("inf", unit="W"), power("AAEC...signed", format="SignedData"), "not a sample",
])
def test_what_is_not_active_power_in_w_or_kw_is_skipped_not_guessed(sample):
    assert power_kw(one(sample)) is None
    assert power_kw(one(power("11", unit="kW"), sample)) == 11.0  # a readable sample beside it still counts


def test_phases_add_up_unless_the_total_is_given():
    l1, l2, l3 = (power("2000", unit="W", phase=p) for p in ("L1", "L2", "L3"))
    assert power_kw(one(l1, l2, l3)) == 6.0
    assert power_kw(one(l1, l2, l3, power("6100", unit="W"))) == 6.1  # the total wins
    assert power_kw(one(l1)) == 2.0  # single phase
    to_neutral = [power("1000", unit="W", phase=p) for p in ("L1-N", "L2-N", "L3-N")]
    assert power_kw(one(*to_neutral)) == 3.0
    assert power_kw(one(power("500", unit="W", phase="N"))) is None
