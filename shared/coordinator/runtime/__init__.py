"""The process shell every service shares: MQTT, settings, supervision, metrics, logs, signals."""
