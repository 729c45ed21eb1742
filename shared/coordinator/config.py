"""Engine settings, with the seed documents' defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CoordinatorConfig(BaseModel):
    """Tunables of the dispatch engine.

    Retries wait ``retry_base_delay_seconds * retry_backoff_factor ** (attempt - 1)``:
    1 s, 2 s, 4 s with the defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    site_id: str = "sit_default"
    dispatch_interval_seconds: float = Field(5.0, gt=0)
    command_timeout_seconds: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0)
    retry_backoff_factor: float = Field(2.0, ge=1.0)
    retry_base_delay_seconds: float = Field(1.0, ge=0)
    stale_state_seconds: float = Field(60.0, gt=0)
    lease_seconds: float = Field(300.0, gt=0)
    """How long a device holds a setpoint without hearing from the coordinator: OCPP profiles
    carry validTo = now + lease and are renewed at half of it; a Modbus watchdog times out after
    it unless its register map says otherwise. Then the device falls back to its asset's fallback_kw."""
