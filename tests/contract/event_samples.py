"""One realistic payload of every event type: the library's contract samples (the examples of
docs/contract/examples/ are generated from the same ones)."""

from coordinator.contract.samples import AT, IST, SAMPLES

__all__ = ["AT", "IST", "SAMPLES"]
