"""The contract every protocol adapter fulfils: translate a Command into a device payload.

Adapters are pure: no sockets, no clocks. The gateways (services/) own the I/O and send
what ``translate`` returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..base import Command


class TranslationError(ValueError):
    """The command cannot be expressed for this device (unsupported type, value out of range...).

    Deterministic: retrying the same command would fail the same way.
    """


class ProtocolAdapter(ABC):
    """Translates commands for the assets of one gateway/device into protocol payloads."""

    protocol: str
    """Short protocol name, e.g. "ocpp" or "modbus"."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id

    @abstractmethod
    def translate(self, command: Command) -> dict[str, Any]:
        """Return the protocol payload for ``command`` or raise TranslationError."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.gateway_id!r})"
