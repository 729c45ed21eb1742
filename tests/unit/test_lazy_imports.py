"""The library's public names resolve on first use, and a process imports only what it uses."""

from __future__ import annotations

import subprocess
import sys

import pytest

import coordinator
import coordinator.adapters


def test_every_public_name_resolves() -> None:
    for package in (coordinator, coordinator.adapters):
        for name in package.__all__:
            assert getattr(package, name) is not None, name
        assert set(package.__all__) <= set(dir(package))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        coordinator.Nothing  # noqa: B018


def test_the_seed_documents_imports() -> None:
    from coordinator import DispatchEngine, EventBus, OCPPAdapter
    from coordinator.dispatch import DispatchEngine as Engine
    from coordinator.events import EventBus as Bus
    from coordinator.protocols.ocpp.adapter import OCPPAdapter as Adapter

    assert (DispatchEngine, EventBus, OCPPAdapter) == (Engine, Bus, Adapter)


HEAVY = ("pandas", "numpy", "pyarrow", "ocpp")


@pytest.mark.parametrize("module", ["services.ingester", "services.planner", "services.tracker",
                                    "services.loopback_gateway", "services.json_mirror",
                                    "services.modbus_gateway.gateway"])
def test_a_process_imports_pandas_and_ocpp_only_when_it_uses_them(module: str) -> None:
    # A fresh interpreter: this test process has imported everything already.
    probe = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_a_schedule_still_converts_once_pandas_is_needed() -> None:
    probe = ("import sys; from coordinator.schedule import classify_columns, validate_index\n"
             "assert 'pandas' not in sys.modules\n"
             "import pandas as pd\n"
             "validate_index(pd.date_range('2025-01-15', periods=2, freq='15min', tz='UTC'))\n"
             "print(classify_columns(['ev_1_kw']).ev)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{'ev_1': 'ev_1_kw'}"


def test_a_service_process_keeps_pyarrow_out_of_pandas() -> None:
    probe = ("import sys; from coordinator.runtime.service import without_pyarrow; without_pyarrow()\n"
             "import pandas as pd\n"
             "frame = pd.DataFrame({'ev_1_kw': [1.0]})\n"
             "print(sys.modules.get('pyarrow'), float(frame['ev_1_kw'].sum()))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "1.0"]


def test_warm_imports_load_a_module_ahead_and_survive_a_missing_one() -> None:
    probe = ("import sys; from coordinator.runtime.service import warm\n"
             "assert 'pandas' not in sys.modules\n"
             "warm(('no_such_module_here', 'pandas'))\n"
             "print('pandas' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "True"
    assert "warm import of no_such_module_here failed" in run.stderr
