"""OCPP 1.6 / 2.0.1, both directions, without I/O (one module per concern, like the ``ocpp`` package):

``version`` (the versions and their websocket subprotocols) -> ``calls`` (the calls we send, from
the package's dataclasses) -> ``payload`` (their JSON) -> ``adapter`` (commands -> calls:
``OCPPAdapter``); back: ``answers`` (a call's answer -> the command's outcome), ``status``
(StatusNotification / TransactionEvent -> charger state), ``meter`` (meter values -> power).
``internals`` holds the only private members of the package we use (for the gateway's speed).
"""

from .adapter import OCPPAdapter
from .version import OCPPVersion

__all__ = ["OCPPAdapter", "OCPPVersion"]
