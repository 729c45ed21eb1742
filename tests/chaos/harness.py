"""One chaos run, end to end, with real parts: a private Mosquitto (restartable on its port
and persistence directory), every service as an OS process, the device simulators, a
persistent subscriber, a schedule with a unique value per (asset, slot), faults at seeded
moments, and the verdict (verdict.py) from device-side evidence once the schedule is over.

    run = ChaosRun(ChaosConfig(seed=1), workdir)
    verdict = run.run()

The run's files stay in ``workdir``: logs/ (one per process), events.jsonl (the subscriber),
results.jsonl, device logs, site.toml, broker/ and data/ (QUBIT_DATA_DIR of every process).
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.codec import encode_schedule
from coordinator.contract.topics import EVENTS_ALL, RESULTS_ALL, SCHEDULES_IN
from tests.chaos import evidence
from tests.chaos.faults import Fault, FaultInjector, FaultKind, plan_faults
from tests.chaos.plan import (
    SITE_ID,
    Expected,
    SiteSpec,
    asset_map,
    expected_commands,
    first_slot_start,
    schedule_frame,
    site_toml,
)
from tests.chaos.recorder import PersistentRecorder, event_lines, read_lines, result_lines
from tests.chaos.status_query import command_statuses, schedule_summary
from tests.chaos.verdict import TERMINAL_EVENTS, Verdict, judge, statuses_by_key
from tools.broker import LocalMosquitto, free_port, wait_for_port
from tools.launcher import REPO, ServiceProcesses

log = logging.getLogger(__name__)


@dataclass
class ChaosConfig:
    seed: int = 1
    spec: SiteSpec = field(default_factory=SiteSpec)
    slots: int = 18
    slot_seconds: float = 1.5
    faults: tuple[FaultKind, ...] = (FaultKind.KILL_PLANNER, FaultKind.KILL_GATEWAY)
    fault_window: tuple[float, float] = (0.2, 0.7)
    """When faults fall, as fractions of the schedule's length: mid-schedule."""
    settle_seconds: float = 25.0
    """After the last slot: time for retries and timeouts to end every command."""
    lead_seconds: float = 3.0
    """From publishing to the first slot."""


@functools.cache
def loopback_has_device_log() -> bool:
    """Does this branch's loopback gateway write device evidence (``--device-log``)?"""
    out = subprocess.run([sys.executable, "-m", "services.loopback_gateway", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    return "--device-log" in out.stdout


class ChaosRun:
    def __init__(self, config: ChaosConfig, workdir: Path) -> None:
        self.config, self.workdir = config, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        spec = config.spec
        if spec.ocpp_chargers and not spec.ocpp_port:
            spec = replace(spec, ocpp_port=free_port())
        if spec.modbus_batteries and not spec.modbus_ports:
            ports = tuple(free_port() for _ in range(spec.modbus_batteries))
            spec = replace(spec, modbus_ports=ports)
        self.spec = spec
        self.assets = spec.assets()
        self.site_path = workdir / "site.toml"
        self.site_path.write_text(site_toml(spec))
        self.events_path, self.results_path = workdir / "events.jsonl", workdir / "results.jsonl"
        self.device_logs = {"gateway-loopback": workdir / "device-loopback.jsonl",
                            "chargepoint-simulator": workdir / "applied-ocpp.jsonl",
                            "battery-simulator": workdir / "applied-modbus.jsonl"}
        self.schedule_id = f"sch_chaos_{config.seed}"
        self.injected: list[tuple[float, Fault]] = []
        self.status_summary = ""

    # -- the stack -------------------------------------------------------------------

    def _service_args(self) -> dict[str, tuple[str, ...]]:
        args: dict[str, tuple[str, ...]] = {}
        if loopback_has_device_log():
            args["gateway-loopback"] = ("--device-log", str(self.device_logs["gateway-loopback"]))
        args["chargepoint-simulator"] = ("--applied-log", str(self.device_logs["chargepoint-simulator"]),
                                         "--no-validation", "--meter-interval", "30")
        args["battery-simulator"] = ("--applied-log", str(self.device_logs["battery-simulator"]))
        return args

    def _start_stack(self, broker: LocalMosquitto) -> tuple[ServiceProcesses, dict[str, tuple[str, ...]]]:
        stack = ServiceProcesses(broker.host, broker.port, self.site_path, self.workdir / "logs")
        stack.env["QUBIT_DATA_DIR"] = str(self.workdir / "data")
        args = self._service_args()
        gateways = self.spec.gateways()
        names = ["ingester", "planner", "tracker"]
        if "loopback" in gateways:
            names.append("gateway-loopback")
        if "modbus" in gateways:
            stack.start("battery-simulator", *args["battery-simulator"])
            for port in self.spec.modbus_ports:
                if not wait_for_port("127.0.0.1", port, 15):
                    raise RuntimeError(f"battery simulator not listening on {port}")
            names.append("gateway-modbus")
        if "ocpp" in gateways:
            names.append("gateway-ocpp")
        stack.start_all(tuple(names), args, timeout=40)
        if "ocpp" in gateways:
            stack.start("chargepoint-simulator", *args["chargepoint-simulator"])
        return stack, args

    def _wait_for_links(self, timeout: float = 30.0) -> None:
        """Until every OCPP and Modbus device's link is up (DEVICE_LINK_UP), so faults hit a running site."""
        devices = {a.asset_id for a in self.assets if a.gateway_id in ("ocpp", "modbus")}
        deadline = time.monotonic() + timeout
        while devices and time.monotonic() < deadline:
            devices -= {e.get("topic", "").rsplit("/", 1)[-1] for e in read_lines(self.events_path)
                        if e.get("event_type") == "DEVICE_LINK_UP"}
            time.sleep(0.2)
        if devices:
            log.warning("links not up within %g s: %s", timeout, sorted(devices))

    # -- the run -----------------------------------------------------------------------

    def run(self) -> Verdict:
        cfg = self.config
        broker = LocalMosquitto(self.workdir / "broker").start()
        # The recorders read what no single role reads together (events and results): the
        # test-only harness identity.
        events = PersistentRecorder(broker.host, broker.port, EVENTS_ALL, f"chaos-events-{cfg.seed}",
                                    self.events_path, event_lines, broker.login()).start()
        results = PersistentRecorder(broker.host, broker.port, RESULTS_ALL, f"chaos-results-{cfg.seed}",
                                     self.results_path, result_lines, broker.login()).start()
        stack: ServiceProcesses | None = None
        try:
            stack, args = self._start_stack(broker)
            self._wait_for_links()
            frame = schedule_frame(self.assets, cfg.slots, cfg.slot_seconds,
                                   first_slot_start(datetime.now(UTC), cfg.lead_seconds))
            expected = expected_commands(frame, self.assets)
            first_slot = frame.index[0].timestamp()
            self._publish(broker, SCHEDULES_IN, encode_schedule(
                frame, asset_map=asset_map(self.assets), site_id=SITE_ID, schedule_id=self.schedule_id))

            length = cfg.slots * cfg.slot_seconds
            plan = plan_faults(cfg.seed, cfg.faults, (cfg.fault_window[0] * length, cfg.fault_window[1] * length),
                               silent_assets=[a.asset_id for a in self.assets if a.gateway_id == "loopback"],
                               chargers=[f"CP{a.index:03d}" for a in self.assets if a.gateway_id == "ocpp"])
            t0 = time.monotonic() + (first_slot - time.time())
            end = t0 + length + cfg.settle_seconds
            injector = FaultInjector(stack, broker, args, lambda t, p: self._publish(broker, t, p))
            injector.run(plan, t0, until=t0 + length)
            self.injected = injector.done
            self._wait_until_settled(len(expected), end)
            return self._verdict(broker, expected)
        finally:
            if stack is not None:
                stack.stop_all()
            events.stop()
            results.stop()
            broker.stop()

    def _publish(self, broker: LocalMosquitto, topic: str, payload: bytes) -> None:
        # faults forge what no role may publish (and the schedule): the harness identity
        client = broker.login().apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()

    def _wait_until_settled(self, commands: int, deadline: float) -> None:
        """Until the subscriber has seen a terminal event for as many commands as expected, or the deadline."""
        while time.monotonic() < deadline:
            ended = {e["command_id"] for e in read_lines(self.events_path)
                     if e.get("event_type") in TERMINAL_EVENTS and e.get("schedule_id") == self.schedule_id}
            if len(ended) >= commands:
                return
            time.sleep(0.5)

    def _verdict(self, broker: LocalMosquitto, expected: list[Expected]) -> Verdict:
        events = [e for e in read_lines(self.events_path) if e.get("schedule_id") in (None, self.schedule_id)]
        ended = {e["command_id"] for e in events if e.get("event_type") in TERMINAL_EVENTS}
        open_ids = sorted({e["command_id"] for e in events if e.get("command_id")} - ended)
        operator = broker.login("operator")  # asks as `qubit status` does on a site
        by_command = command_statuses(broker.host, broker.port, open_ids, login=operator) if open_ids else {}
        self.status_summary = schedule_summary(broker.host, broker.port, self.schedule_id, login=operator)
        applications: list[evidence.Application] = []
        source = "device log"
        for name, path in self.device_logs.items():
            if name == "gateway-loopback" and not loopback_has_device_log():
                applications += evidence.from_results(read_lines(self.results_path), events)
                source = "gateway results (this branch's loopback gateway has no --device-log)"
            else:
                applications += evidence.from_device_lines(read_lines(path))
        return judge(expected, applications, events, statuses_by_key(events, by_command),
                     faults=len(self.injected), evidence=source)


def run_once(config: ChaosConfig, workdir: Path) -> tuple[Verdict, ChaosRun]:
    chaos = ChaosRun(config, workdir)
    return chaos.run(), chaos


def describe(verdict: Verdict, run: ChaosRun) -> str:
    """A readable account of one run: counts, faults, examples, where the files are."""
    lines = [f"seed {run.config.seed}: {'OK' if verdict.ok else 'FAILED ' + str(verdict.failures)}",
             f"  evidence: {verdict.evidence}; qubit status {run.schedule_id}: {run.status_summary}",
             "  counts: " + ", ".join(f"{k}={v}" for k, v in verdict.as_dict().items()
                                      if isinstance(v, int))]
    lines += [f"  fault at {at:5.1f} s: {f.kind.value} ({f.down_for:g} s) {' '.join(f.targets)}"
              for at, f in run.injected]
    lines += [f"  {count}: {'; '.join(items)}" for count, items in verdict.examples.items()]
    lines.append(f"  files: {run.workdir}")
    return "\n".join(lines)

