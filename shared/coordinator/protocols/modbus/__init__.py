"""Modbus TCP batteries: register maps, the device model, setpoint planning."""
