"""OCPP 1.6J and 2.0.1: calls and their payloads, answers and status notifications mapped back."""
