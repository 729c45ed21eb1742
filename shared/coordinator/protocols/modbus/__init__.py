"""Modbus TCP batteries, without I/O: ``registers`` (register specs and maps, value encoding)
-> ``adapter`` (a command -> one register write: ``ModbusAdapter``) and ``setpoints`` (what the
gateway writes for a command: clamped, opposite direction zeroed, how to verify it);
``device`` (a battery's status registers and site config, read and written both ways).
"""
