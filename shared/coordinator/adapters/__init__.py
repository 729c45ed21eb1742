"""Protocol adapters: pure translation of commands into device payloads, and the routing
table of processes that leave translation to the gateways (see docs/adapters.md).

The names are imported on first use (coordinator/lazy_imports.py): the planner's
``RoutingTable`` must not bring in the ocpp package, and ``coordinator.protocols.modbus``
imports ``adapters.base`` while this package would import it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.lazy_imports import lazy_exports

if TYPE_CHECKING:
    from coordinator.protocols.modbus.adapter import ModbusAdapter
    from coordinator.protocols.modbus.registers import (
        DEFAULT_REGISTER_MAP,
        RegisterMap,
        RegisterSpec,
        RegisterType,
        WordOrder,
        decode_registers,
        encode_value,
    )
    from coordinator.protocols.ocpp.adapter import OCPPAdapter
    from coordinator.protocols.ocpp.version import OCPPVersion

    from .base import ProtocolAdapter, TranslationError
    from .registry import AdapterRegistry
    from .routing import Route, RoutingTable

__all__ = [
    "DEFAULT_REGISTER_MAP",
    "AdapterRegistry",
    "ModbusAdapter",
    "OCPPAdapter",
    "OCPPVersion",
    "ProtocolAdapter",
    "RegisterMap",
    "RegisterSpec",
    "RegisterType",
    "Route",
    "RoutingTable",
    "TranslationError",
    "WordOrder",
    "decode_registers",
    "encode_value",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "coordinator.protocols.modbus.adapter": ("ModbusAdapter",),
    "coordinator.protocols.modbus.registers": ("DEFAULT_REGISTER_MAP", "RegisterMap", "RegisterSpec", "RegisterType",
                                               "WordOrder", "decode_registers", "encode_value"),
    "coordinator.protocols.ocpp.adapter": ("OCPPAdapter",),
    "coordinator.protocols.ocpp.version": ("OCPPVersion",),
    ".base": ("ProtocolAdapter", "TranslationError"),
    ".registry": ("AdapterRegistry",),
    ".routing": ("Route", "RoutingTable"),
})
