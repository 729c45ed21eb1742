"""Which protocol adapter speaks for which asset."""

from __future__ import annotations

from .base import ProtocolAdapter


class AdapterRegistry:
    """Maps asset ids to the adapter that translates their commands.

    Several assets may share one adapter (or one gateway). An asset has exactly one adapter:
    registering a different one for it raises ValueError unless ``replace=True``, so two
    configuration sources cannot silently fight over an asset.
    """

    def __init__(self) -> None:
        self._adapters: dict[str, ProtocolAdapter] = {}

    def register(self, asset_id: str, adapter: ProtocolAdapter, *, replace: bool = False) -> None:
        """Route ``asset_id``'s commands to ``adapter``. Registering the same adapter again is a no-op."""
        if not isinstance(asset_id, str) or not asset_id:
            raise ValueError(f"asset_id must be a non-empty string, got {asset_id!r}")
        if not isinstance(adapter, ProtocolAdapter):
            raise TypeError(f"adapter must be a ProtocolAdapter, got {type(adapter).__name__}")
        current = self._adapters.get(asset_id)
        if current is not None and current is not adapter and not replace:
            raise ValueError(
                f"{asset_id} already has adapter {current!r}; pass replace=True to swap it for {adapter!r}"
            )
        self._adapters[asset_id] = adapter

    def unregister(self, asset_id: str) -> ProtocolAdapter | None:
        """Forget ``asset_id``; return the adapter it had, or None if it had none."""
        return self._adapters.pop(asset_id, None)

    def get(self, asset_id: str) -> ProtocolAdapter | None:
        """The adapter of ``asset_id``, or None when the asset is unknown."""
        return self._adapters.get(asset_id)

    def assets_for(self, adapter_or_gateway_id: ProtocolAdapter | str) -> list[str]:
        """Sorted ids of the assets served by this adapter instance, or by any adapter of this gateway id."""
        items = list(self._adapters.items())
        if isinstance(adapter_or_gateway_id, ProtocolAdapter):
            return sorted(asset for asset, adapter in items if adapter is adapter_or_gateway_id)
        return sorted(asset for asset, adapter in items if adapter.gateway_id == adapter_or_gateway_id)

    def __contains__(self, asset_id: object) -> bool:
        return asset_id in self._adapters

    def __len__(self) -> int:
        return len(self._adapters)

    def __repr__(self) -> str:
        return f"AdapterRegistry({len(self)} assets)"
