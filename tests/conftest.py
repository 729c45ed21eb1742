"""Fixtures every test folder may use: the loopback test site and a publish recorder."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coordinator.contract.codec import decode_event
from coordinator.site import SiteConfig

SITE_TOML = Path(__file__).resolve().parent / "sites" / "loopback.toml"


@dataclass
class Recorder:
    """Stands in for MqttClient.publish: the service logic under test is pure."""

    sent: list[tuple[str, bytes, int, bool]] = field(default_factory=list)

    def __call__(self, topic, payload, qos=1, retain=False):
        self.sent.append((topic, payload, qos, retain))

    def on(self, prefix):
        return [(t, p) for t, p, _, _ in self.sent if t.startswith(prefix)]

    def events(self, event_type=None):
        found = [decode_event(p) for t, p in self.on("qubit/events/")]
        return [e for e in found if event_type is None or e.event_type == event_type]

    def clear(self):
        self.sent.clear()


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """Each test's own QUBIT_DATA_DIR: what processes keep (gateway records, the ledger) never
    lands in the checkout, nor carries over from one test to the next. Processes a test starts
    inherit it (tools.launcher copies the environment)."""
    path = tmp_path / "data"
    monkeypatch.setenv("QUBIT_DATA_DIR", str(path))
    return path


@pytest.fixture
def site():
    return SiteConfig.load(SITE_TOML)


@pytest.fixture
def recorder():
    return Recorder()
