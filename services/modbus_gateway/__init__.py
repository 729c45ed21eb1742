"""The Modbus gateway: battery systems over Modbus TCP.

Only the I/O lives here; the registers, the device model and the setpoint planning are in
``coordinator.protocols.modbus``. ``link`` (one device: async client, queue, verify, poll)
-> ``gateway`` (the process).
"""
