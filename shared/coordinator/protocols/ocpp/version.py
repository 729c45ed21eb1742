"""The OCPP versions we speak, and the websocket subprotocol that names each one."""

from __future__ import annotations

from enum import StrEnum


class OCPPVersion(StrEnum):
    V16 = "1.6"
    V201 = "2.0.1"

    @property
    def subprotocol(self) -> str:
        """The websocket subprotocol a charger offers for this version (OCPP-J: "ocpp" + version)."""
        return f"ocpp{self.value}"

    @classmethod
    def of_subprotocol(cls, subprotocol: str | None) -> OCPPVersion | None:
        """The version a negotiated subprotocol names; None for anything else (or none at all)."""
        return next((v for v in cls if v.subprotocol == subprotocol), None)


SUBPROTOCOLS = tuple(v.subprotocol for v in OCPPVersion)
"""Every subprotocol a central system of ours accepts, newest last."""
