"""The wire contract every process imports: topics (``topics``), message models
(``messages``), event payloads (``events``), the msgpack codec (``codec``), and the
generator of its machine-readable description in docs/contract/ (``schema``)."""
