# Two commands do all set-up: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo credentials screenshots lint test compose-check contract bench bench-conversion bench-modbus bench-ocpp bench-estop bench-first-slot bench-plan bench-pipeline bench-fallback chaos clean bench-processes bench-site fleet bench-fleet

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python venv support is missing; installing python3-venv (Debian/Ubuntu)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

demo: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python -m tools.demo

# A site's broker identities, passwords, ACL and certificates (docs/security.md); never
# overwrites a password. make credentials SITE=deploy/site.toml OUT=deploy/secrets [HOSTNAMES="broker.site 10.0.0.5"]
SITE ?= deploy/site.toml
OUT  ?= deploy/secrets
HOSTNAMES ?=
credentials: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python -m tools.credentials --site-config $(SITE) --out $(OUT) $(foreach h,$(HOSTNAMES),--hostname $(h))

# Configured in pyproject.toml: ruff (lint, no formatter) and mypy (strict for the library).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Two workers (pytest-xdist, work stealing): most tests wait on real processes, brokers and
# devices rather than on the CPU, so two cut the time in half on a 2-core machine (13 -> 8 min).
test: lint
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python -m pytest -n 2 --dist worksteal

# Only the deployment's checks (tests/deploy/): the compose stack run for real on a Docker engine
# (.ci/run starts one; docs/deploy.md), the systemd units, the health script. Fails without an engine.
compose-check: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	QUBIT_REQUIRE_DOCKER=1 $(BIN)/python -m pytest tests/deploy -q

# docs/images/: the site page's screenshots, taken by its browser test in a real headless Chromium
screenshots: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	QUBIT_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/e2e/test_site_page.py

# docs/contract/: the JSON Schemas and the AsyncAPI document, generated from the models
contract: $(STAMP)
	$(BIN)/python -m coordinator.contract.schema docs/contract

# Every benchmark in turn (bench/report.py), then docs/benchmarks.md: each figure beside its floor.
# TARGETS="bench-modbus bench-ocpp" make bench runs some only and keeps the other rows.
TARGETS ?=
bench: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/report.py $(TARGETS)

# The library: schedule_to_commands on 1,000 x 96, beside msgpack-decoding the same schedule
bench-conversion: $(STAMP)
	$(BIN)/python bench/schedule_conversion.py

bench-modbus: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/modbus_gateway.py

bench-ocpp: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/ocpp_gateway.py --version 1.6
	$(BIN)/python bench/ocpp_gateway.py --version 2.0.1

bench-estop: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/emergency_stop.py

# The long form of the fault-injection suite (tests/chaos/): several seeds, every fault type,
# OCPP and Modbus simulators too; prints the counts per seed, fails if any must-be-0 count is not.
SEEDS ?= 1,2,3,4,5
chaos: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python -m tests.chaos.run --seeds $(SEEDS)

# 5,000 loopback chargers x 96 slots: time until the whole first slot is COMPLETED, beside a floor
bench-first-slot: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/first_slot.py

# 5,000 assets x 96 slots through the real services: publication to SCHEDULE_PLANNED, and the
# planner's and tracker's peak RSS, each beside its floor
bench-plan: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/plan_scale.py

# Sustained throughput, schedule in -> COMMAND_COMPLETED out through every service, beside raw
# paho QoS 1 messages per second between two processes
bench-pipeline: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/pipeline.py

# A 5,000-asset site on real protocols: 5 OCPP gateways x 980 chargers, 2 Modbus gateways x 50
# batteries, a 96-slot schedule; the first slot verified, beside raw protocol round trips (docs/scale-site.md)
bench-site: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/site_scale.py

# Every process (ingester, planner, tracker, each gateway kind, JSON mirror, site page) at 1,000 and
# 5,000 assets: exec -> online, and peak RSS after a small schedule, beside a paho + msgpack floor
bench-processes: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/processes.py

# Leases: kill -9 the whole coordinator and the broker; time until every simulated device
# (OCPP chargers, Modbus batteries) is at its safe value, beside the configured lease
bench-fallback: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/fallback.py

# A fleet on this machine (docs/fleet.md): site stacks bridged to one central broker; central SCADA,
# isolation of the bridges, an operator command to one site, a cut and the catch-up; PASS or FAIL
FLEET_SITES ?= 10
fleet: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python -m tools.fleet --sites $(FLEET_SITES)

# The fleet's catch-up after a cut beside the same events crossing a healthy bridge, and the
# central broker's event throughput through the bridges
bench-fleet: $(STAMP)
	@mosquitto/ensure-mosquitto.sh
	$(BIN)/python bench/fleet.py --sites $(FLEET_SITES)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
