"""The message size limit on the receiving side and in a gateway's results."""

import logging
from datetime import UTC, datetime

from coordinator.contract.messages import CommandResult, Outcome, ResultBatch, StatusReport, decode
from coordinator.runtime.command_intake import CommandIntake
from coordinator.runtime.gateway_record import GatewayRecord
from coordinator.runtime.service import receives

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


class Receiver:
    def __init__(self) -> None:
        self.got: list[StatusReport] = []

    @receives(StatusReport, "status report")
    def on_status(self, topic: str, report: StatusReport) -> None:
        self.got.append(report)


def report(size: int) -> bytes:
    return StatusReport(asset_id="ast_1", state="IDLE", at=T0, detail={"pad": "x" * size}).encode()


def test_receivers_refuse_what_is_over_the_setting_and_log_why(monkeypatch, caplog):
    monkeypatch.setenv("QUBIT_MAX_MESSAGE_BYTES", str(64 << 10))
    receiver = Receiver()
    receiver.on_status("t", report(60 << 10))
    with caplog.at_level(logging.ERROR):
        receiver.on_status("t", report(70 << 10))
    assert len(receiver.got) == 1
    assert "limit 65536" in caplog.text
    monkeypatch.setenv("QUBIT_MAX_MESSAGE_BYTES", str(128 << 10))
    receiver.on_status("t", report(70 << 10))  # the setting is read again once it changed
    assert len(receiver.got) == 2


def test_a_gateways_results_leave_in_messages_under_the_limit_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("QUBIT_MAX_MESSAGE_BYTES", str(64 << 10))
    sent: list[bytes] = []
    intake = CommandIntake("gw", lambda topic, payload, qos=1, retain=False: sent.append(payload),
                           GatewayRecord(tmp_path / "gw.sqlite"))
    results = [CommandResult(command_id=f"cmd_{i}", asset_id=f"ast_{i}", outcome=Outcome.COMPLETED, at=T0)
               for i in range(3000)]
    intake.send(results, remember=False)
    assert len(sent) > 1
    assert all(len(payload) <= 64 << 10 for payload in sent)
    assert [r for payload in sent for r in decode(ResultBatch, payload).results] == results
