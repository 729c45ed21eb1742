"""Device simulators that ship with the project: real OCPP and Modbus peers for tests, the demo and commissioning."""
