import pytest

from coordinator.adapters import AdapterRegistry, ModbusAdapter, OCPPAdapter


def test_register_and_get():
    registry = AdapterRegistry()
    charger = OCPPAdapter("ocpp_site_1")
    registry.register("ast_ev_001", charger)
    assert registry.get("ast_ev_001") is charger
    assert registry.get("ast_unknown") is None
    assert "ast_ev_001" in registry and "ast_unknown" not in registry
    assert len(registry) == 1


def test_registering_the_same_adapter_again_is_a_no_op():
    registry, charger = AdapterRegistry(), OCPPAdapter("ocpp_site_1")
    registry.register("ast_ev_001", charger)
    registry.register("ast_ev_001", charger)
    assert registry.get("ast_ev_001") is charger and len(registry) == 1


def test_a_different_adapter_for_a_registered_asset_needs_replace():
    registry, first, second = AdapterRegistry(), OCPPAdapter("ocpp_site_1"), OCPPAdapter("ocpp_site_1", "2.0.1")
    registry.register("ast_ev_001", first)
    with pytest.raises(ValueError, match=r"ast_ev_001 already has adapter OCPPAdapter.*replace=True"):
        registry.register("ast_ev_001", second)
    assert registry.get("ast_ev_001") is first
    registry.register("ast_ev_001", second, replace=True)
    assert registry.get("ast_ev_001") is second


def test_unregister():
    registry, battery = AdapterRegistry(), ModbusAdapter("modbus_site_1")
    registry.register("ast_batt_001", battery)
    assert registry.unregister("ast_batt_001") is battery
    assert registry.unregister("ast_batt_001") is None
    assert "ast_batt_001" not in registry and registry.get("ast_batt_001") is None


def test_assets_for_an_adapter_or_a_gateway():
    registry = AdapterRegistry()
    shared, bay_2 = OCPPAdapter("ocpp_site_1"), OCPPAdapter("ocpp_site_1", connector_id=2)
    battery = ModbusAdapter("modbus_site_1")
    registry.register("ast_ev_b", shared)
    registry.register("ast_ev_a", shared)
    registry.register("ast_ev_c", bay_2)
    registry.register("ast_batt_001", battery)
    assert registry.assets_for(shared) == ["ast_ev_a", "ast_ev_b"]
    assert registry.assets_for("ocpp_site_1") == ["ast_ev_a", "ast_ev_b", "ast_ev_c"]
    assert registry.assets_for(battery) == registry.assets_for("modbus_site_1") == ["ast_batt_001"]
    assert registry.assets_for("nowhere") == []


@pytest.mark.parametrize("asset_id", ["", None, 42])
def test_bad_asset_id(asset_id):
    with pytest.raises(ValueError, match="asset_id must be a non-empty string"):
        AdapterRegistry().register(asset_id, OCPPAdapter("g"))


def test_only_protocol_adapters():
    with pytest.raises(TypeError, match="must be a ProtocolAdapter"):
        AdapterRegistry().register("ast_1", object())  # type: ignore[arg-type]


def test_routing_table_from_the_site_config():
    from coordinator.adapters import Route, RoutingTable
    from coordinator.site import SiteConfig

    site = SiteConfig.model_validate({
        "site_id": "sit_x",
        "gateways": [{"gateway_id": "ocpp", "protocol": "ocpp"}, {"gateway_id": "loop", "protocol": "loopback"}],
        "assets": [{"asset_id": "ast_bay_1", "kind": "ev_charger", "gateway_id": "ocpp", "max_power_kw": 22},
                   {"asset_id": "ast_bay_2", "kind": "ev_charger", "gateway_id": "loop", "max_power_kw": 22}],
    })
    routes = RoutingTable.from_site(site)
    assert routes["ast_bay_1"] == Route("ocpp", "ocpp") and routes.get("ast_bay_2") == Route("loop", "loopback")
    assert routes.get("ast_unknown") is None and "ast_unknown" not in routes
    assert routes.assets_for("ocpp") == ["ast_bay_1"] and len(routes) == 2


def test_routing_table_takes_only_routes():
    from coordinator.adapters import Route, RoutingTable

    with pytest.raises(TypeError, match="ast_a: expected a Route"):
        RoutingTable({"ast_a": ("ocpp", "ocpp")})  # type: ignore[dict-item]  # a tuple on purpose: refused at run time
    with pytest.raises(ValueError, match="non-empty string"):
        RoutingTable({"": Route("ocpp", "ocpp")})
