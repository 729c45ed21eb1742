"""The Modbus gateway: battery systems over Modbus TCP.

``setpoints`` (pure: command -> register writes, clamping, read-back checks) ->
``link`` (one device: async client, queue, verify, poll) -> ``gateway`` (the process).
"""
