"""The wire contract every process imports: topics, message models, the msgpack codec."""
