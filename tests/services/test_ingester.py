import msgpack
import pandas as pd
import pytest

from coordinator.contract.codec import encode_schedule
from coordinator.contract.messages import AcceptedSchedule, decode
from coordinator.contract.topics import SCHEDULES_ACCEPTED
from coordinator.events import EventType
from services.ingester import Accepted, Rejected, ScheduleIngester, review_schedule

IDX = pd.date_range("2025-01-15 08:00", periods=4, freq="15min", tz="UTC")
MAP = {"ev_001": "ast_bay_1", "battery": "ast_batt_001"}


def schedule_bytes(columns=None, asset_map=MAP, site_id="sit_demo_depot", schedule_id="sch_test_0001", index=IDX):
    columns = columns or {"ev_001_kw": [11.0, 11.0, 22.0, 0.0], "battery_charge_kw": [5.0, 0, 0, 0],
                          "battery_discharge_kw": [0, 0, 7.0, 7.0], "price_per_kwh": [0.1] * 4}
    return encode_schedule(pd.DataFrame(columns, index=index), asset_map=asset_map, site_id=site_id,
                           schedule_id=schedule_id)


def test_good_schedule_accepted_with_command_count(site):
    outcome = review_schedule(schedule_bytes(), site)
    assert isinstance(outcome, Accepted)
    assert outcome.schedule_id == "sch_test_0001"
    assert outcome.command_count == 6  # ev: 11, 22, 0; battery: charge 5, charge 0, discharge 7
    assert outcome.asset_ids == ["ast_batt_001", "ast_bay_1"]


def test_schedule_without_id_gets_one_from_its_content(site):
    data = schedule_bytes(schedule_id=None)
    first, second = review_schedule(data, site), review_schedule(data, site)
    assert first.schedule_id is not None and first.schedule_id.startswith("sch_")
    assert first.schedule_id == second.schedule_id
    other = schedule_bytes(schedule_id=None, columns={"ev_001_kw": [1.0] * 4})
    assert review_schedule(other, site).schedule_id != first.schedule_id


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\xc1 not msgpack", "not_msgpack"),
        (b"\x80" * (17 << 20), "too_large"),
        (msgpack.packb([1, 2, 3]), "malformed"),
        (schedule_bytes(site_id="sit_elsewhere"), "wrong_site"),
        (schedule_bytes(asset_map={"ev_001": "ast_nowhere", "battery": "ast_batt_001"}), "unknown_asset"),
        (schedule_bytes(asset_map={"ev_001": "ast_batt_001", "battery": "ast_bay_1"}), "wrong_asset_kind"),
        (schedule_bytes(columns={"ev_001_kw": [1.0, -1.0, 0, 0]}), "negative_power"),
        (schedule_bytes(columns={"ev_001_kw": [1.0, 2, 0, 0], "ev_404_kw": [1.0] * 4}), "unmapped_columns"),
        (schedule_bytes(columns={"battery_charge_kw": [1.0] * 4, "battery_discharge_kw": [1.0] * 4}),
         "charge_and_discharge"),
        (schedule_bytes(columns={"ev_001_kw": [1.0, 2, 151.0, 0]}), "above_limit"),
        (schedule_bytes(index=IDX[[1, 0, 2, 3]]), "unsorted_index"),
        (schedule_bytes(index=IDX[[0, 0, 2, 3]]), "duplicate_index"),
    ],
)
def test_bad_schedules_rejected_with_reason(site, data, reason):
    outcome = review_schedule(data, site)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason == reason
    assert outcome.message


def test_rejection_keeps_schedule_id_when_readable(site):
    data = msgpack.packb({"schedule_id": "sch_mine", "site_id": "sit_demo_depot", "columns": "nope"})
    outcome = review_schedule(data, site)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason == "malformed" and outcome.schedule_id == "sch_mine"


def test_ingester_publishes_accepted_and_events(site, recorder):
    ingester = ScheduleIngester(site, recorder)
    ingester.on_schedule("qubit/schedules/in", schedule_bytes())
    ingester.on_schedule("qubit/schedules/in", schedule_bytes(schedule_id="sch_2"))
    accepted = [decode(AcceptedSchedule, p, max_bytes=1 << 24) for _, p in recorder.on(SCHEDULES_ACCEPTED)]
    assert [a.schedule_id for a in accepted] == ["sch_test_0001", "sch_2"]
    assert accepted[0].version < accepted[1].version
    assert accepted[0].schedule == schedule_bytes()  # forwarded byte for byte
    (received, _) = recorder.events(EventType.SCHEDULE_RECEIVED)
    assert received.payload["command_count"] == 6 and received.payload["version"] == accepted[0].version
    topics = [t for t, _ in recorder.on("qubit/events/")]
    assert topics[0] == "qubit/events/SCHEDULE_RECEIVED/site"


def test_ingester_rejects_without_publishing_anything_else(site, recorder):
    ScheduleIngester(site, recorder).on_schedule("qubit/schedules/in", b"garbage")
    assert recorder.on(SCHEDULES_ACCEPTED) == []
    (rejected,) = recorder.events(EventType.SCHEDULE_REJECTED)
    assert rejected.payload["reason"] == "not_msgpack" and rejected.payload["schedule_id"] is None
