"""Protocol adapters: pure translation of commands into device payloads, and the routing
table of processes that leave translation to the gateways (see docs/adapters.md)."""

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
