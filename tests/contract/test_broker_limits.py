"""One message size limit: the shipped broker config admits exactly what senders let through."""

import re
from pathlib import Path

from coordinator.contract.codec import MAX_SCHEDULE_BYTES
from coordinator.contract.messages import MAX_ACCEPTED_SCHEDULE_BYTES, AcceptedSchedule, broker_max_packet_size
from coordinator.runtime.settings import Settings
from coordinator.timeutil import utcnow
from tools.broker import CONFIG_TEMPLATE, broker_config, shipped_config_lines


def configured(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"^max_packet_size (\d+)$", text, re.MULTILINE)]


def test_the_static_config_holds_what_the_code_computes_for_the_default_limit():
    default = Settings.from_environ({}).max_message_bytes
    assert configured(CONFIG_TEMPLATE.read_text()) == [broker_max_packet_size(default)]


def test_generated_configs_carry_the_limit_from_the_settings(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("QUBIT_MAX_MESSAGE_BYTES", str(64 << 20))
    assert configured(broker_config(1883, tmp_path)) == [broker_max_packet_size(64 << 20)]
    assert configured("\n".join(shipped_config_lines())) == [broker_max_packet_size(64 << 20)]
    assert broker_max_packet_size(64 << 20) > 64 << 20


def test_the_largest_accepted_schedule_fits_the_broker():
    envelope = AcceptedSchedule(schedule_id="s" * 128, version=2**63 - 1, received_at=utcnow(),
                                command_count=2**63 - 1, schedule=b"x" * MAX_SCHEDULE_BYTES).encode()
    assert len(envelope) <= MAX_ACCEPTED_SCHEDULE_BYTES
    topic = b"qubit/schedules/accepted"
    packet = 1 + 4 + 2 + len(topic) + 2 + len(envelope)
    assert packet <= broker_max_packet_size(1 << 20)
