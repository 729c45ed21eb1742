"""The OCPP gateway: the central system (CSMS) the site's chargers connect to.

Only the I/O lives here; every OCPP translation (calls, answers, statuses, meter values)
is in ``coordinator.protocols.ocpp``. ``central`` (websocket server, one handler per
connected charge point) -> ``gateway`` (the process).
"""
